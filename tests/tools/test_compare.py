"""Comparing with PyTorch by module: plain exports agree, a perturbed layer is named, quantization is located."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from support import load_torch_model, run_cli

from optimum_hierarchy.schema import NODE_MODULE_KEY
from optimum_hierarchy.tools.compare import COMPARED, compare_with_pytorch

# One Linear (Conv1D for GPT-2) in the last layer of each tiny model.
PERTURBED = {
    "vit": "vit.encoder.layer.1.intermediate.dense",
    "bert": "encoder.layer.1.attention.self.value",
    "gpt2": "transformer.h.1.mlp.c_fc",
}
QUANTIZED_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "DequantizeLinear", "QLinearMatMul", "QuantizeLinear"}


def _linear_like(model: Any) -> set[str]:
    from transformers.pytorch_utils import Conv1D

    kinds = (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Embedding, Conv1D)
    return {path for path, m in model.named_modules() if isinstance(m, kinds)}


def _node_modules(path: Path) -> dict[str, str]:
    proto = onnx.load(str(path), load_external_data=False)
    return {n.name: {p.key: p.value for p in n.metadata_props}.get(NODE_MODULE_KEY, "") for n in proto.graph.node}


@pytest.mark.parametrize("name", ["vit", "bert", "gpt2"])
def test_plain_export_agrees_everywhere(cli_exports: dict[str, Path], model_dirs: dict[str, Path], name: str) -> None:
    model = load_torch_model(name, model_dirs[name])
    comparison = compare_with_pytorch(cli_exports[name] / "model.onnx", model)
    compared = {r.module: r for r in comparison.compared}
    # Every Linear / Conv1D / LayerNorm / Embedding (from named_modules) with a node in the file is
    # compared (BERT's pooler is not exported for feature-extraction).
    modules = _node_modules(cli_exports[name] / "model.onnx")
    expected = {p for p in _linear_like(model) if p in set(modules.values())}
    assert len(expected) >= 10
    assert expected <= set(compared), sorted(expected - set(compared))
    assert all(r.max_abs is not None and r.max_abs <= 1e-4 for r in compared.values())
    assert comparison.first_divergence is None and comparison.worst is None
    # The tensor compared for a module is produced by one of that module's nodes.
    proto = onnx.load(str(cli_exports[name] / "model.onnx"), load_external_data=False)
    producer = {o: n.name for n in proto.graph.node for o in n.output}
    for path in expected:
        owner = modules[producer[compared[path].tensor]]
        assert owner == path or owner.startswith(path + "."), (path, compared[path].tensor)


def _perturb(source: Path, target: Path, model: Any, module: str) -> str:
    """Change one weight of ``module`` in the ONNX file: found by value, as the PyTorch weight or its transpose."""
    weight = dict(model.named_parameters())[f"{module}.weight"].detach().numpy()
    proto = onnx.load(str(source))
    for tensor in proto.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.shape in (weight.shape, weight.T.shape) and (
            np.array_equal(array, weight) or np.array_equal(array, weight.T)
        ):
            changed = array.copy()
            changed.flat[0] += 0.5
            tensor.CopyFrom(numpy_helper.from_array(changed, tensor.name))
            onnx.save(proto, str(target))
            return tensor.name
    raise AssertionError(f"no initializer holds {module}.weight")


@pytest.mark.parametrize("name", ["vit", "bert", "gpt2"])
def test_perturbed_layer_is_the_first_divergence(
    cli_exports: dict[str, Path], model_dirs: dict[str, Path], tmp_path: Path, name: str
) -> None:
    model = load_torch_model(name, model_dirs[name])
    shutil.copytree(cli_exports[name], tmp_path / "out")
    _perturb(cli_exports[name] / "model.onnx", tmp_path / "out" / "model.onnx", model, PERTURBED[name])
    comparison = compare_with_pytorch(tmp_path / "out" / "model.onnx", model)
    first = comparison.first_divergence
    assert first is not None
    assert first.module == PERTURBED[name]
    # Everything that finished before it agrees; its ancestors diverge after it.
    before = [r for r in comparison.compared if r.order < first.order]
    assert before and not any(r.exceeds for r in before)
    parent = PERTURBED[name].rpartition(".")[0]
    by_module = {r.module: r for r in comparison.compared}
    if parent in by_module:
        assert by_module[parent].exceeds and by_module[parent].order > first.order


@pytest.fixture(scope="module")
def bert_optimized_and_quantized(
    cli_exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    from optimum.onnxruntime import ORTOptimizer, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

    from optimum_hierarchy import annotate_hierarchy

    out = tmp_path_factory.mktemp("compare_bert")
    ORTOptimizer.from_pretrained(cli_exports["bert"], file_names=["model.onnx"]).optimize(
        AutoOptimizationConfig.O2(), save_dir=out / "o2"
    )
    ORTQuantizer.from_pretrained(cli_exports["bert"], file_name="model.onnx").quantize(
        AutoQuantizationConfig.avx512_vnni(is_static=False), save_dir=out / "q"
    )
    annotate_hierarchy(out)
    return {"o2": out / "o2" / "model_optimized.onnx", "q": out / "q" / "model_quantized.onnx"}


def test_optimized_export_agrees_where_outputs_survive(
    bert_optimized_and_quantized: dict[str, Path], model_dirs: dict[str, Path]
) -> None:
    path = bert_optimized_and_quantized["o2"]
    comparison = compare_with_pytorch(path, load_torch_model("bert", model_dirs["bert"]))
    compared = {r.module: r for r in comparison.compared}
    assert comparison.first_divergence is None
    assert all(r.max_abs is not None and r.max_abs <= 1e-4 for r in compared.values())
    # Fused nodes' outputs are compared: attention.self's output now comes from the Attention node.
    proto = onnx.load(str(path), load_external_data=False)
    producer = {o: n.op_type for n in proto.graph.node for o in n.output}
    for layer in (0, 1):
        assert producer[compared[f"encoder.layer.{layer}.attention.self"].tensor] == "Attention"
    # A Linear whose bias Add went into SkipLayerNormalization has no output tensor left: not compared.
    ops_of = {}
    for node in proto.graph.node:
        ops_of.setdefault({p.key: p.value for p in node.metadata_props}.get(NODE_MODULE_KEY), set()).add(node.op_type)
    dense = "encoder.layer.0.attention.output.dense"
    assert ops_of[dense] == {"MatMul"}
    assert dense not in compared


def test_quantized_export_names_a_quantized_module(
    bert_optimized_and_quantized: dict[str, Path], model_dirs: dict[str, Path]
) -> None:
    path = bert_optimized_and_quantized["q"]
    comparison = compare_with_pytorch(path, load_torch_model("bert", model_dirs["bert"]))
    first, worst = comparison.first_divergence, comparison.worst
    assert first is not None and worst is not None
    modules = _node_modules(path)
    proto = onnx.load(str(path), load_external_data=False)
    quantized_modules = {modules[n.name] for n in proto.graph.node if n.op_type in QUANTIZED_OPS}
    assert quantized_modules
    # The first divergence and the worst module each hold a quantized node, in their own subtree.
    for found in (first, worst):
        assert any(m == found.module or m.startswith(found.module + ".") for m in quantized_modules), found.module
    # Nothing before the first divergence is over the tolerance, and every compared module is.
    assert all(not r.exceeds for r in comparison.compared if r.order < first.order)
    assert len(comparison.compared) >= 30


@pytest.mark.cli
def test_compare_command(cli_exports: dict[str, Path], model_dirs: dict[str, Path], tmp_path: Path) -> None:
    shutil.copytree(cli_exports["bert"], tmp_path / "out")
    model = load_torch_model("bert", model_dirs["bert"])
    _perturb(cli_exports["bert"] / "model.onnx", tmp_path / "out" / "model.onnx", model, PERTURBED["bert"])
    completed = run_cli(
        "hierarchy",
        "compare",
        "--model",
        str(model_dirs["bert"]),
        str(tmp_path / "out"),
        "--json",
        "--check",
        check=False,
    )
    assert completed.returncode == 2, completed.stderr
    data = json.loads(completed.stdout)
    assert data["first_divergence"]["module"] == PERTURBED["bert"]
    assert all(row["status"] == COMPARED for row in data["modules"])
    table = run_cli("hierarchy", "compare", "--model", str(model_dirs["bert"]), str(cli_exports["bert"]))
    assert "compared modules are within" in table.stdout


@pytest.mark.cli
def test_compare_command_bad_input(cli_exports: dict[str, Path], model_dirs: dict[str, Path], tmp_path: Path) -> None:
    cases = [
        (["--model", str(tmp_path), str(cli_exports["bert"])], "no config.json"),
        (["--model", str(model_dirs["vit"]), str(cli_exports["bert"])], "was exported from"),
        (["--model", str(model_dirs["bert"]), str(tmp_path / "none.onnx")], "no such file"),
    ]
    for args, message in cases:
        completed = run_cli("hierarchy", "compare", *args, check=False)
        assert completed.returncode == 1, args
        assert message in completed.stdout + completed.stderr, (args, completed.stdout, completed.stderr)
        assert "Traceback" not in completed.stderr
