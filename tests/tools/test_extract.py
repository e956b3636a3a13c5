"""Extracting a module: exactly its nodes, a valid standalone model, bit-identical intermediate values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from support import run_cli

from optimum_hierarchy import HierarchyRetriever
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.schema import NODE_MODULE_KEY
from optimum_hierarchy.tools.extract import extract_module, write_extracted_module
from optimum_hierarchy.tools.inputs import generate_inputs

CASES = [
    ("vit", "vit.encoder.layer.0.attention"),
    ("bert", "encoder.layer.1"),
    ("bert", "embeddings"),
    ("gpt2", "transformer.h.1"),
    ("gpt2", "lm_head"),
]


def _modules_in_file(path: Path) -> dict[str, str]:
    """Node name -> module, read with plain onnx from the node metadata (main graph)."""
    proto = onnx.load(str(path), load_external_data=False)
    return {n.name: {p.key: p.value for p in n.metadata_props}[NODE_MODULE_KEY] for n in proto.graph.node}


def _session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _full_values(path: Path, names: list[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The full model's values of ``names``, exposed as extra outputs (done here, not by the package)."""
    proto = onnx.load(str(path))
    existing = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in existing)
    session = _session(proto)
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    return {n: feeds[n] if n in feeds else values[n] for n in names}


def _check_reproduces(full: Path, extracted: onnx.ModelProto, module: str) -> None:
    onnx.checker.check_model(extracted)
    # Exactly the module's nodes: those whose stored module is the module or below it.
    modules = _modules_in_file(full)
    expected = {n for n, m in modules.items() if m == module or m.startswith(module + ".")}
    assert expected
    assert {n.name for n in extracted.graph.node} == expected
    # Only the initializers its nodes read, and all of them.
    read = {i for n in extracted.graph.node for i in n.input}
    initializers = {t.name for t in extracted.graph.initializer}
    full_initializers = {t.name for t in onnx.load(str(full), load_external_data=False).graph.initializer}
    assert initializers == read & full_initializers
    # Fed the full model's boundary values, it computes the full model's values, bit for bit.
    feeds = generate_inputs(full)
    inputs = [i.name for i in extracted.graph.input]
    outputs = [o.name for o in extracted.graph.output]
    assert outputs
    values = _full_values(full, inputs + outputs, feeds)
    results = _session(extracted).run(None, {n: values[n] for n in inputs})
    for name, result in zip(outputs, results, strict=True):
        assert result.dtype == values[name].dtype
        assert np.array_equal(result, values[name]), name
    # It carries the hierarchy: every node keeps its module.
    retriever = HierarchyRetriever(extracted)
    assert {n.name: n.module for n in retriever.nodes} == {n: modules[n] for n in expected}


@pytest.mark.parametrize(("name", "module"), CASES)
def test_extracted_module_reproduces_the_full_model(cli_exports: dict[str, Path], name: str, module: str) -> None:
    full = cli_exports[name] / "model.onnx"
    _check_reproduces(full, extract_module(full, module).model, module)


def test_extract_from_an_optimized_model(bert_o2: Path) -> None:
    extracted = extract_module(bert_o2, "encoder.layer.0")
    assert {"Attention", "SkipLayerNormalization"} <= {n.op_type for n in extracted.model.graph.node}
    _check_reproduces(bert_o2, extracted.model, "encoder.layer.0")


@pytest.fixture(scope="module")
def bert_o2(cli_exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    from optimum_hierarchy import annotate_hierarchy

    out = tmp_path_factory.mktemp("extract_o2")
    ORTOptimizer.from_pretrained(cli_exports["bert"], file_names=["model.onnx"]).optimize(
        AutoOptimizationConfig.O2(), save_dir=out
    )
    annotate_hierarchy(out)
    return out / "model_optimized.onnx"


def test_external_data_is_read_only_for_the_module(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    proto = onnx.load(str(cli_exports["bert"] / "model.onnx"))
    onnx.save(proto, str(tmp_path / "model.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0)
    extracted = extract_module(tmp_path / "model.onnx", "encoder.layer.1.output.dense")
    assert all(not t.external_data for t in extracted.model.graph.initializer)
    _check_reproduces(cli_exports["bert"] / "model.onnx", extracted.model, "encoder.layer.1.output.dense")


@pytest.mark.cli
def test_extract_command(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "layer1.onnx"
    completed = run_cli("hierarchy", "extract", str(cli_exports["bert"]), "encoder.layer.1", "-o", str(out))
    assert "encoder.layer.1" in completed.stdout
    assert str(out) in completed.stdout.replace("\n", "")
    _check_reproduces(cli_exports["bert"] / "model.onnx", onnx.load(str(out)), "encoder.layer.1")


@pytest.mark.cli
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["encoder.layer.9", "-o", "{tmp}/x.onnx"], "encoder.layer.9"),
        (["encoder.layer.1", "-o", "{model}"], "choose another output file"),
        (["encoder.layer.1", "-o", "{tmp}/missing/x.onnx"], "no such directory"),
    ],
)
def test_extract_command_bad_input(cli_exports: dict[str, Path], tmp_path: Path, args: list[str], message: str) -> None:
    model = cli_exports["bert"] / "model.onnx"
    before = model.read_bytes()
    filled = [a.format(tmp=tmp_path, model=model) for a in args]
    completed = run_cli("hierarchy", "extract", str(model), *filled, check=False)
    assert completed.returncode == 1
    assert message in completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr
    assert model.read_bytes() == before
    assert not list(tmp_path.rglob("*.onnx"))


def test_write_refuses_the_source_file(cli_exports: dict[str, Path]) -> None:
    model = cli_exports["gpt2"] / "model.onnx"
    with pytest.raises(HierarchyError, match="choose another output file"):
        write_extracted_module(model, "lm_head", model)


def test_a_module_over_the_protobuf_limit_gets_external_data(
    cli_exports: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from optimum_hierarchy.tools import extract

    monkeypatch.setattr(extract, "PROTOBUF_LIMIT", 10_000)  # the tiny layer is ~70 KB: "too big"
    out = tmp_path / "layer1.onnx"
    write_extracted_module(cli_exports["bert"] / "model.onnx", "encoder.layer.1", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer1.onnx", "layer1.onnx_data"]
    light = onnx.load(str(out), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in light.graph.initializer)
    _check_reproduces(cli_exports["bert"] / "model.onnx", onnx.load(str(out)), "encoder.layer.1")
