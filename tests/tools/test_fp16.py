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


# --- kept modules compute in float32 (issue 23): checked against the float file and its own graph ----------------

_LAYER0 = "encoder.layer.0"


def _bert_feeds() -> dict[str, np.ndarray]:
    ids = np.random.default_rng(0).integers(0, 100, (2, 7))
    return {"input_ids": ids, "attention_mask": np.ones((2, 7), np.int64), "token_type_ids": np.zeros((2, 7), np.int64)}


def _run(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, _bert_feeds())[0])


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _crossing_float_tensors(proto: onnx.ModelProto, kept_root: str) -> set[str]:
    """Float tensors one region produces and the other reads, in the file before conversion. The graph's float
    outputs are read by the float32 side (the files are converted with ``keep_io_types``); its inputs are integers."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    made = {t: _within(module_of(n) or "", [kept_root]) for n in proto.graph.node for t in n.output}
    crossing = set()
    for node in proto.graph.node:
        kept = _within(module_of(node) or "", [kept_root])
        crossing |= {t for t in node.input if t in made and made[t] != kept}
    crossing |= {o.name for o in proto.graph.output if not made[o.name]}
    assert all(i.type.tensor_type.elem_type != onnx.TensorProto.FLOAT for i in proto.graph.input)
    return {t for t in crossing if types.get(t) == onnx.TensorProto.FLOAT}


@pytest.fixture(scope="module")
def bert_fp16(task_exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny BERT's file converted with nothing, layer 0, and everything kept (float32 inputs and outputs)."""
    from optimum_hierarchy.tools.fp16 import convert_fp16

    out = tmp_path_factory.mktemp("fp16_kept")
    source = task_exports["bert"] / "model.onnx"
    files = {"float": source}
    for name, keep in (("nothing", []), ("layer0", [_LAYER0]), ("everything", ["**"])):
        convert_fp16(source, out / f"{name}.onnx", keep_fp32_modules=keep, keep_io_types=True)
        files[name] = out / f"{name}.onnx"
    return files


def test_keeping_every_module_gives_the_float_model_bit_for_bit(bert_fp16: dict[str, Path], tmp_path: Path) -> None:
    from optimum_hierarchy.tools.fp16 import convert_fp16

    reference = _run(bert_fp16["float"])
    assert np.array_equal(_run(bert_fp16["everything"]), reference)
    # With float16 outputs: the float output, rounded once.
    convert_fp16(bert_fp16["float"], tmp_path / "root.onnx", keep_fp32_modules=["**"])
    half = _run(tmp_path / "root.onnx")
    assert half.dtype == np.float16 and np.array_equal(half, reference.astype(np.float16))


def test_a_kept_layer_has_no_float16_inside_and_one_cast_per_crossing_tensor(bert_fp16: dict[str, Path]) -> None:
    source = onnx.load(str(bert_fp16["float"]))
    crossing = _crossing_float_tensors(source, _LAYER0)
    assert crossing
    converted = onnx.load(str(bert_fp16["layer0"]))
    inferred = onnx.shape_inference.infer_shapes(converted)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    inside = [n for n in converted.graph.node if _within(module_of(n) or "", [_LAYER0])]
    assert len(inside) >= sum(_within(module_of(n) or "", [_LAYER0]) for n in source.graph.node)
    made = {t for n in inside for t in n.output}
    internal = made & {t for n in inside for t in n.input}
    assert internal and all(t in types for t in internal)
    assert [t for t in internal if types[t] == onnx.TensorProto.FLOAT16] == []
    assert sum(types[t] == onnx.TensorProto.FLOAT for t in internal) > 10
    casts = sum(n.op_type == "Cast" for n in converted.graph.node) - sum(n.op_type == "Cast" for n in source.graph.node)
    assert casts == len(crossing)


def test_the_error_decreases_as_more_is_kept(bert_fp16: dict[str, Path]) -> None:
    reference = _run(bert_fp16["float"])
    errors = [_rel_l2(_run(bert_fp16[name]), reference) for name in ("nothing", "layer0", "everything")]
    assert errors[0] > 0 and errors[0] >= errors[1] >= errors[2] == 0.0, errors


@pytest.mark.parametrize("keep_io_types", [False, True])
def test_kept_layer_file_passes_the_checker_and_keeps_every_module(
    task_exports: dict[str, Path], tmp_path: Path, keep_io_types: bool
) -> None:
    from optimum_hierarchy.tools.fp16 import convert_fp16

    source = task_exports["bert"] / "model.onnx"
    output = tmp_path / "fp16.onnx"
    convert_fp16(source, output, keep_fp32_modules=[_LAYER0, "encoder.layer.1.output"], keep_io_types=keep_io_types)
    converted = onnx.load(str(output))
    onnx.checker.check_model(converted, full_check=True)
    before = {n.name: module_of(n) for n in onnx.load(str(source), load_external_data=False).graph.node}
    after = {n.name: module_of(n) for n in converted.graph.node}
    assert before and all(after[name] == module for name, module in before.items())
    added = [n for n in converted.graph.node if n.name not in before]
    assert added and all(n.op_type == "Cast" for n in added)
    for node in added:  # attributed, or unattributed with the reason
        assert module_of(node) is not None or any(p.key.endswith(".reason") for p in node.metadata_props)
    want = onnx.TensorProto.FLOAT if keep_io_types else onnx.TensorProto.FLOAT16
    assert converted.graph.output[0].type.tensor_type.elem_type == want
    assert _run(output).dtype == (np.float32 if keep_io_types else np.float16)
