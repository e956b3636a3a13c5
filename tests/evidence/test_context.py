"""Context evidence (``evidence/context.py``) on small hand-built graphs: a node placed from its neighbours' modules,
the root only with a witness, groups of unattributed nodes, subgraph bodies, order independence and bounded work.

Each expectation is read off the rule as ``context.py``'s module docstring and docs/attribution.md state it
("How a node is attributed", item 4, and "Honest coverage"), never off the code's output. Direct evidence is
given by hand (the ``seeds``): these tests call :func:`infer_from_context` itself, not the pass around it.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Iterator, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from optimum_hierarchy.evidence import context
from optimum_hierarchy.evidence.base import GraphView
from optimum_hierarchy.evidence.context import NO_NEIGHBOUR_EVIDENCE, ONLY_THE_ROOT, infer_from_context
from optimum_hierarchy.provenance import NodeTable
from optimum_hierarchy.schema import AttributionSource, ModuleInfo, ModuleTree, ParameterInfo
from optimum_hierarchy.walk import iter_ir_sites

LINEAR = (ParameterInfo("weight", (2, 2)), ParameterInfo("bias", (2,)))
TREE = ModuleTree(
    [
        ModuleInfo("", "Root", parameters=(ParameterInfo("scale", (2,)),)),
        ModuleInfo("encoder", "Encoder"),
        ModuleInfo("encoder.layer", "ModuleList"),
        ModuleInfo("encoder.layer.0", "Layer"),
        ModuleInfo("encoder.layer.0.query", "torch.nn.Linear", parameters=LINEAR),
        ModuleInfo("encoder.layer.1", "Layer"),
        ModuleInfo("encoder.layer.1.query", "torch.nn.Linear", parameters=LINEAR),
        ModuleInfo("head", "torch.nn.Linear", parameters=LINEAR),
    ]
)
Q0, Q1, L0, LAYERS, HEAD, ROOT = (
    "encoder.layer.0.query",
    "encoder.layer.1.query",
    "encoder.layer.0",
    "encoder.layer",
    "head",
    "",
)

# The kinds of evidence docs/attribution.md lists as read off the node itself, and the two inferred from neighbours.
DIRECT = ("metadata", "scope", "parameter", "fusion", "rule", "name")
INFERRED = ("context", "subgraph")

Seeds = dict[str, tuple[str, str]]


@dataclasses.dataclass
class Outcome:
    """What :func:`infer_from_context` did: every node's (module, source), or its reason for being left out."""

    placed: dict[str, tuple[str, str]]
    left: dict[str, str]
    assigned: list[str]
    """Names of the nodes it assigned, in the order it assigned them (each once)."""

    def __getitem__(self, name: str) -> tuple[str, str]:
        return self.placed[name]


def tensor(name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones((2,), dtype=np.float32), name)


def const(name: str, out: str) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [out], name=name, value=tensor(f"{name}.value"))


def op(op_type: str, inputs: Sequence[str], out: str, name: str) -> onnx.NodeProto:
    return helper.make_node(op_type, list(inputs), [out], name=name)


def graph_outputs(nodes: Sequence[onnx.NodeProto]) -> list[str]:
    """Every tensor the nodes produce and none of them reads."""
    read = {i for n in nodes for i in n.input}
    return [o for n in nodes for o in n.output if o not in read]


def build(nodes: Sequence[onnx.NodeProto], inits: Sequence[str] = (), outputs: Sequence[str] | None = None) -> ir.Model:
    graph = helper.make_graph(
        list(nodes),
        "main",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [2]) for o in (outputs or graph_outputs(nodes))],
        initializer=[tensor(name) for name in inits],
    )
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


def infer(model: ir.Model, seeds: Seeds, unplaced_before: dict[str, str] | None = None, root: str = ROOT) -> Outcome:
    sites = list(iter_ir_sites(model.graph))
    names = [site.node.name or "" for site in sites]
    index = {name: i for i, name in enumerate(names)}
    assert len(index) == len(sites), "node names must be unique in these tests"
    table = NodeTable(
        names=names,
        op_types=[s.node.op_type for s in sites],
        inputs=[[(v.name or "") if v is not None else "" for v in s.node.inputs] for s in sites],
        outputs=[[v.name or "" for v in s.node.outputs] for s in sites],
    )
    view = GraphView(TREE, root, sites, table)
    modules = {index[name]: module for name, (module, _) in seeds.items()}
    sources = {index[name]: source for name, (_, source) in seeds.items()}
    assigned: list[str] = []

    def assign(i: int, path: str, source: AttributionSource) -> None:
        assert i not in modules, f"{names[i]} assigned twice"
        assert path in TREE, f"{names[i]} assigned to {path!r}, not a module of the tree"
        modules[i] = path
        sources[i] = source.value
        assigned.append(names[i])

    before = {index[name]: why for name, why in (unplaced_before or {}).items()}
    left = infer_from_context(view, modules, sources, assign, before)
    placed = {names[i]: (modules[i], sources[i]) for i in modules}
    assert placed.keys().isdisjoint(names[i] for i in left), "a node both placed and left"
    assert len(placed) + len(left) == len(sites), "every node is placed or left with a reason"
    return Outcome(placed, {names[i]: why for i, why in left.items()}, assigned)


# --- a node with unattributed neighbours ------------------------------------------------------------------


def between(first: str, second: str, *, first_source: str = "scope", second_source: str = "scope") -> Outcome:
    """``A`` (reads the graph input) -> ``N`` (no evidence) -> ``B``, with ``A`` and ``B`` placed by hand."""
    model = build([op("Relu", ["x"], "a", "A"), op("Neg", ["a"], "n", "N"), op("Relu", ["n"], "y", "B")])
    return infer(model, {"A": (first, first_source), "B": (second, second_source)})


def test_between_two_nodes_of_one_module_it_goes_there() -> None:
    out = between(Q0, Q0)
    assert out["N"] == (Q0, "context")
    assert out.left == {} and out.assigned == ["N"]


def test_between_two_modules_it_goes_to_their_lowest_common_ancestor() -> None:
    """It touches both layers, so only their common ancestor contains it: coarser than the truth, never finer."""
    assert between(Q0, Q1)["N"] == (LAYERS, "context")
    assert between(Q0, L0)["N"] == (L0, "context")
    assert between(L0, Q1)["N"] == (LAYERS, "context")


def test_between_modules_that_meet_only_at_the_root_it_is_refused() -> None:
    """Their LCA is the root, reached by spreading from neighbours: no evidence. Left out, with the reason."""
    out = between(Q0, HEAD)
    assert "N" not in out.placed
    assert out.left == {"N": ONLY_THE_ROOT}


def test_the_sources_of_the_neighbours_do_not_change_a_non_root_answer() -> None:
    """Only a root answer needs a witness; below the root, neighbours placed by context count like any other."""
    assert between(Q0, Q1, first_source="context", second_source="subgraph")["N"] == (LAYERS, "context")


# --- the root needs a witness ------------------------------------------------------------------------------


def test_a_node_reading_a_graph_input_is_witnessed_for_the_root() -> None:
    """A graph input counts as the root, and reading one is the node's own witness."""
    model = build([op("Neg", ["x"], "n", "N"), op("Relu", ["n"], "y", "B")])
    assert infer(model, {"B": (HEAD, "scope")})["N"] == (ROOT, "context")


def test_the_graph_input_is_the_exported_module_not_the_tree_root() -> None:
    """Exporting ``encoder`` alone: a graph input counts as ``encoder`` (the exported module), and ``encoder`` is the
    root that needs a witness; parameter names are relative to it."""
    model = build([op("Neg", ["x"], "n", "N"), op("Relu", ["n"], "y", "B")])
    assert infer(model, {"B": (Q0, "scope")}, root="encoder")["N"] == ("encoder", "context")
    model = build(
        [op("Transpose", ["layer.0.query.weight"], "t", "T"), op("MatMul", ["x", "t"], "y", "B")],
        ["layer.0.query.weight"],
    )
    assert infer(model, {"B": (L0, "scope")}, root="encoder")["T"] == (L0, "context")
    model = build([op("Relu", ["x"], "a", "A"), op("Neg", ["a"], "n", "N"), op("Relu", ["n"], "y", "B")])
    out = infer(model, {"A": (Q0, "scope"), "B": ("encoder", "context")}, root="encoder")
    assert out.left == {"N": ONLY_THE_ROOT}


@pytest.mark.parametrize("side", ["producer", "consumer"])
@pytest.mark.parametrize("source", DIRECT)
def test_a_neighbour_at_the_root_by_direct_evidence_witnesses_the_root(source: str, side: str) -> None:
    out = between(ROOT, HEAD, first_source=source) if side == "producer" else between(HEAD, ROOT, second_source=source)
    assert out["N"] == (ROOT, "context")


@pytest.mark.parametrize("side", ["producer", "consumer"])
@pytest.mark.parametrize("source", INFERRED)
def test_a_neighbour_at_the_root_by_inference_is_no_witness(source: str, side: str) -> None:
    """``N`` computes on data (its input comes from the graph input through ``A``), so it does not only shape
    constants for its consumer: a root its neighbour reached by context or subgraph says nothing about it."""
    out = between(ROOT, HEAD, first_source=source) if side == "producer" else between(HEAD, ROOT, second_source=source)
    assert out.left == {"N": ONLY_THE_ROOT}


@pytest.mark.parametrize("source", DIRECT + INFERRED)
def test_a_constant_shaping_for_a_consumer_at_the_root_goes_there_however_the_consumer_got_there(source: str) -> None:
    model = build([const("K", "k"), op("Add", ["x", "k"], "y", "B")])
    assert infer(model, {"B": (ROOT, source)})["K"] == (ROOT, "context")


def test_a_constant_between_the_root_by_context_and_a_module_goes_to_the_root() -> None:
    """The constant feeds ``B`` (the root, by context) and ``C`` (``head``): LCA the root, witnessed by ``B``."""
    model = build([const("K", "k"), op("Add", ["x", "k"], "b", "B"), op("Mul", ["b", "k"], "y", "C")])
    assert infer(model, {"B": (ROOT, "context"), "C": (HEAD, "scope")})["K"] == (ROOT, "context")


def test_a_parameter_of_the_root_witnesses_the_root() -> None:
    """The root's own parameter is evidence about the node itself (``Evidence.root_witness``: a parameter owner). The
    parameter alone gives the answer (the root), so the source is ``parameter``, as for a weight's transpose below."""
    model = build(
        [op("Relu", ["x"], "a", "A"), op("Mul", ["a", "scale"], "n", "N"), op("Relu", ["n"], "y", "B")], ["scale"]
    )
    assert infer(model, {"A": (Q0, "scope"), "B": (HEAD, "scope")})["N"] == (ROOT, "parameter")


def test_nothing_is_placed_at_the_root_without_a_witness() -> None:
    """A diamond between two subtrees with no graph input, no root neighbour and no root parameter anywhere near
    the unattributed nodes: every one of them has the root as context, and none is placed."""
    model = build(
        [
            op("Relu", ["x"], "a", "A"),
            op("Neg", ["a"], "n1", "N1"),
            op("Abs", ["a"], "n2", "N2"),
            op("Add", ["n1", "n2"], "n3", "N3"),
            const("K", "k"),
            op("Mul", ["n3", "k"], "n4", "N4"),
            op("Relu", ["n4"], "y", "B"),
        ]
    )
    out = infer(model, {"A": (Q0, "scope"), "B": (HEAD, "scope")})
    assert out.left == dict.fromkeys(["N1", "N2", "N3", "K", "N4"], ONLY_THE_ROOT)
    assert out.assigned == []


# --- refused neighbours ------------------------------------------------------------------------------------


def test_a_refused_neighbour_counts_as_somewhere_in_the_root() -> None:
    """``N`` only shapes a constant (``K`` times ``query``'s weight) for ``B`` in ``head``: LCA the root, no
    witness, refused. ``K`` feeds ``N`` and ``C`` (``query``): ``N`` counts as somewhere in the root, so ``K`` cannot
    be put in ``query``; its context is the root, which nothing witnesses, so it is refused too."""
    model = build(
        [
            const("K", "k"),
            op("MatMul", ["k", f"{Q0}.weight"], "n", "N"),
            op("Add", ["x", "n"], "b", "B"),
            op("Mul", ["x", "k"], "y", "C"),
        ],
        [f"{Q0}.weight"],
    )
    out = infer(model, {"B": (HEAD, "scope"), "C": (Q0, "scope")})
    assert out.left == {"N": ONLY_THE_ROOT, "K": ONLY_THE_ROOT}
    # With N in query instead, K goes there too.
    assert infer(model, {"B": (HEAD, "scope"), "C": (Q0, "scope"), "N": (Q0, "scope")})["K"] == (Q0, "context")


def test_nodes_left_unattributed_before_stay_so_with_their_reason_and_count_as_the_root() -> None:
    """``unplaced_before``: they stay unattributed (even ``M``, which sits between two nodes of one module), keep
    their reason, and count as refused for their neighbours: the constant next to ``M`` is not put in ``query``."""
    model = build(
        [
            op("Relu", ["x"], "a", "A"),
            const("K", "k"),
            op("Add", ["a", "k"], "m", "M"),
            op("Relu", ["m"], "b", "B"),
            op("Mul", ["b", "k"], "y", "C"),
        ]
    )
    seeds = {"A": (Q0, "scope"), "B": (Q0, "scope"), "C": (Q0, "scope")}
    out = infer(model, seeds, unplaced_before={"M": "left out last time"})
    assert out.left == {"M": "left out last time", "K": ONLY_THE_ROOT}
    # Without it, M goes where both its neighbours are, and so does the constant.
    again = infer(model, seeds)
    assert again["M"] == (Q0, "context") and again["K"] == (Q0, "context")


# --- whose evidence counts ---------------------------------------------------------------------------------


def test_a_node_that_only_shapes_constants_ignores_its_producers() -> None:
    """``I`` reads only a constant: it shapes constants for its consumer, so its producer is not its evidence."""
    model = build([const("K", "k"), op("Identity", ["k"], "i", "I"), op("Add", ["x", "i"], "y", "B")])
    assert infer(model, {"K": (Q1, "scope"), "B": (Q0, "scope")})["I"] == (Q0, "context")


def test_a_node_computing_on_data_counts_its_producers() -> None:
    """The same graph with ``I`` reading data (``A`` reads the graph input): its producer counts."""
    model = build([op("Relu", ["x"], "a", "A"), op("Identity", ["a"], "i", "I"), op("Add", ["x", "i"], "y", "B")])
    assert infer(model, {"A": (Q1, "scope"), "B": (Q0, "scope")})["I"] == (LAYERS, "context")


def test_the_owners_of_the_parameters_it_reads_count() -> None:
    """A transpose of ``query``'s weight feeding ``query`` is in ``query``, the parameter alone saying so; one
    feeding ``encoder.layer.0`` is in ``encoder.layer.0`` (neighbours and parameter together: ``context``); one
    feeding ``head`` touches both ``query`` and ``head``, whose LCA is the root, unwitnessed: refused."""
    model = build(
        [
            op("Transpose", [f"{Q0}.weight"], "t1", "T1"),
            op("MatMul", ["x", "t1"], "b1", "B1"),
            op("Transpose", [f"{Q0}.weight"], "t2", "T2"),
            op("MatMul", ["x", "t2"], "b2", "B2"),
            op("Transpose", [f"{Q0}.weight"], "t3", "T3"),
            op("MatMul", ["x", "t3"], "b3", "B3"),
        ],
        [f"{Q0}.weight"],
    )
    out = infer(model, {"B1": (Q0, "scope"), "B2": (L0, "scope"), "B3": (HEAD, "scope")})
    assert out["T1"] == (Q0, "parameter")
    assert out["T2"] == (L0, "context")
    assert out.left == {"T3": ONLY_THE_ROOT}


def test_evidence_waits_for_every_neighbour() -> None:
    """``K`` feeds ``B`` (``query`` of layer 0) and ``I``, which is unattributed and feeds only layer 1: ``K`` is
    placed once ``I`` is known (layer 1), so it goes to the layers' ancestor, never to layer 0 alone."""
    model = build(
        [
            const("K", "k"),
            op("Add", ["x", "k"], "b", "B"),
            op("Identity", ["k"], "i", "I"),
            op("Mul", ["x", "i"], "y", "C"),
        ]
    )
    out = infer(model, {"B": (Q0, "scope"), "C": (Q1, "scope")})
    assert out["I"] == (Q1, "context")
    assert out["K"] == (LAYERS, "context")


# --- groups of unattributed nodes ----------------------------------------------------------------------------


def chain(length: int) -> list[onnx.NodeProto]:
    """``A`` (reads the graph input) -> ``N1`` -> ... -> ``N<length>`` -> ``B``."""
    names = [f"N{k}" for k in range(1, length + 1)]
    nodes = [op("Relu", ["x"], "a", "A")]
    for k, name in enumerate(names):
        nodes.append(op("Neg", ["a" if k == 0 else f"n{k}"], f"n{k + 1}", name))
    nodes.append(op("Relu", [f"n{length}"], "y", "B"))
    return nodes


@pytest.mark.parametrize(("first", "second", "expected"), [(Q0, Q0, Q0), (Q0, Q1, LAYERS), (L0, Q0, L0)])
def test_a_chain_of_unattributed_nodes_gets_the_lca_of_everything_around_it(
    first: str, second: str, expected: str
) -> None:
    out = infer(build(chain(3)), {"A": (first, "scope"), "B": (second, "scope")})
    assert {name: out[name] for name in ("N1", "N2", "N3")} == dict.fromkeys(("N1", "N2", "N3"), (expected, "context"))


def test_a_chain_whose_group_reaches_the_root_places_only_the_witnessed_nodes() -> None:
    """``N1`` reads the graph input (its own witness); ``N2`` and ``N3`` have none (``N1`` is at the root by
    context only): each node needs its own witness, so they are refused."""
    nodes = [op("Neg", ["x"], "n1", "N1"), op("Neg", ["n1"], "n2", "N2"), op("Neg", ["n2"], "n3", "N3")]
    out = infer(build([*nodes, op("Relu", ["n3"], "y", "B")]), {"B": (HEAD, "scope")})
    assert out["N1"] == (ROOT, "context")
    assert out.left == {"N2": ONLY_THE_ROOT, "N3": ONLY_THE_ROOT}


def test_constants_serving_a_witnessed_node_of_their_group_go_with_it() -> None:
    """``K`` only shapes a constant for ``N``, which reads the graph input; both end up at the root, ``K`` by the
    rule of constants serving a consumer at the root."""
    model = build([const("K", "k"), op("Add", ["x", "k"], "n", "N"), op("Relu", ["n"], "y", "B")])
    out = infer(model, {"B": (HEAD, "scope")})
    assert out["N"] == (ROOT, "context") and out["K"] == (ROOT, "context")


def test_a_chain_of_constants_settles_on_its_consumer() -> None:
    model = build(
        [
            const("K", "k0"),
            op("Identity", ["k0"], "k1", "I1"),
            op("Cast", ["k1"], "k2", "I2"),
            op("Add", ["x", "k2"], "y", "B"),
        ]
    )
    out = infer(model, {"B": (HEAD, "scope")})
    assert {name: out[name] for name in ("K", "I1", "I2")} == dict.fromkeys(("K", "I1", "I2"), (HEAD, "context"))


def test_nodes_whose_neighbours_are_all_unattributed_stay_unattributed() -> None:
    """A constant feeding only a graph output has no neighbour at all; ``K2 -> I`` only neighbour each other."""
    model = build(
        [const("K1", "y1"), const("K2", "k2"), op("Identity", ["k2"], "y2", "I"), op("Relu", ["x"], "y3", "B")]
    )
    out = infer(model, {"B": (HEAD, "scope")})
    assert out.left == dict.fromkeys(["K1", "K2", "I"], NO_NEIGHBOUR_EVIDENCE)
    assert out.assigned == []


def test_nothing_to_place_and_an_empty_graph() -> None:
    model = build([op("Relu", ["x"], "a", "A"), op("Relu", ["a"], "y", "B")])
    out = infer(model, {"A": (Q0, "scope"), "B": (Q1, "scope")})
    assert out.left == {} and out.assigned == []
    empty = build([], outputs=["x"])
    assert infer(empty, {}).placed == {}


# --- subgraph bodies -----------------------------------------------------------------------------------------


def if_model(then_nodes: list[onnx.NodeProto], else_nodes: list[onnx.NodeProto]) -> ir.Model:
    """``A`` reads the graph input; ``C`` is the condition of ``IF``, whose branches are the nodes given."""

    def branch(nodes: list[onnx.NodeProto], name: str) -> onnx.GraphProto:
        return helper.make_graph(
            nodes, name, [], [helper.make_tensor_value_info(o, TensorProto.FLOAT, [2]) for o in graph_outputs(nodes)]
        )

    outs = [f"if_out{k}" for k in range(len(graph_outputs(then_nodes)))]
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="A"),
        helper.make_node(
            "Constant", [], ["cond"], name="C", value=helper.make_tensor("v", TensorProto.BOOL, [], [True])
        ),
        helper.make_node(
            "If",
            ["cond"],
            outs,
            name="IF",
            then_branch=branch(then_nodes, "then"),
            else_branch=branch(else_nodes, "else"),
        ),
    ]
    return build(nodes, outputs=["a", *outs])


def test_an_if_is_placed_from_the_nodes_of_its_bodies() -> None:
    model = if_model([op("Relu", ["x"], "t", "T")], [op("Neg", ["x"], "e", "E")])
    out = infer(model, {"A": (HEAD, "scope"), "T": (Q0, "scope"), "E": (Q1, "scope")})
    assert out["IF"] == (LAYERS, "context")
    assert out["C"] == (LAYERS, "context")  # its condition only shapes a constant for it


def test_a_body_node_with_no_evidence_inherits_the_node_owning_the_body() -> None:
    model = if_model([op("Relu", ["x"], "t", "T"), const("TK", "tk")], [op("Neg", ["x"], "e", "E"), const("EK", "ek")])
    out = infer(model, {"A": (HEAD, "scope"), "T": (Q0, "scope"), "E": (Q1, "scope"), "IF": (L0, "scope")})
    assert out["TK"] == (L0, "subgraph") and out["EK"] == (L0, "subgraph")


def test_a_body_node_of_a_node_at_the_root_is_witnessed() -> None:
    """``T`` reads ``A`` (``query``) and feeds ``U`` (``head``) inside the ``If``'s body: LCA the root; the ``If`` is
    at the root by its own scope, so ``T`` is in the body of a node at the root, a documented witness."""
    model = if_model([op("Neg", ["a"], "t", "T"), op("Relu", ["t"], "u", "U")], [op("Neg", ["x"], "e", "E")])
    out = infer(
        model,
        {"A": (Q0, "scope"), "U": (HEAD, "scope"), "E": (HEAD, "scope"), "IF": (ROOT, "scope"), "C": (ROOT, "scope")},
    )
    assert out.placed.get("T") == (ROOT, "context")


# --- order independence --------------------------------------------------------------------------------------


def topological_orders(nodes: Sequence[onnx.NodeProto]) -> Iterator[list[onnx.NodeProto]]:
    """Every order of ``nodes`` in which each tensor is produced before it is read (graph input ``x`` aside)."""
    produced_by = {o: n.name for n in nodes for o in n.output}
    needs = {n.name: {produced_by[i] for i in n.input if i in produced_by} for n in nodes}
    for order in itertools.permutations(nodes):
        seen: set[str] = set()
        for n in order:
            if not needs[n.name] <= seen:
                break
            seen.add(n.name)
        else:
            yield list(order)


BRANCHES = [
    # Layer 0: a constant and a computing node, each waiting for the other: one group between query and its layer.
    op("Relu", ["x"], "a", "A"),
    const("K", "k"),
    op("Add", ["a", "k"], "n", "N"),
    op("Relu", ["n"], "y0", "B"),
    # Layer 1 to head: refused, and a graph-input reader witnessed for the root.
    op("Relu", ["x"], "c", "C"),
    op("Neg", ["c"], "m", "M"),
    op("Abs", ["x"], "r", "R"),
    op("Add", ["m", "r"], "y1", "D"),
]
BRANCH_SEEDS = {"A": (Q0, "scope"), "B": (L0, "scope"), "C": (Q1, "scope"), "D": (HEAD, "scope")}


def test_the_outcome_does_not_depend_on_the_order_of_the_nodes() -> None:
    orders = list(topological_orders(BRANCHES))
    assert len(orders) > 100
    expected_placed = {**BRANCH_SEEDS, "K": (L0, "context"), "N": (L0, "context"), "R": (ROOT, "context")}
    for order in random.Random(0).sample(orders, 100):
        out = infer(build(order), dict(BRANCH_SEEDS))
        assert out.placed == expected_placed, [n.name for n in order]
        assert out.left == {"M": ONLY_THE_ROOT}, [n.name for n in order]


# ``P`` and ``Q`` are constants read by the constant-shaping ``S``; ``S`` is read by ``N``, which computes (through
# ``A``). ``P`` also feeds layer 0's query, ``Q`` layer 1's; ``A`` and ``B`` are in layer 0. No node can be placed
# alone (each waits for another), and all four are one connected group: P - S - Q, S - N.
GROUP = [
    const("P", "p"),
    const("Q", "q"),
    op("Relu", ["x"], "a", "A"),
    op("Add", ["x", "p"], "y0", "U0"),
    op("Add", ["x", "q"], "y1", "U1"),
    op("Add", ["p", "q"], "s", "S"),
    op("Add", ["a", "s"], "n", "N"),
    op("Relu", ["n"], "y2", "B"),
]
GROUP_SEEDS = {"A": (L0, "scope"), "B": (L0, "scope"), "U0": (Q0, "scope"), "U1": (Q1, "scope")}


def test_a_connected_group_gets_one_lca_whatever_the_order() -> None:
    orders = list(topological_orders(GROUP))
    assert len(orders) > 10
    firsts = {next(n.name for n in order if n.name in "PQ") for order in orders}
    assert firsts == {"P", "Q"}  # both constants come first in some order
    for order in orders:
        out = infer(build(order), dict(GROUP_SEEDS))
        assert {name: out.placed.get(name) for name in "PQSN"} == dict.fromkeys("PQSN", (LAYERS, "context")), [
            n.name for n in order
        ]


def test_the_same_graph_twice_gives_the_same_outcome() -> None:
    model_nodes = [*chain(5), const("K", "k"), op("Mul", ["x", "k"], "z", "Z")]
    first = infer(build(model_nodes), {"A": (Q0, "scope"), "B": (Q1, "scope"), "Z": (HEAD, "scope")})
    second = infer(build(model_nodes), {"B": (Q1, "scope"), "Z": (HEAD, "scope"), "A": (Q0, "scope")})
    assert first == second


# --- random graphs against the rule, read independently ---------------------------------------------------

PARAMETERS = (f"{Q0}.weight", f"{Q1}.weight", f"{HEAD}.weight", "scale")


def random_graph(rng: random.Random) -> tuple[list[onnx.NodeProto], Seeds, dict[str, str]]:
    """A random DAG of constants and ops reading the graph input, earlier outputs and parameters; some nodes placed
    by hand (direct sources, or ``context`` kept from an earlier annotation), one sometimes left out before."""
    nodes: list[onnx.NodeProto] = []
    for k in range(rng.randint(1, 12)):
        if rng.random() < 0.25:
            nodes.append(const(f"n{k}", f"t{k}"))
            continue
        pool = ["x", *PARAMETERS, *(f"t{j}" for j in range(k))]
        nodes.append(op("Add" if rng.random() < 0.7 else "Identity", [], f"t{k}", f"n{k}"))
        nodes[-1].input.extend(rng.choice(pool) for _ in range(1 if nodes[-1].op_type == "Identity" else 2))
    modules = list(TREE)
    seeds = {n.name: (rng.choice(modules), rng.choice((*DIRECT, "context"))) for n in nodes if rng.random() < 0.4}
    free = [n.name for n in nodes if n.name not in seeds]
    before = {rng.choice(free): "left out last time"} if free and rng.random() < 0.2 else {}
    return nodes, seeds, before


def within(module: str, ancestor: str) -> bool:
    return ancestor in (ROOT, module) or module.startswith(ancestor + ".")


@dataclasses.dataclass
class Neighbourhoods:
    """The rule's neighbours, computed here from the protos: consumers, and for a node computing on data (reaching
    the graph input), its producers; with what is known around each node once ``out`` is done."""

    nodes: list[onnx.NodeProto]
    out: Outcome

    def __post_init__(self) -> None:
        self.producer = {o: n.name for n in self.nodes for o in n.output}
        self.consumers = {n.name: [m.name for m in self.nodes if set(m.input) & set(n.output)] for n in self.nodes}
        self.computes: dict[str, bool] = {}
        for n in self.nodes:
            self.computes[n.name] = any(
                i == "x" or (i in self.producer and self.computes[self.producer[i]]) for i in n.input
            )

    def neighbours(self, node: onnx.NodeProto) -> list[str]:
        found = list(self.consumers[node.name])
        if self.computes[node.name]:
            found += [self.producer[i] for i in node.input if i in self.producer]
        return found

    def known(self, node: onnx.NodeProto) -> list[str]:
        """Parameter owners, the root for a graph input read by a computing node, placed neighbours' modules, and
        the root for a refused neighbour (somewhere in the root)."""
        known = [TREE.owner_of_tensor(i) or ROOT for i in node.input if i in PARAMETERS]
        if self.computes[node.name]:
            known += [ROOT for i in node.input if i == "x"]
        for j in self.neighbours(node):
            if j in self.out.placed:
                known.append(self.out.placed[j][0])
            elif self.out.left[j] != NO_NEIGHBOUR_EVIDENCE:
                known.append(ROOT)
        return known

    def witnessed(self, node: onnx.NodeProto) -> bool:
        """The documented witnesses of the root: it reads a graph input (or a parameter of the root), a neighbour is
        at the root by direct evidence, or it only shapes constants for a consumer at the root."""
        at_root = {j for j, (module, _) in self.out.placed.items() if module == ROOT}
        return (
            (self.computes[node.name] and "x" in node.input)
            or "scale" in node.input
            or any(j in at_root and self.out.placed[j][1] in DIRECT for j in self.neighbours(node))
            or (not self.computes[node.name] and any(j in at_root for j in self.consumers[node.name]))
        )


def test_random_graphs_follow_the_rule() -> None:
    """A node placed from its neighbours is an ancestor of (or is) every module around it; one placed at the root
    has a documented witness; one refused has none; one left with no evidence has nothing known around it. The
    neighbours are computed by the test (:class:`Neighbourhoods`), from the docstring's rule."""
    rng = random.Random(20261206)
    checked = {"placed": 0, "root": 0, "refused": 0, "none": 0}
    for _ in range(400):
        nodes, seeds, before = random_graph(rng)
        out = infer(build(nodes, PARAMETERS), seeds, before)
        assert {name: out.left[name] for name in before} == before
        rule = Neighbourhoods(nodes, out)
        for node in nodes:
            name, known = node.name, rule.known(node)
            if name in out.assigned:
                module, source = out.placed[name]
                assert source in ("context", "parameter"), (nodes, seeds, name)
                # Its own neighbourhood may be empty: a group gets the LCA of everything around the whole group.
                assert all(within(m, module) for m in known), (nodes, seeds, name)
                checked["placed"] += 1
                if module == ROOT:
                    assert rule.witnessed(node), (nodes, seeds, name)
                    checked["root"] += 1
            elif name in out.left and name not in before:
                if out.left[name] == ONLY_THE_ROOT:
                    # Its context is the root (its own, or its group's: LCA of everything around the group),
                    # and nothing witnesses it.
                    assert not rule.witnessed(node), (nodes, seeds, before, name)
                    checked["refused"] += 1
                else:
                    assert out.left[name] == NO_NEIGHBOUR_EVIDENCE
                    assert known == [], (nodes, seeds, name)
                    checked["none"] += 1
    assert min(checked.values()) >= 20, checked


# --- bounded work --------------------------------------------------------------------------------------------


def count_evidence(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = context._ContextPlacer.evidence

    def counted(self: context._ContextPlacer, i: int) -> context.Evidence:
        calls[0] += 1
        return original(self, i)

    monkeypatch.setattr(context._ContextPlacer, "evidence", counted)
    return calls


LONG = 4000


def test_a_long_chain_of_computing_nodes_is_settled_in_linear_work(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build(chain(LONG))
    calls = count_evidence(monkeypatch)
    out = infer(model, {"A": (Q0, "scope"), "B": (Q1, "scope")})
    assert len(out.assigned) == LONG and set(out.assigned) == {f"N{k}" for k in range(1, LONG + 1)}
    assert {out[f"N{k}"] for k in range(1, LONG + 1)} == {(LAYERS, "context")}
    assert calls[0] <= 4 * LONG


def test_a_long_chain_of_constants_is_settled_in_linear_work(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = [const("K0", "k0")]
    nodes += [op("Identity", [f"k{k - 1}"], f"k{k}", f"I{k}") for k in range(1, LONG)]
    model = build([*nodes, op("Add", ["x", f"k{LONG - 1}"], "y", "B")])
    calls = count_evidence(monkeypatch)
    out = infer(model, {"B": (HEAD, "scope")})
    assert len(out.assigned) == LONG
    assert {out[name] for name in out.assigned} == {(HEAD, "context")}
    assert calls[0] <= 4 * LONG


def test_a_long_chain_that_reaches_the_root_is_refused_in_linear_work(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build(chain(LONG))
    calls = count_evidence(monkeypatch)
    out = infer(model, {"A": (Q0, "scope"), "B": (HEAD, "scope")})
    assert out.left == {f"N{k}": ONLY_THE_ROOT for k in range(1, LONG + 1)}
    assert calls[0] <= 4 * LONG
