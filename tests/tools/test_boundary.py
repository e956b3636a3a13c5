"""Module boundaries on a hand-annotated graph with an ``If``, each expectation written out from the drawing below.

main graph (``x``, ``c`` inputs; ``enc.dense.weight``, ``head.weight`` initializers; ``y`` output)::

    0 /enc/dense/MatMul   MatMul(x, enc.dense.weight)  -> m
    1 /enc/act/Relu       Relu(m)                      -> r
    2 /enc/If             If(c) -> i
                            then: /enc/branch/Add   Add(r, x) -> t      (reads r and x from outside)
                            else: /enc/branch/Neg   Neg(m)    -> e      (reads m from outside)
    3 /head/MatMul        MatMul(i, head.weight)       -> h
    4 /head/Add           Add(h, r)                    -> y
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optimum_hierarchy.annotation.file import annotate_proto
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.retriever import HierarchyRetriever
from optimum_hierarchy.schema import NODE_MODULE_KEY, ModuleInfo, ModuleTree
from optimum_hierarchy.tools.boundary import (
    BoundaryFinder,
    ModuleBoundary,
    module_boundary,
    outer_scope_inputs,
    tensor_types,
)

W = "enc.dense.weight"
HW = "head.weight"


def _float(name: str, shape: list[int | str | None] | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _model() -> onnx.ModelProto:
    then = helper.make_graph(
        [helper.make_node("Add", ["r", "x"], ["t"], name="/enc/branch/Add")], "then", [], [_float("t")]
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["m"], ["e"], name="/enc/branch/Neg")], "else", [], [_float("e")]
    )
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", W], ["m"], name="/enc/dense/MatMul"),
            helper.make_node("Relu", ["m"], ["r"], name="/enc/act/Relu"),
            helper.make_node("If", ["c"], ["i"], name="/enc/If", then_branch=then, else_branch=other),
            helper.make_node("MatMul", ["i", HW], ["h"], name="/head/MatMul"),
            helper.make_node("Add", ["h", "r"], ["y"], name="/head/Add"),
        ],
        "main",
        [_float("x", [2, 3]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [_float("y", [2, 3])],
        initializer=[
            numpy_helper.from_array(rng.standard_normal((3, 3)).astype(np.float32), W),
            numpy_helper.from_array(rng.standard_normal((3, 3)).astype(np.float32), HW),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    tree = ModuleTree(
        [ModuleInfo("", "Root"), *(ModuleInfo(p, "M") for p in ("enc", "enc.dense", "enc.act", "enc.branch", "head"))]
    )
    annotate_proto(model, tree)
    return model


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    proto = _model()
    # The annotation is the premise of every expectation below: check it with plain onnx.
    modules = {
        n.name: {p.key: p.value for p in n.metadata_props}[NODE_MODULE_KEY]
        for n in (*proto.graph.node, *(n for a in proto.graph.node[2].attribute for n in a.g.node))
    }
    assert modules == {
        "/enc/dense/MatMul": "enc.dense",
        "/enc/act/Relu": "enc.act",
        "/enc/If": "enc",
        "/head/MatMul": "head",
        "/head/Add": "head",
        "/enc/branch/Add": "enc.branch",
        "/enc/branch/Neg": "enc.branch",
    }
    return proto


@pytest.mark.parametrize(
    "expected",
    [
        # The If's branches read r, x and m from outside the If: x is an input of enc, r and m are its own.
        ModuleBoundary("enc", (0, 1, 2), ("x", "c"), (W,), ("r", "i")),
        ModuleBoundary("enc.dense", (0,), ("x",), (W,), ("m",)),  # m: read by Relu and by the else branch, outside
        ModuleBoundary("enc.act", (1,), ("m",), (), ("r",)),  # r: read by the then branch and by head
        ModuleBoundary("head", (3, 4), ("i", "r"), (HW,), ("y",)),  # y: a graph output
        ModuleBoundary("", (0, 1, 2, 3, 4), ("x", "c"), (W, HW), ("y",)),
    ],
    ids=lambda b: b.module or "<root>",
)
def test_boundary(model: onnx.ModelProto, expected: ModuleBoundary) -> None:
    assert module_boundary(model, HierarchyRetriever(model), expected.module) == expected


def test_finder_gives_the_same_boundaries_for_several_modules(model: onnx.ModelProto) -> None:
    retriever = HierarchyRetriever(model)
    finder = BoundaryFinder(model, retriever)
    modules = ["head", "enc", "enc.act", "", "enc.dense"]
    assert [finder.boundary(m) for m in modules] == [module_boundary(model, retriever, m) for m in modules]


def test_a_module_without_main_graph_nodes_or_unknown(model: onnx.ModelProto) -> None:
    retriever = HierarchyRetriever(model)
    with pytest.raises(HierarchyError, match=r"Module 'enc\.branch' has no node in the main graph"):
        module_boundary(model, retriever, "enc.branch")
    with pytest.raises(KeyError):
        module_boundary(model, retriever, "nope")


def test_outer_scope_inputs_follow_scopes() -> None:
    """Names a body defines (its inputs, initializers, earlier nodes' outputs) are local, at any depth."""
    inner = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="n1"),
            helper.make_node("Add", ["v_in", "k"], ["s"], name="n2"),  # k: defined by the branch, outer for the body
            helper.make_node("Mul", ["s", "w"], ["v_out"], name="n3"),  # w: main graph
        ],
        "body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []), _float("v_in"), _float("cond_in")],
        [_float("cond_out"), _float("v_out"), _float("z")],  # z: passed through from the main graph
    )
    branch = helper.make_graph(
        [
            helper.make_node("Neg", ["a"], ["k"], name="b1"),  # a: main graph
            helper.make_node("Loop", ["n", "", "k"], ["out", "zs"], name="loop", body=inner),
            helper.make_node("Add", ["out", "bias"], ["res"], name="b2"),  # bias: the branch's own initializer
        ],
        "then",
        [],
        [_float("res")],
        initializer=[numpy_helper.from_array(np.zeros(1, np.float32), "bias")],
    )
    other = helper.make_graph([], "else", [], [_float("a")])  # returns a main-graph tensor as it is
    node = helper.make_node("If", ["c"], ["o"], then_branch=branch, else_branch=other)
    # In first-use order; attributes are stored sorted by name, so the else branch is read first.
    assert outer_scope_inputs(node) == ["a", "n", "w", "z"]
    assert outer_scope_inputs(helper.make_node("Relu", ["a"], ["b"])) == []


def test_tensor_types_from_the_file_and_from_onnx_runtime(model: onnx.ModelProto, tmp_path: Path) -> None:
    expected = {
        "x": helper.make_tensor_type_proto(TensorProto.FLOAT, [2, 3]),  # graph input
        "y": helper.make_tensor_type_proto(TensorProto.FLOAT, [2, 3]),  # graph output
        "m": helper.make_tensor_type_proto(TensorProto.FLOAT, [2, 3]),  # inferred
        "c": helper.make_tensor_type_proto(TensorProto.BOOL, []),
    }
    before = model.SerializeToString()
    assert tensor_types(model, ["m", "x", "y", "c", "m"]) == expected
    assert model.SerializeToString() == before
    # Weights in external data are not read: the same types come out of the file read without them.
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, size_threshold=0, location="m.onnx_data")
    light = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in light.graph.initializer)
    (tmp_path / "m.onnx_data").unlink()
    assert tensor_types(light, ["m", "x"]) == {"m": expected["m"], "x": expected["x"]}
