"""Walk order over subgraphs, for protos and onnx_ir, on a hand-built graph whose order is written out here."""

from __future__ import annotations

import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

from optimum_hierarchy.errors import InvalidModelFileError
from optimum_hierarchy.walk import check_text, find_non_text, iter_ir_sites, iter_proto_nodes, subgraphs


def _value(name: str, elem_type: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, [])


def _model() -> onnx.ModelProto:
    """main: A, If(else: E; then: B, Loop(body: C, D)), F (``helper`` stores attributes sorted by name)."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="C"),
            helper.make_node("Add", ["v_in", "b"], ["v_out"], name="D"),
        ],
        "body",
        [_value("i", TensorProto.INT64), _value("cond_in", TensorProto.BOOL), _value("v_in")],
        [_value("cond_out", TensorProto.BOOL), _value("v_out")],
    )
    then = helper.make_graph(
        [
            helper.make_node("Neg", ["a"], ["b"], name="B"),
            helper.make_node("Loop", ["n", "", "a"], ["loop_out"], name="Loop", body=body),
        ],
        "then",
        [],
        [_value("loop_out")],
    )
    other = helper.make_graph([helper.make_node("Abs", ["a"], ["e"], name="E")], "else", [], [_value("e")])
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["a"], name="A"),
            helper.make_node("If", ["c"], ["if_out"], name="If", then_branch=then, else_branch=other),
            helper.make_node("Sigmoid", ["if_out"], ["y"], name="F"),
        ],
        "main",
        [_value("x"), _value("c", TensorProto.BOOL), _value("n", TensorProto.INT64)],
        [_value("y")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


EXPECTED = [
    ("A", "main"),
    ("If", "main"),
    ("E", "else"),
    ("B", "then"),
    ("Loop", "then"),
    ("C", "body"),
    ("D", "body"),
    ("F", "main"),
]
"""Depth first: each node, then the nodes of its graph attributes in attribute order."""


def test_proto_walk_order() -> None:
    found = [(node.name, graph) for node, graph in iter_proto_nodes(_model().graph)]
    assert found == EXPECTED


def test_ir_walk_order_and_parents() -> None:
    sites = list(iter_ir_sites(ir.serde.deserialize_model(_model()).graph))
    assert [(s.node.name, s.graph_name) for s in sites] == EXPECTED
    parents = {s.node.name: s.parent.name if s.parent is not None else None for s in sites}
    assert parents == {"A": None, "If": None, "B": "If", "Loop": "If", "C": "Loop", "D": "Loop", "E": "If", "F": None}


def test_subgraphs_in_attribute_order() -> None:
    model = _model()
    relu, if_node, _ = model.graph.node
    assert list(subgraphs(relu)) == []
    assert [a.name for a in if_node.attribute] == ["else_branch", "then_branch"]
    assert [g.name for g in subgraphs(if_node)] == ["else", "then"]
    loop = if_node.attribute[1].g.node[1]
    assert [g.name for g in subgraphs(loop)] == ["body"]
    # A GRAPHS attribute gives each of its graphs, in place among the node's other attributes.
    first, second, third = (helper.make_graph([], name, [], []) for name in ("g1", "g2", "g3"))
    custom = helper.make_node("Custom", [], [], domain="test", one=first, size=3, many=[second, third])
    assert [a.name for a in custom.attribute] == ["many", "one", "size"]  # helper sorts attributes by name
    assert [g.name for g in subgraphs(custom)] == ["g2", "g3", "g1"]


def test_subgraph_nodes_are_reached_when_protos_are_edited() -> None:
    """The walks hand out the proto's own messages: an edit through them is an edit of the model."""
    model = _model()
    for node, _ in iter_proto_nodes(model.graph):
        node.doc_string = "seen"
    assert all(n.doc_string == "seen" for n in model.graph.node[1].attribute[1].g.node[1].attribute[0].g.node)


def _broken(model: onnx.ModelProto, text: str) -> onnx.ModelProto:
    """``model`` with the UTF-8 of ``text`` (unique in it) replaced by invalid UTF-8 of the same length."""
    data = model.SerializeToString()
    encoded = text.encode()
    assert data.count(encoded) == 1
    parsed = onnx.ModelProto()
    parsed.ParseFromString(data.replace(encoded, b"\xff" * len(encoded)))
    return parsed


def test_text_check_reaches_a_loop_body_inside_a_branch() -> None:
    model = _model()
    assert find_non_text(model) is None
    check_text(model, "m.onnx")
    model.graph.node[1].attribute[1].g.node[1].attribute[0].g.node[1].output[0] = "v_out_tensor_name"
    broken = _broken(model, "v_out_tensor_name")
    assert find_non_text(broken) == "a name or metadata entry of node 'D'"
    with pytest.raises(InvalidModelFileError, match=r"^m\.onnx: not a valid ONNX model: a name or metadata entry"):
        check_text(broken, "m.onnx")
