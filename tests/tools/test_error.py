"""`optimum-cli hierarchy error`: per-module accumulated and local error between two files (both stacks).

The reference is a `hierarchy export` of a tiny Llama; the candidate its int4 version with some modules
excluded. Which Linears are excluded or quantized is read from the candidate with plain onnx (MatMul vs
MatMulNBits), independently of the error tool.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from dynamo_support import module_of
from explorer_support import check_with_model_explorer, load_node_data
from support import run_cli

from optimum_hierarchy.tools.int4 import quantize_int4

pytestmark = pytest.mark.cli

EXCLUDE = ["lm_head", "model.layers.0.self_attn.*"]


@pytest.fixture(scope="module")
def llama_int4(task_exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("error") / "int4.onnx"
    quantize_int4(task_exports["llama"] / "model.onnx", out, block_size=32, exclude_modules=EXCLUDE)
    return task_exports["llama"] / "model.onnx", out


def test_local_error_finds_the_quantized_modules(llama_int4: tuple[Path, Path], tmp_path: Path) -> None:
    reference, candidate = llama_int4
    explorer = tmp_path / "error.json"
    report = json.loads(
        run_cli(
            "hierarchy", "error", str(reference), str(candidate), "--json", "--model-explorer", str(explorer)
        ).stdout
    )
    rows = {r["module"]: r for r in report["modules"]}
    assert any("local" in k for k in rows["lm_head"]) and any("accumulated" in k for k in rows["lm_head"])
    graph = onnx.load(str(candidate), load_external_data=False).graph
    quantized = {module_of(n) for n in graph.node if n.op_type == "MatMulNBits"}
    float_linears = {"lm_head"} | {f"model.layers.0.self_attn.{p}_proj" for p in "qkvo"}
    assert quantized and not quantized & float_linears
    assert {module_of(n) for n in graph.node if n.op_type == "MatMul"} >= float_linears
    for module in float_linears:  # excluded: the module itself adds nothing
        assert rows[module]["local_max_abs"] is not None and rows[module]["local_max_abs"] <= 1e-6, module
    for module in quantized:  # int4 weights: each quantized Linear adds error of its own
        assert rows[module]["local_max_abs"] > 0, module
        assert rows[module]["local_cosine"] > 0.9, module
    # Error accumulates along the layers (relative L2 of each decoder layer's output).
    layers = [rows[f"model.layers.{i}"]["accumulated_rel_l2"] for i in range(2)]
    assert 0 < layers[0] < layers[1]
    assert rows["lm_head"]["accumulated_rel_l2"] > 0  # upstream error reaches it

    # Model Explorer's node data (local relative L2 by default), keyed by the candidate's node names: the
    # excluded Linears' MatMul nodes show about 0, every MatMulNBits node more than 0.
    node_data = load_node_data(explorer)
    assert set(node_data) == {graph.name}
    values = {k: v["value"] for k, v in node_data[graph.name]["results"].items()}
    assert set(values) <= {n.name for n in graph.node}
    for node in graph.node:
        if node.op_type == "MatMul" and module_of(node) in float_linears:
            assert values[node.name] <= 1e-6, node.name
        if node.op_type == "MatMulNBits":
            assert values[node.name] > 0, node.name
    check_with_model_explorer(candidate, node_data)


def test_same_file_has_no_error(llama_int4: tuple[Path, Path]) -> None:
    reference, _ = llama_int4
    report = json.loads(run_cli("hierarchy", "error", str(reference), str(reference), "--json", "--depth", "2").stdout)
    compared = [r for r in report["modules"] if r["accumulated_max_abs"] is not None]
    assert compared and all(r["accumulated_max_abs"] == 0 and r["local_max_abs"] == 0 for r in compared)
    assert all(r["module"].count(".") <= 1 for r in report["modules"])


def test_bad_input_is_a_clear_error(
    llama_int4: tuple[Path, Path], task_exports: dict[str, Path], tmp_path: Path
) -> None:
    reference, candidate = llama_int4
    other = run_cli("hierarchy", "error", str(reference), str(task_exports["bert"] / "model.onnx"), check=False)
    assert other.returncode == 1 and "different models" in other.stderr.replace("\n", " ")
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, input_ids=np.zeros((1, 4), dtype=np.int64))  # attention_mask and position_ids missing
    wrong = run_cli("hierarchy", "error", str(reference), str(candidate), "--inputs", str(inputs), check=False)
    assert wrong.returncode == 1 and "inputs" in wrong.stderr
    missing = run_cli("hierarchy", "error", str(reference), str(tmp_path / "nope.onnx"), check=False)
    assert missing.returncode == 1 and "nope.onnx" in missing.stderr
    plain = onnx.load(str(reference))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    bare = run_cli("hierarchy", "error", str(tmp_path / "plain.onnx"), str(candidate), check=False)
    assert bare.returncode == 1 and "annotate" in bare.stderr and "plain.onnx" in " ".join(bare.stderr.split())
    over = run_cli(
        "hierarchy", "error", str(reference), str(candidate), "--model-explorer", str(candidate), check=False
    )
    assert over.returncode == 1 and "--model-explorer" in over.stderr and onnx.load(str(candidate)).graph.node


def test_the_cli_offers_the_explorer_metrics() -> None:
    from optimum_hierarchy.cli import error_command
    from optimum_hierarchy.tools import explorer

    assert error_command.ERROR_METRICS is explorer.ERROR_METRICS  # one tuple, tools/choices.py


def test_local_error_of_a_linear_is_its_node_alone_on_the_reference_input(
    llama_int4: tuple[Path, Path], tmp_path: Path
) -> None:
    """Independent check: each quantized Linear is one MatMulNBits; cut it out with onnx's own extractor, feed it
    the reference's value of its input, and compare with the reference's output: the tool's local error."""
    import onnxruntime as ort

    reference, candidate = llama_int4
    report = json.loads(run_cli("hierarchy", "error", str(reference), str(candidate), "--json").stdout)
    rows = {r["module"]: r for r in report["modules"]}
    graph = onnx.load(str(candidate), load_external_data=False).graph
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    ref_model = onnx.load(str(reference))
    tensors = sorted({n.input[0] for n in nbits} | {n.output[0] for n in nbits})
    ref_model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(ref_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    with np.load(_saved_inputs(reference, tmp_path)) as data:
        feeds = {k: data[k] for k in data.files if k in inputs}
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    for node in nbits:
        alone = tmp_path / f"{node.name}.onnx"
        onnx.utils.extract_model(str(candidate), str(alone), [node.input[0]], [node.output[0]], check_model=False)
        one = ort.InferenceSession(str(alone), options, providers=["CPUExecutionProvider"])
        (got,) = one.run(None, {node.input[0]: values[node.input[0]]})
        expected = float(np.abs(got.astype(np.float64) - values[node.output[0]]).max())
        assert rows[module_of(node)]["local_max_abs"] == pytest.approx(expected, rel=1e-5, abs=1e-7), node.name


def _saved_inputs(reference: Path, tmp_path: Path) -> Path:
    """The inputs the error command generates by default (seed 0), saved as the .npz it would be given."""
    from optimum_hierarchy.tools.inputs import generate_inputs

    path = tmp_path / "inputs.npz"
    np.savez(path, **generate_inputs(reference, seed=0))
    return path


def test_bert_int4_local_and_accumulated_error(task_exports: dict[str, Path], tmp_path: Path) -> None:
    """The same on BERT (API): float modules add no error of their own, quantized ones do."""
    from optimum_hierarchy.tools.error import module_errors

    reference = task_exports["bert"] / "model.onnx"
    candidate = tmp_path / "int4.onnx"
    quantize_int4(reference, candidate, block_size=32, exclude_modules=["encoder.layer.0.attention.self.*"])
    rows = {r.module: r for r in module_errors(reference, candidate).modules}
    graph = onnx.load(str(candidate), load_external_data=False).graph
    quantized = {module_of(n) for n in graph.node if n.op_type == "MatMulNBits"}
    kept = {f"encoder.layer.0.attention.self.{p}" for p in ("query", "key", "value")}
    assert quantized and not quantized & kept
    for module in kept:
        local = rows[module].local
        assert local is not None and local.max_abs <= 1e-6, module
    for module in quantized:
        local = rows[module].local
        assert local is not None and local.max_abs > 0, module
    # Error reaches both layers' outputs. (It need not grow in relative terms here: each BERT layer ends in
    # a LayerNorm, and with these tiny random weights it measured 1.3e-2 after layer 0, 1.2e-2 after layer 1.)
    layers = [rows[f"encoder.layer.{i}"].accumulated for i in range(2)]
    assert all(layer is not None and layer.rel_l2 > 0 for layer in layers)


def test_models_of_different_sizes_are_a_clear_error(
    task_exports: dict[str, Path], task_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """BERT of hidden size 64 against the same config with hidden size 32: one module tree, other shapes."""
    from optimum_hierarchy.demo import build_tiny_model
    from optimum_hierarchy.exporters.task_export import export_task_with_hierarchy

    reference = task_exports["bert"] / "model.onnx"
    config = json.loads((task_model_dirs["bert"] / "config.json").read_text())
    assert config["hidden_size"] == 64
    build_tiny_model("bert", tmp_path / "narrow", hidden_size=32, intermediate_size=64)
    export_task_with_hierarchy(tmp_path / "narrow", tmp_path / "export", task="feature-extraction")
    candidate = tmp_path / "export" / "model.onnx"
    explorer = tmp_path / "error.json"
    completed = run_cli(
        "hierarchy", "error", str(reference), str(candidate), "--model-explorer", str(explorer), check=False
    )
    message = " ".join(completed.stderr.split())
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr and "broadcast" not in message
    assert "different sizes" in message and "'last_hidden_state'" in message and "[2, 16, 64]" in message, message
    assert not explorer.exists()


GLUE_OPS = ("Shape", "Reshape", "Transpose", "Cast")
LAYER_0 = {"llama": "model.layers.0.*", "bert": "encoder.layer.0.*"}


@pytest.mark.parametrize("case", sorted(LAYER_0))
def test_explorer_ranks_every_int4_matmul_above_shape_and_layout_nodes(
    case: str, task_exports: dict[str, Path], tmp_path: Path
) -> None:
    """Layer 0 kept float: in the local-error overlay, every MatMulNBits node ranks above every Shape, Reshape,
    Transpose and Cast node (the root's mask and shape nodes, an attention's reshapes), whose module's own nodes
    add nothing, rather than showing their module's (or the whole model's) error."""
    reference = task_exports[case] / "model.onnx"
    candidate = tmp_path / "int4.onnx"
    quantize_int4(reference, candidate, block_size=32, exclude_modules=[LAYER_0[case]])
    explorer = tmp_path / "error.json"
    run_cli("hierarchy", "error", str(reference), str(candidate), "--model-explorer", str(explorer))
    graph = onnx.load(str(candidate), load_external_data=False).graph
    (values,) = [{k: v["value"] for k, v in data["results"].items()} for data in load_node_data(explorer).values()]
    nbits = [values[n.name] for n in graph.node if n.op_type == "MatMulNBits"]
    glue = {n.name: values[n.name] for n in graph.node if n.op_type in GLUE_OPS and n.name in values}
    assert nbits and len(glue) >= 10
    assert any(module_of(n) == "" for n in graph.node if n.name in glue)  # the root's shape and mask nodes
    assert max(glue.values()) < min(nbits), sorted(glue.items(), key=lambda kv: -kv[1])[:5]
