"""The re-attribution definition on small hand-made graphs, with the answers worked out by hand."""

from __future__ import annotations

from optimum_hierarchy.passes.reattribute import Placement, reattribute
from optimum_hierarchy.provenance import NodeTable, Provenance, ProvenanceNode
from optimum_hierarchy.schema import AttributionSource


def g0(*rows: tuple[str, str, str, list[str], list[str]]) -> Provenance:
    return Provenance(
        nodes=tuple(
            ProvenanceNode(name, op, module, "scope", (), tuple(i), tuple(o)) for name, op, module, i, o in rows
        )
    )


def g1(*rows: tuple[str, str, list[str], list[str]]) -> NodeTable:
    return NodeTable(
        names=[r[0] for r in rows],
        op_types=[r[1] for r in rows],
        inputs=[r[2] for r in rows],
        outputs=[r[3] for r in rows],
    )


def no_narrowing(_: int) -> None:
    return None


# A two-layer toy: a root mask computation feeds both layers' attention.
EXPORT = g0(
    ("/Cast", "Cast", "", ["mask"], ["m1"]),
    ("/Sub", "Sub", "", ["m1"], ["m2"]),
    ("/l0/q/MatMul", "MatMul", "l0.q", ["x", "wq0"], ["q0"]),
    ("/l0/k/MatMul", "MatMul", "l0.k", ["x", "wk0"], ["k0"]),
    ("/l0/MatMul", "MatMul", "l0", ["q0", "k0"], ["s0"]),
    ("/l0/Add", "Add", "l0", ["s0", "m2"], ["a0"]),
    ("/l0/Softmax", "Softmax", "l0", ["a0"], ["y0"]),
    ("/l1/q/MatMul", "MatMul", "l1.q", ["y0", "wq1"], ["q1"]),
    ("/l1/k/MatMul", "MatMul", "l1.k", ["y0", "wk1"], ["k1"]),
    ("/l1/MatMul", "MatMul", "l1", ["q1", "k1"], ["s1"]),
    ("/l1/Add", "Add", "l1", ["s1", "m2"], ["a1"]),
    ("/l1/Softmax", "Softmax", "l1", ["a1"], ["y1"]),
)


def test_fused_attention_is_the_lca_of_what_it_replaced_and_the_shared_mask_counts_for_neither() -> None:
    optimized = g1(
        ("MaskIndex_0", "ReduceSum", ["mask"], ["mask_index"]),
        ("Attention_0", "Attention", ["x", "qkv0", "mask_index"], ["y0"]),
        ("Attention_1", "Attention", ["y0", "qkv1", "mask_index"], ["y1"]),
    )
    placed = reattribute(optimized, EXPORT, no_narrowing)
    # Attention_0 replaced l0.q, l0.k and l0's MatMul/Add/Softmax; the root mask nodes feed both
    # layers (disjoint outputs), so they count for neither layer.
    assert placed[1] == Placement("l0", "fusion", ("l0", "l0.k", "l0.q"))
    assert placed[2] == Placement("l1", "fusion", ("l1", "l1.k", "l1.q"))
    # The mask node reaches both layers' outputs: the LCA of everything, with the root's nodes.
    assert placed[0].module == ""
    assert set(placed[0].sources) >= {"", "l0", "l1"}


def test_kept_nodes_keep_their_module_and_source_even_with_renamed_outputs() -> None:
    optimized = g1(
        ("/Cast", "Cast", ["mask"], ["renamed_m1"]),
        ("/Sub", "Sub", ["renamed_m1"], ["m2"]),
        ("/l0/q/MatMul", "MatMul", ["x", "wq0"], ["q0"]),
    )
    placed = reattribute(optimized, EXPORT, no_narrowing)
    assert placed[0] == Placement("", "scope", ())
    assert placed[2] == Placement("l0.q", "scope", ())


def test_a_node_renamed_by_the_optimizer_is_its_original() -> None:
    optimized = g1(("MatMul_token_7", "MatMul", ["x", "wq0"], ["q0"]))
    assert reattribute(optimized, EXPORT, no_narrowing)[0] == Placement("l0.q", "fusion", ("l0.q",))


def test_a_quantized_matmul_region_is_narrowed_per_output() -> None:
    # DynamicQuantizeLinear shared by the two projections of layer 0; each chain ends in the
    # original output tensor of the MatMul it replaced.
    optimized = g1(
        ("x_QuantizeLinear", "DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
        ("/l0/q/MatMul_quant", "MatMulInteger", ["xq", "wq0_q", "xz", "wz"], ["iq"]),
        ("/l0/q/MatMul_quant_cast", "Cast", ["iq"], ["fq"]),
        ("/l0/q/MatMul_quant_mul", "Mul", ["fq", "xs"], ["q0"]),
        ("/l0/k/MatMul_quant", "MatMulInteger", ["xq", "wk0_q", "xz", "wz"], ["ik"]),
        ("/l0/k/MatMul_quant_mul", "Mul", ["ik", "xs"], ["k0"]),
        ("/l0/MatMul", "MatMul", ["q0", "k0"], ["s0"]),
    )
    placed = reattribute(optimized, EXPORT, no_narrowing)
    assert placed[0] == Placement("l0", "fusion", ("l0.k", "l0.q"))  # serves both projections
    for i in (1, 2, 3):
        assert placed[i] == Placement("l0.q", "fusion", ("l0.q",))
    for i in (4, 5):
        assert placed[i] == Placement("l0.k", "fusion", ("l0.k",))
    assert placed[6] == Placement("l0", "scope", ())


def test_narrowing_stays_inside_what_the_provenance_proves() -> None:
    # One region that replaced layer 0's q, k and scores MatMul: the provenance proves "l0".
    optimized = g1(
        ("Fused_0", "MatMul", ["x", "wq0"], ["t"]),
        ("Fused_1", "QKScores", ["t", "x", "wk0"], ["s0"]),
    )
    rules = {0: ("l0.q", AttributionSource.RULE), 1: ("l1", AttributionSource.RULE)}
    placed = reattribute(optimized, EXPORT, rules.get)
    assert placed[0] == Placement("l0.q", "rule", ("l0.q",))
    # l1 is outside l0 (the region's answer): that rule is ignored
    assert placed[1] == Placement("l0", "fusion", ("l0", "l0.k", "l0.q"))


def test_an_inserted_node_that_replaced_nothing_is_left_to_the_generic_evidence() -> None:
    optimized = g1(
        ("/l0/q/MatMul", "MatMul", ["x", "wq0"], ["q0"]),
        ("InsertedCast", "Cast", ["q0"], ["q0_fp16"]),
    )
    placed = reattribute(optimized, EXPORT, no_narrowing)
    assert 1 not in placed
