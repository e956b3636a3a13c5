"""Property-based tests over random small graphs and random metadata (hypothesis).

Each property ends in one of two ways: success with every node accounted for (attributed to a module of
the tree, or recorded unattributed with a reason), or the documented error (``AttributionError`` with
``strict``, ``SchemaError`` for malformed metadata, ``InvalidModelFileError`` for a graph onnx_ir cannot
read). Bounded in CI; ``HYPOTHESIS_PROFILE=long`` for the long run (``conftest.py``).
"""

from __future__ import annotations

import base64
import json
import random
import time
import zlib

import onnx
import onnx_ir as ir
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from onnx import TensorProto, helper
from reliability.graphs import (
    JSON,
    PARAMETERS,
    TREE,
    all_nodes,
    expected_scope_module,
    node_props,
    random_model,
)
from reliability.reference_reattribute import reference_reattribute

from optimum_hierarchy import HierarchyRetriever, annotate_file, read_hierarchy, schema
from optimum_hierarchy.annotation.file import annotate_proto
from optimum_hierarchy.annotation.hierarchy import annotate_hierarchy
from optimum_hierarchy.errors import AttributionError, InvalidModelFileError, MissingHierarchyError, SchemaError
from optimum_hierarchy.evidence.context import ONLY_THE_ROOT
from optimum_hierarchy.passes.attribute_nodes import Mode
from optimum_hierarchy.passes.reattribute import reattribute
from optimum_hierarchy.provenance import NodeTable, Provenance, ProvenanceNode, decode_provenance, encode_provenance
from optimum_hierarchy.schema import AttributionSource, ExportInfo

SOURCES = {s.value for s in AttributionSource}
OWNER = {p: p.rpartition(".")[0] for p in PARAMETERS}


def _check_accounted_for(proto: onnx.ModelProto) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]]:
    """Every node is attributed to a module of the tree with a known source, or unattributed with a reason."""
    attributed, unattributed = [], []
    for node in all_nodes(proto.graph):
        props = node_props(node)
        source = props.get(schema.NODE_SOURCE_KEY)
        assert source in SOURCES, (node.name, props)
        if source == AttributionSource.UNATTRIBUTED.value:
            assert props.get(schema.NODE_REASON_KEY), node.name
            assert schema.NODE_MODULE_KEY not in props and schema.NAMESPACE_KEY not in props
            unattributed.append(node)
        else:
            module = props[schema.NODE_MODULE_KEY]
            assert module in TREE, (node.name, module)
            assert props[schema.NAMESPACE_KEY] == module.replace(".", "/")
            assert schema.NODE_REASON_KEY not in props
            attributed.append(node)
    return attributed, unattributed


def _annotate(
    proto: onnx.ModelProto, *, strict: bool = False, mode: Mode = Mode.EXPORT
) -> tuple[onnx.ModelProto, schema.AttributionSummary]:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    summary, _ = annotate_proto(out, TREE, ExportInfo(), strict=strict, mode=mode)
    return out, summary


@given(st.data())
def test_graphs_with_evidence_are_fully_attributed(data: st.DataObject) -> None:
    """Nodes that compute on a graph input (or serve one that does) all get a module, except where the only module
    around them is the root reached by spreading along the data from nodes placed by context: those are left
    unattributed with that reason (a root nothing witnesses is no evidence), never with a scope of their own."""
    proto = random_model(data)
    nodes = all_nodes(proto.graph)
    assert nodes
    annotated, summary = _annotate(proto)
    attributed, unattributed = _check_accounted_for(annotated)
    assert len(attributed) + len(unattributed) == len(nodes)
    for node in unattributed:
        assert ONLY_THE_ROOT in node_props(node)[schema.NODE_REASON_KEY], node.name
        assert expected_scope_module(node.name) is None, node.name
    assert summary.nodes == len(nodes) == sum(summary.by_source.values()) + len(summary.unattributed)
    if unattributed:
        with pytest.raises(AttributionError):
            _annotate(proto, strict=True)
        return
    for node in all_nodes(annotated.graph):
        props = node_props(node)
        expected = expected_scope_module(node.name)
        if expected is not None:  # 1. scope, the most trusted evidence
            assert (props[schema.NODE_MODULE_KEY], props[schema.NODE_SOURCE_KEY]) == (expected, "scope"), node.name
        elif node.op_type == "Identity" and node.output[0] in OWNER:  # 2. an alias named after a parameter
            assert props[schema.NODE_MODULE_KEY] == OWNER[node.output[0]], node.name
    # Annotating the annotated model changes nothing.
    again = onnx.ModelProto()
    again.CopyFrom(annotated)
    _, modified = annotate_proto(again, TREE, ExportInfo(), strict=True)
    assert not modified
    assert again.SerializeToString() == annotated.SerializeToString()


@given(st.data(), st.sampled_from([Mode.EXPORT, Mode.AFTER_THE_FACT]))
def test_any_graph_is_accounted_for_and_strict_names_the_gaps(data: st.DataObject, mode: Mode) -> None:
    proto = random_model(data, dangling=True)
    annotated, summary = _annotate(proto, mode=mode)
    attributed, unattributed = _check_accounted_for(annotated)
    assert summary.nodes == len(attributed) + len(unattributed)
    assert [(u.node, u.op_type) for u in summary.unattributed] == [(n.name, n.op_type) for n in unattributed]
    if unattributed:
        with pytest.raises(AttributionError) as info:
            _annotate(proto, strict=True, mode=mode)
        assert info.value.unattributed == summary.unattributed
    else:
        _annotate(proto, strict=True, mode=mode)


@given(data=st.data())
def test_files_round_trip_through_the_reader_and_the_retriever(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """What annotation writes, the reader reads back as written, and every retriever query answers."""
    path = tmp_path_factory.mktemp("fuzz") / "model.onnx"
    proto = random_model(data, dangling=True)
    onnx.save(proto, str(path))
    annotate_file(path, TREE, ExportInfo())
    written = path.read_bytes()
    stored = onnx.load(str(path))
    expected = [
        (n.name, n.op_type, node_props(n).get(schema.NODE_MODULE_KEY), node_props(n).get(schema.NODE_SOURCE_KEY))
        for n in all_nodes(stored.graph)
    ]
    hierarchy = read_hierarchy(path)
    assert [(n.name, n.op_type, n.module, n.source) for n in hierarchy.nodes] == expected
    retriever = HierarchyRetriever(hierarchy)
    attributed = [i for i, n in enumerate(hierarchy.nodes) if n.module is not None]
    groups = retriever.group_operations_by_hierarchy()
    grouped = [id(n) for nodes in groups.values() for n in nodes]
    assert sorted(grouped) == sorted(id(hierarchy.nodes[i]) for i in attributed)  # each exactly once
    assert retriever.get_nodes_by_module("", subtree=True) == [hierarchy.nodes[i] for i in attributed]
    for depth in range(4):
        regrouped = retriever.group_operations_by_hierarchy(depth)
        assert sum(map(len, regrouped.values())) == len(attributed)
    for node in hierarchy.nodes:
        found = retriever.get_node(node.name)
        assert found.name == node.name
        path_up = retriever.get_node_path(node.name)
        assert path_up == ([] if found.module is None else [*_ancestors(found.module)])
    for module in TREE:
        stats = retriever.get_module_stats(module)
        assert stats.subtree_nodes == len(retriever.get_nodes_by_module(module, subtree=True))
    annotate_file(path, TREE, ExportInfo())  # idempotent, byte for byte
    assert path.read_bytes() == written


def _ancestors(module: str) -> list[str]:
    parts = module.split(".") if module else []
    return [".".join(parts[:n]) for n in range(len(parts), -1, -1)]


@given(data=st.data())
def test_annotation_from_names_alone_writes_what_it_can_read(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``annotate_hierarchy`` on a file nobody annotated, no config.json: the tree comes from the names."""
    directory = tmp_path_factory.mktemp("names")
    path = directory / "model.onnx"
    proto = random_model(data, dangling=True)
    if data.draw(st.booleans()):  # initializers a file from elsewhere may carry
        proto.graph.initializer.append(onnx.TensorProto(name="enc.weird.weight", data_type=999, dims=[2]))
        proto.graph.initializer.append(onnx.TensorProto(name="enc.neg.weight", data_type=1, dims=[-1]))
        for odd in ("enc..weight", ".weight", "enc.", "ünï.côdé.weight"):
            proto.graph.initializer.append(onnx.TensorProto(name=odd, data_type=1, dims=[1]))
    onnx.save(proto, str(path))
    try:
        (record,) = annotate_hierarchy(path)
    except InvalidModelFileError as e:  # an unknown data type: onnx_ir cannot read the graph
        assert str(path) in str(e)
        assert onnx.load(str(path)) == proto
        return
    hierarchy = read_hierarchy(path)
    assert len(hierarchy.nodes) == record.summary.nodes == len(all_nodes(proto.graph))
    assert sorted(p.name for p in directory.iterdir()) == ["model.onnx"]


# --- re-attribution from a provenance: the rewritten algorithm against the definition ------------------


_NAMES = st.sampled_from(["", "A", "B", "C", "Fused_0", "/enc/X"])
_TENSORS = st.sampled_from(["", "t0", "t1", "t2", "t3", "t4", "t5", "t6"])
_MODULES = st.sampled_from(["", "enc", "enc.layer.0", "enc.layer.0.dense", "enc.layer.1", "head", "blöck.ω"])


@st.composite
def _g0_node(draw: st.DrawFn) -> ProvenanceNode:
    return ProvenanceNode(
        name=draw(_NAMES),
        op_type=draw(st.sampled_from(["MatMul", "Add", "Attention"])),
        module=draw(st.none() | _MODULES),
        source=draw(st.sampled_from(["scope", "fusion", "context"])),
        sources=tuple(draw(st.lists(_MODULES, max_size=2))),
        inputs=tuple(draw(st.lists(_TENSORS, max_size=3))),
        outputs=tuple(draw(st.lists(_TENSORS, min_size=1, max_size=2))),
    )


@given(
    st.lists(_g0_node(), max_size=8),
    st.lists(
        st.tuples(
            _NAMES,
            st.sampled_from(["MatMul", "Add", "Attention"]),
            st.lists(_TENSORS, max_size=3),
            st.lists(_TENSORS, min_size=1, max_size=2),
        ),
        max_size=8,
    ),
    st.dictionaries(st.integers(0, 7), _MODULES),
)
def test_reattribution_matches_its_definition(
    g0: list[ProvenanceNode], g1: list[tuple[str, str, list[str], list[str]]], narrowing: dict[int, str]
) -> None:
    table = NodeTable(
        names=[n[0] for n in g1], op_types=[n[1] for n in g1], inputs=[n[2] for n in g1], outputs=[n[3] for n in g1]
    )

    def narrow(i: int) -> tuple[str, AttributionSource] | None:
        return (narrowing[i], AttributionSource.RULE) if i in narrowing else None

    provenance = Provenance(tuple(g0))
    assert reattribute(table, provenance, narrow) == reference_reattribute(table, provenance, narrow)


def test_reattribution_stays_linear_on_a_renamed_graph() -> None:
    """A long chain of nodes that are all new (every name changed, e.g. by a graph tool), whose last output
    keeps its name (a graph output), against a provenance listed in reverse order: this took minutes
    (cubic) before; now milliseconds."""
    n = 3000
    table = NodeTable(
        names=[f"N{i}" for i in range(n)],
        op_types=["Relu"] * n,
        inputs=[["x" if i == 0 else f"t{i - 1}"] for i in range(n)],
        outputs=[["y" if i == n - 1 else f"t{i}"] for i in range(n)],
    )
    g0 = tuple(
        ProvenanceNode(
            f"O{i}",
            "Relu",
            "enc.layer.0" if i % 2 else "enc.layer.1",
            "scope",
            (),
            ("x" if i == 0 else f"u{i - 1}",),
            ("y" if i == n - 1 else f"u{i}",),
        )
        for i in reversed(range(n))
    )
    start = time.perf_counter()
    placed = reattribute(table, Provenance(g0), lambda i: None)
    assert time.perf_counter() - start < 5.0
    assert len(placed) == n and {p.module for p in placed.values()} == {"enc.layer"}


def test_a_crafted_graph_cannot_make_reattribution_hang() -> None:
    """A chain of new nodes that each also write a tensor of the old graph: what each reaches grows with the
    chain (quadratic, and the sharing test cubic: 500 nodes took minutes). The work is bounded, and the
    chain is left to the generic evidence: the first node reads the graph input (the root), and every other
    node has only the root spread along the data, which is no evidence: unattributed, with that reason."""
    n = 3000
    nodes = [
        helper.make_node("Frob", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}", f"y{i}"], name=f"N{i}", domain="fz")
        for i in range(n)
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(f"y{n - 1}", TensorProto.FLOAT, [2])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("fz", 1)])
    old = Provenance(
        tuple(
            ProvenanceNode(
                f"O{i}", "Relu", f"enc.layer.{i % 2}", "scope", (), ("x" if i == 0 else f"y{i - 1}",), (f"y{i}",)
            )
            for i in range(n)
        )
    )
    proto.metadata_props.add(key=schema.PROVENANCE_KEY, value=encode_provenance(old))
    start = time.perf_counter()
    _, summary = _annotate(proto)
    assert time.perf_counter() - start < 20.0
    assert summary.nodes == n and summary.attributed == 1
    assert {u.reason for u in summary.unattributed} == {ONLY_THE_ROOT}


# --- random metadata ---------------------------------------------------------------------------------


def _annotated_model(data: st.DataObject) -> onnx.ModelProto:
    annotated, _ = _annotate(random_model(data))
    return annotated


def _mutate(text: str, data: st.DataObject) -> str:
    how = data.draw(st.sampled_from(["truncate", "flip", "json", "text", "duplicate", "empty"]))
    if how == "truncate":
        return text[: data.draw(st.integers(0, max(0, len(text) - 1)))]
    if how == "flip" and text:
        i = data.draw(st.integers(0, len(text) - 1))
        return text[:i] + data.draw(st.characters(codec="utf-8")) + text[i + 1 :]
    if how == "json":
        return json.dumps(data.draw(JSON))
    if how == "text":
        return str(data.draw(st.text(max_size=20)))
    if how == "duplicate":
        return text + text
    return ""


_MODEL_KEYS = (
    schema.SCHEMA_VERSION_KEY,
    schema.MODULES_KEY,
    schema.EXPORT_KEY,
    schema.SUMMARY_KEY,
    schema.PROVENANCE_KEY,
    schema.MODULE_OUTPUTS_KEY,
)


def _exercise(hierarchy: object) -> None:
    retriever = HierarchyRetriever(hierarchy)
    for module in retriever.tree:
        retriever.get_module_stats(module)
        retriever.get_nodes_by_module(module, subtree=True, spanning=True)
    for node in retriever.nodes:
        retriever.get_node_path(node.name)
        retriever.get_source_modules(node.name)
        retriever.get_module_of_node(node.name)
    retriever.group_operations_by_hierarchy(2)
    retriever.diff(retriever)


@given(st.data())
def test_malformed_model_metadata_gets_a_schema_error(data: st.DataObject) -> None:
    proto = _annotated_model(data)
    props = {p.key: p.value for p in proto.metadata_props}
    for key in data.draw(st.lists(st.sampled_from(_MODEL_KEYS), min_size=1, max_size=3, unique=True)):
        if data.draw(st.integers(0, 9)) == 0:
            props.pop(key, None)
        else:
            props[key] = _mutate(props.get(key, ""), data)
    note(repr(props))
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    try:
        hierarchy = read_hierarchy(proto)
    except MissingHierarchyError:
        assert schema.SCHEMA_VERSION_KEY not in props
    except SchemaError as e:
        assert any(key in str(e) for key in (*_MODEL_KEYS, "module tree")), str(e)
    else:
        _exercise(hierarchy)
    try:
        annotate_proto(proto, TREE, ExportInfo())  # reads the provenance
    except SchemaError as e:
        assert schema.PROVENANCE_KEY in str(e)


@given(st.data())
def test_malformed_node_metadata_gets_a_schema_error(data: st.DataObject) -> None:
    proto = _annotated_model(data)
    nodes = all_nodes(proto.graph)
    for _ in range(data.draw(st.integers(1, 3))):
        node = data.draw(st.sampled_from(nodes))
        key = data.draw(
            st.sampled_from(
                [
                    schema.NODE_MODULE_KEY,
                    schema.NODE_SOURCES_KEY,
                    schema.NODE_SOURCE_KEY,
                    schema.NODE_REASON_KEY,
                    schema.NAMESPACE_KEY,
                ]
            )
        )
        value = data.draw(st.sampled_from(list(TREE)) | st.text(max_size=12) | JSON.map(json.dumps))
        node.metadata_props.add(key=key, value=value)
    try:
        hierarchy = read_hierarchy(proto)
    except SchemaError as e:
        assert schema.NODE_MODULE_KEY in str(e) or schema.NODE_SOURCES_KEY in str(e), str(e)
    else:
        _exercise(hierarchy)


@given(st.data())
def test_malformed_provenance_gets_a_schema_error(data: st.DataObject) -> None:
    text = encode_provenance(
        Provenance(
            tuple(
                ProvenanceNode(n.name, n.op_type, "enc", "scope", (), tuple(n.input), tuple(n.output))
                for n in random_model(data).graph.node
            )
        )
    )
    kind = data.draw(st.sampled_from(["text", "payload"]))
    if kind == "text":
        value = _mutate(text, data)
    else:
        payload = data.draw(
            st.fixed_dictionaries({"v": st.sampled_from([1, 1, 2, "1", None]), "s": JSON, "n": JSON})
            | st.fixed_dictionaries(
                {
                    "v": st.just(1),
                    "s": st.lists(st.text(max_size=4), max_size=4),
                    "n": st.lists(
                        st.lists(st.integers(-2, 5) | st.lists(st.integers(-1, 5), max_size=3), max_size=8), max_size=4
                    ),
                }
            )
        )
        value = base64.b64encode(zlib.compress(json.dumps(payload).encode())).decode()
    try:
        decoded = decode_provenance({schema.PROVENANCE_KEY: value})
    except SchemaError as e:
        assert schema.PROVENANCE_KEY in str(e)
        return
    assert decoded is not None
    proto = random_model(data)
    proto.metadata_props.add(key=schema.PROVENANCE_KEY, value=value)
    annotated, summary = _annotate(proto)  # re-attribution from it: every node still accounted for
    _check_accounted_for(annotated)
    assert summary.nodes == len(all_nodes(proto.graph))


@given(st.data())
def test_random_provenance_from_a_related_graph_is_used_safely(data: st.DataObject) -> None:
    """The graph "optimized": some nodes renamed, some removed; re-attribution places what it can."""
    proto = random_model(data)
    annotated, _ = _annotate(proto)
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1)))
    for node in annotated.graph.node:
        del node.metadata_props[:]  # what ONNX Runtime's optimizer does
        if rng.random() < 0.3:
            node.name = f"Fused_{rng.randrange(3)}"
        if rng.random() < 0.2:
            node.op_type = "Attention"
    ir.serde.deserialize_model(annotated)  # still a graph onnx_ir reads
    again, summary = _annotate(annotated)
    _check_accounted_for(again)
    assert summary.nodes == len(all_nodes(again.graph))
    final, _ = _annotate(again)
    assert final.SerializeToString() == again.SerializeToString()
