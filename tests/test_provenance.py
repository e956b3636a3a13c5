"""The provenance snapshot: round trip, bounded decoding of untrusted values, idempotent re-annotation."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import zlib
from pathlib import Path

import onnx
import pytest

from optimum_hierarchy import annotate_hierarchy, read_hierarchy
from optimum_hierarchy.errors import SchemaError
from optimum_hierarchy.provenance import (
    NodeTable,
    Provenance,
    ProvenanceNode,
    decode_module_outputs,
    decode_provenance,
    encode_module_outputs,
    encode_provenance,
    module_outputs,
)
from optimum_hierarchy.schema import MODULE_OUTPUTS_KEY, PROVENANCE_KEY


def _sample() -> Provenance:
    return Provenance(
        nodes=(
            ProvenanceNode("/a/MatMul", "MatMul", "a", "scope", (), ("x", "onnx::MatMul_1"), ("/a/MatMul_output_0",)),
            ProvenanceNode("Fused_0", "Attention", "a", "fusion", ("a", "a.q"), ("x", ""), ("y",)),
            ProvenanceNode("Constant_3", "Constant", None, "unattributed", (), (), ("c",)),
        )
    )


def test_round_trip() -> None:
    value = encode_provenance(_sample())
    assert value.isascii()
    assert decode_provenance({PROVENANCE_KEY: value}) == _sample()
    assert decode_provenance({}) is None


def _pack(payload: object) -> str:
    return base64.b64encode(zlib.compress(json.dumps(payload).encode())).decode()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64!", "not base64"),
        (base64.b64encode(b"plain bytes").decode(), "not zlib"),
        (base64.b64encode(zlib.compress(b"{")[:-4]).decode(), "truncated|not zlib"),
        (_pack({"v": 99, "s": [], "n": []}), "unknown provenance version 99"),
        (_pack({"v": 1, "s": [1], "n": []}), "list of strings"),
        (_pack({"v": 1, "s": ["a"], "n": [[0, 0, -1, 0, [], [], []], [5, 0, -1, 0, [], [], []]]}), "node 1"),
        (_pack({"v": 1, "s": ["a"], "n": [[0, 0]]}), "7 fields"),
        (_pack({"v": 1, "s": ["a"], "n": [[0, 0, -1, 0, 3, [], []]]}), "expected a list"),
        (base64.b64encode(zlib.compress(b"[" * 40 + b"]" * 40)).decode(), "deeper than"),
    ],
)
def test_malformed_values_raise_schema_errors_naming_the_key(value: str, message: str) -> None:
    with pytest.raises(SchemaError, match=message) as info:
        decode_provenance({PROVENANCE_KEY: value})
    assert PROVENANCE_KEY in str(info.value)


def test_decompression_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from optimum_hierarchy import provenance

    monkeypatch.setattr(provenance, "_MAX_DECOMPRESSED", 1000)
    bomb = base64.b64encode(zlib.compress(b" " * 100_000)).decode()
    with pytest.raises(SchemaError, match="expands beyond 1000 bytes"):
        decode_provenance({PROVENANCE_KEY: bomb})


def test_export_stores_the_graph_it_attributed(cli_exports: dict[str, Path]) -> None:
    path = cli_exports["bert"] / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    stored = decode_provenance({p.key: p.value for p in model.metadata_props})
    assert stored is not None
    assert [(n.name, n.op_type, list(n.inputs), list(n.outputs)) for n in stored.nodes] == [
        (n.name, n.op_type, list(n.input), list(n.output)) for n in model.graph.node
    ]
    hierarchy = read_hierarchy(path)
    assert [n.module for n in stored.nodes] == [n.module for n in hierarchy.nodes]


def test_restoring_twice_changes_nothing(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    model = ORTModelForFeatureExtraction.from_pretrained(cli_exports["bert"])
    ORTOptimizer.from_pretrained(model).optimize(AutoOptimizationConfig.O2(), tmp_path)
    path = tmp_path / "model_optimized.onnx"
    (first,) = annotate_hierarchy(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (second,) = annotate_hierarchy(tmp_path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert first.summary == second.summary
    assert first.summary.by_source.get("fusion", 0) > 0


def test_sources_metadata_is_validated(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    shutil.copy(cli_exports["bert"] / "model.onnx", path)
    model = onnx.load(str(path))
    model.graph.node[0].metadata_props.add(key="pkg.optimum_hierarchy.sources", value='{"not": "a list"}')
    onnx.save(model, str(path))
    with pytest.raises(SchemaError, match=r"pkg\.optimum_hierarchy\.sources"):
        read_hierarchy(path)


def test_module_outputs_of_a_hand_written_graph() -> None:
    # x -> [a.q] q -> [a.k] k -> [a] s -> [b] out (graph output); [a.q] also feeds [b]; [a.k] t is read only in a.k.
    table = NodeTable(
        names=["q", "k", "k2", "s", "b", "body"],
        op_types=["MatMul", "MatMul", "Relu", "Add", "Mul", "Relu"],
        inputs=[["x", "w"], ["q_out", "w2"], ["t"], ["k_out", "q_out"], ["s_out", "q_out"], ["s_out"]],
        outputs=[["q_out"], ["t"], ["k_out"], ["s_out"], ["out"], ["inner"]],
    )
    modules = {0: "a.q", 1: "a.k", 2: "a.k", 3: "a", 4: "b", 5: "b"}
    main = [True, True, True, True, True, False]
    outputs = module_outputs(table, modules, main, ["out"])
    # By hand: q_out leaves a.q (read in a.k, a and b) and a (read in b); k_out leaves a.k only; s_out
    # leaves a (read in b and in b's subgraph); out is the graph output: b and the root. t stays inside a.k.
    assert outputs == {
        "a.q": ["q_out"],
        "a": ["q_out", "s_out"],
        "a.k": ["k_out"],
        "b": ["out"],
        "": ["out"],
    }
    assert decode_module_outputs({MODULE_OUTPUTS_KEY: encode_module_outputs(outputs)}) == {
        k: tuple(v) for k, v in outputs.items()
    }
    assert decode_module_outputs({}) is None
    for bad in ("[]", '{"a": "x"}', '{"a": [1]}', "{"):
        with pytest.raises(SchemaError, match=MODULE_OUTPUTS_KEY):
            decode_module_outputs({MODULE_OUTPUTS_KEY: bad})


def test_module_outputs_are_recorded_at_export_and_kept_through_optimization(
    cli_exports: dict[str, Path], tmp_path: Path
) -> None:
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    proto = onnx.load(str(cli_exports["bert"] / "model.onnx"), load_external_data=False)
    outputs = decode_module_outputs({p.key: p.value for p in proto.metadata_props})
    assert outputs is not None
    # TorchScript names each module's last node in its scope: a Linear's output is its bias Add.
    assert outputs["encoder.layer.0.attention.output.dense"] == (
        "/encoder/layer.0/attention/output/dense/Add_output_0",
    )
    assert outputs[""] == ("last_hidden_state",)
    source = tmp_path / "src"
    shutil.copytree(cli_exports["bert"], source)
    ORTOptimizer.from_pretrained(source, file_names=["model.onnx"]).optimize(
        AutoOptimizationConfig.O2(), save_dir=tmp_path / "o2"
    )
    annotate_hierarchy(tmp_path / "o2")
    optimized = onnx.load(str(tmp_path / "o2" / "model_optimized.onnx"), load_external_data=False)
    assert decode_module_outputs({p.key: p.value for p in optimized.metadata_props}) == outputs
