"""`optimum-cli hierarchy convert --fp16 --keep-fp32-modules`: on `hierarchy export` files (both stacks).

Which weights belong to which module is decided here by value: each float initializer of the input file
is matched to the PyTorch parameter it holds (as is, or transposed), independently of the package.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from dynamo_support import module_of
from onnx import numpy_helper
from support import run_cli
from task_cases import load_task_model

pytestmark = pytest.mark.cli

KEEP = {"llama": ["lm_head", "model.norm"], "bert": ["embeddings", "encoder.layer.1.output"]}


def _owners(model: object, proto: onnx.ModelProto) -> dict[str, str]:
    """Initializer name -> the module path of the PyTorch parameter it holds (matched by value)."""
    params = [(name.rpartition(".")[0], p.detach().numpy()) for name, p in model.named_parameters()]  # type: ignore[attr-defined]
    owners = {}
    for init in proto.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        value = numpy_helper.to_array(init)
        for module, param in params:
            if param.size > 1 and (
                (value.shape == param.shape and np.array_equal(value, param))
                or (value.shape == param.T.shape and np.array_equal(value, param.T))
            ):
                owners[init.name] = module
                break
    return owners


def _within(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r + ".") for r in roots)


@pytest.mark.parametrize("case", sorted(KEEP))
def test_kept_modules_keep_float32_weights_and_the_rest_is_float16(
    task_exports: dict[str, Path], task_model_dirs: dict[str, Path], tmp_path: Path, case: str
) -> None:
    source = task_exports[case] / "model.onnx"
    output = tmp_path / "fp16.onnx"
    report = json.loads(
        run_cli(
            "hierarchy", "convert", str(source), "-o", str(output), "--fp16", "--keep-fp32-modules", *KEEP[case],
            "--json",
        ).stdout
    )  # fmt: skip
    owners = _owners(load_task_model(case, task_model_dirs[case]), onnx.load(str(source)))
    kept = {name for name, module in owners.items() if _within(module, KEEP[case])}
    assert kept and len(kept) < len(owners)
    converted = {t.name: t.data_type for t in onnx.load(str(output)).graph.initializer}
    for name, module in owners.items():
        want = onnx.TensorProto.FLOAT if name in kept else onnx.TensorProto.FLOAT16
        assert converted[name] == want, (name, module)
    assert report["initializers"]["float32"] >= len(kept)
    # The hierarchy is kept: every node attributed, but for Casts the converter added between a kept module
    # and the root, which stay unattributed with the reason (nothing else witnesses where they belong).
    out = onnx.load(str(output), load_external_data=False)
    before = {n.name for n in onnx.load(str(source), load_external_data=False).graph.node}
    for node in out.graph.node:
        if module_of(node) is None:
            assert node.op_type == "Cast" and node.name not in before, node.name
            assert any(p.key.endswith(".reason") for p in node.metadata_props)
    kept_ops = {module_of(n) for n in out.graph.node if n.name in before and module_of(n) is not None}
    assert any(_within(m, KEEP[case]) for m in kept_ops)
    # It runs on CPU.
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    feeds = {}
    for value in session.get_inputs():
        if value.name == "position_ids":
            feeds[value.name] = np.tile(np.arange(7), (2, 1))
        elif value.name in {"attention_mask"}:
            feeds[value.name] = np.ones((2, 7), dtype=np.int64)
        elif value.name == "token_type_ids":
            feeds[value.name] = np.zeros((2, 7), dtype=np.int64)
        else:
            feeds[value.name] = np.random.default_rng(0).integers(0, 100, (2, 7))
    assert np.isfinite(session.run(None, feeds)[0].astype(np.float32)).all()


def test_convert_needs_a_mode_and_a_matching_glob(task_exports: dict[str, Path], tmp_path: Path) -> None:
    source = str(task_exports["bert"] / "model.onnx")
    output = tmp_path / "o.onnx"
    no_mode = run_cli("hierarchy", "convert", source, "-o", str(output), check=False)
    assert no_mode.returncode == 1 and "--fp16" in no_mode.stderr
    bad = run_cli(
        "hierarchy", "convert", source, "-o", str(output), "--fp16", "--keep-fp32-modules", "pooler.x", check=False
    )
    assert bad.returncode == 1 and "Closest module paths" in bad.stderr.replace("\n", " ")
    assert not output.exists()


def test_kept_modules_give_a_sorted_graph_that_passes_the_checker(
    task_exports: dict[str, Path], tmp_path: Path
) -> None:
    """ONNX Runtime's converter appends the Casts around kept nodes after their readers; the file written is sorted."""
    from optimum_hierarchy.tools.fp16 import convert_fp16

    source = task_exports["bert"] / "model.onnx"
    output = tmp_path / "fp16.onnx"
    convert_fp16(source, output, keep_fp32_modules=["embeddings"])
    converted = onnx.load(str(output))
    onnx.checker.check_model(converted, full_check=True)
    available = {v.name for v in (*converted.graph.input, *converted.graph.initializer)}
    for node in converted.graph.node:
        assert all(not t or t in available for t in node.input), node.name
        available.update(node.output)

    def hierarchy(node: onnx.NodeProto) -> dict[str, str]:
        return {p.key: p.value for p in node.metadata_props if p.key.startswith("pkg.optimum_hierarchy.")}

    before = {n.name: hierarchy(n) for n in onnx.load(str(source), load_external_data=False).graph.node}
    after = {n.name: hierarchy(n) for n in converted.graph.node}
    assert before and all(after[name] == props for name, props in before.items())
