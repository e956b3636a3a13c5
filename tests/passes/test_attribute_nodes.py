from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from optimum_hierarchy import schema
from optimum_hierarchy.errors import AttributionError
from optimum_hierarchy.passes.annotate_graph import AnnotateGraphPass
from optimum_hierarchy.passes.attribute_nodes import SUMMARY_META_KEY, AttributeNodesPass, Mode
from optimum_hierarchy.passes.record_provenance import RecordProvenancePass
from optimum_hierarchy.schema import ExportInfo, ModuleInfo, ModuleTree, ParameterInfo

TREE = ModuleTree(
    [
        ModuleInfo("", "Root"),
        ModuleInfo("encoder", "Encoder"),
        ModuleInfo("encoder.layer", "ModuleList"),
        ModuleInfo("encoder.layer.0", "Layer"),
        ModuleInfo(
            "encoder.layer.0.query",
            "torch.nn.Linear",
            parameters=(ParameterInfo("weight", (2, 2)), ParameterInfo("bias", (2,))),
        ),
        ModuleInfo("encoder.layer.1", "Layer"),
        ModuleInfo(
            "encoder.layer.1.query",
            "torch.nn.Linear",
            parameters=(ParameterInfo("weight", (2, 2)), ParameterInfo("bias", (2,))),
        ),
        ModuleInfo("head", "torch.nn.Linear"),
    ]
)


def t(name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones((2,), dtype=np.float32), name)


def make_model(
    nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto] | None = None, outputs: tuple[str, ...] = ("y",)
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "main",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [2]) for o in outputs],
        initializer=inits or [],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(
    proto: onnx.ModelProto, export: ExportInfo | None = None, tree: ModuleTree = TREE, **kw: bool
) -> tuple[dict[str, dict[str, str]], ir.Model, bool]:
    model = ir.serde.deserialize_model(proto)
    result = AnnotateGraphPass(AttributeNodesPass(tree, export, **kw))(model)
    out = ir.serde.serialize_model(result.model)
    props = {}

    def walk(g: onnx.GraphProto) -> None:
        for n in g.node:
            props[n.name] = {p.key: p.value for p in n.metadata_props}
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)

    walk(out.graph)
    onnx.checker.check_model(out, full_check=True)
    return props, result.model, result.modified


def module_source(props: dict[str, dict[str, str]], name: str) -> tuple[str | None, str | None]:
    p = props[name]
    return p.get(schema.NODE_MODULE_KEY), p.get(schema.NODE_SOURCE_KEY)


def test_scope_parameter_and_constant_context() -> None:
    proto = make_model(
        [
            helper.make_node("Constant", [], ["onnx::Add_1"], name="Constant_7", value=t("c")),
            helper.make_node("Add", ["x", "onnx::Add_1"], ["a"], name="/encoder/layer.0/query/Add"),
            helper.make_node(
                "Identity", ["encoder.layer.0.query.bias"], ["encoder.layer.1.query.bias"], name="Identity_3"
            ),
            helper.make_node("Add", ["a", "encoder.layer.1.query.bias"], ["b"], name="/encoder/layer.1/query/Add"),
            helper.make_node("Relu", ["b"], ["y"], name="/Relu"),
        ],
        [t("encoder.layer.0.query.bias")],
    )
    props, model, _ = run(proto)
    assert module_source(props, "/encoder/layer.0/query/Add") == ("encoder.layer.0.query", "scope")
    assert module_source(props, "/Relu") == ("", "scope")  # root-level op, explicitly the root
    # A constant serves its only consumer.
    assert module_source(props, "Constant_7") == ("encoder.layer.0.query", "context")
    # An Identity aliasing a deduplicated initializer is named after the parameter it stands for.
    assert module_source(props, "Identity_3") == ("encoder.layer.1.query", "parameter")
    assert props["/encoder/layer.0/query/Add"][schema.NAMESPACE_KEY] == "encoder/layer/0/query"
    summary = model.meta[SUMMARY_META_KEY]
    assert summary.nodes == 5 and summary.attributed == 5
    assert dict(summary.by_source) == {"scope": 3, "context": 1, "parameter": 1}
    decoded = schema.decode_model_metadata(dict(model.metadata_props))
    assert decoded.tree == TREE


def test_constant_serving_two_modules_goes_to_their_lca() -> None:
    proto = make_model(
        [
            helper.make_node("Constant", [], ["k"], name="Constant_1", value=t("c")),
            helper.make_node("Add", ["x", "k"], ["a"], name="/encoder/layer.0/query/Add"),
            helper.make_node("Add", ["a", "k"], ["y"], name="/encoder/layer.1/query/Add"),
        ]
    )
    props, _, _ = run(proto)
    assert module_source(props, "Constant_1") == ("encoder.layer", "context")


def test_chain_of_unscoped_constants_settles() -> None:
    proto = make_model(
        [
            helper.make_node("Constant", [], ["k0"], name="Constant_1", value=t("c")),
            helper.make_node("Identity", ["k0"], ["k1"], name="Identity_2"),
            helper.make_node("Add", ["x", "k1"], ["y"], name="/head/Add"),
        ]
    )
    props, _, _ = run(proto)
    assert module_source(props, "Identity_2") == ("head", "context")
    assert module_source(props, "Constant_1") == ("head", "context")


def test_unscoped_computation_is_never_finer_than_its_neighbours() -> None:
    # A fused node between two layers: it touches both, so it gets their common ancestor.
    proto = make_model(
        [
            helper.make_node("Relu", ["x"], ["a"], name="/encoder/layer.0/query/Relu"),
            helper.make_node("Sigmoid", ["a"], ["b"], name="Fused_0"),
            helper.make_node("Relu", ["b"], ["y"], name="/encoder/layer.1/query/Relu"),
        ]
    )
    props, _, _ = run(proto)
    assert module_source(props, "Fused_0") == ("encoder.layer", "context")


def test_graph_input_counts_as_the_exported_module() -> None:
    proto = make_model(
        [
            helper.make_node("Cast", ["x"], ["a"], name="", to=TensorProto.FLOAT),
            helper.make_node("Relu", ["a"], ["y"], name="/encoder/layer.0/query/Relu"),
        ]
    )
    props, _, _ = run(proto)
    assert module_source(props, "") == ("", "context")


def test_a_root_spread_from_neighbours_is_no_evidence() -> None:
    """The Neg reads no graph input: its context is the root only because the Cast before it was put there by
    context. Only the root contains both, and the root contains everything: unattributed, not counted."""
    proto = make_model(
        [
            helper.make_node("Cast", ["x"], ["a"], name="", to=TensorProto.FLOAT),
            helper.make_node("Neg", ["a"], ["b"], name="Neg_1"),
            helper.make_node("Relu", ["b"], ["y"], name="/encoder/layer.0/query/Relu"),
        ]
    )
    props, model, _ = run(proto)
    assert module_source(props, "") == ("", "context")
    assert module_source(props, "Neg_1") == (None, "unattributed")
    assert "only the root module contains everything around it" in props["Neg_1"][schema.NODE_REASON_KEY]
    summary = model.meta[SUMMARY_META_KEY]
    assert summary.attributed == 2 and [u.node for u in summary.unattributed] == ["Neg_1"]


def test_a_root_neighbour_by_evidence_witnesses_the_root() -> None:
    """With a neighbour placed at the root by its scope, the root is evidence."""
    proto = make_model(
        [
            helper.make_node("Cast", ["x"], ["a"], name="", to=TensorProto.FLOAT),
            helper.make_node("Neg", ["a"], ["b"], name="Neg_1"),
            helper.make_node("Relu", ["b"], ["c"], name="/encoder/layer.0/query/Relu"),
            helper.make_node("Abs", ["b"], ["d"], name="/Abs"),
            helper.make_node("Add", ["c", "d"], ["y"], name="/Add"),
        ]
    )
    props, _, _ = run(proto)
    assert module_source(props, "Neg_1") == ("", "context")


def test_a_node_next_to_a_refused_one_is_not_placed_finer() -> None:
    """The Constant feeds the refused Neg (somewhere in the root) and ``query``: it cannot be put in ``query``."""
    proto = make_model(
        [
            helper.make_node("Constant", [], ["k"], name="Constant_1", value=t("k")),
            helper.make_node("Cast", ["x"], ["a"], name="", to=TensorProto.FLOAT),
            helper.make_node("Neg", ["a"], ["b"], name="Neg_1"),
            helper.make_node("Add", ["b", "k"], ["c"], name="Add_1"),
            helper.make_node("Mul", ["c", "k"], ["y"], name="/encoder/layer.0/query/Mul"),
        ]
    )
    props, _, _ = run(proto)
    assert module_source(props, "Neg_1") == (None, "unattributed")
    assert module_source(props, "Constant_1") == (None, "unattributed")


def test_if_subgraphs_are_attributed() -> None:
    then_graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["t0"], name="/encoder/layer.0/query/Relu"),
            helper.make_node("Constant", [], ["t1"], name="Constant_9", value=t("c")),
        ],
        "then",
        [],
        [
            helper.make_tensor_value_info("t0", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("t1", TensorProto.FLOAT, [2]),
        ],
    )
    else_graph = helper.make_graph(
        [
            helper.make_node("Neg", ["x"], ["e0"], name="/encoder/layer.1/query/Neg"),
            helper.make_node("Constant", [], ["e1"], name="Constant_10", value=t("c")),
        ],
        "else",
        [],
        [
            helper.make_tensor_value_info("e0", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("e1", TensorProto.FLOAT, [2]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["cond"], name="Constant_0", value=helper.make_tensor("v", TensorProto.BOOL, [], [True])
            ),
            helper.make_node(
                "If", ["cond"], ["y", "z"], name="optimum::if", then_branch=then_graph, else_branch=else_graph
            ),
        ],
        "main",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [2]),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    props, model, _ = run(proto)
    assert len(props) == 6
    assert module_source(props, "/encoder/layer.1/query/Neg") == ("encoder.layer.1.query", "scope")
    # The If holds what its bodies compute: both layers.
    assert module_source(props, "optimum::if")[0] == "encoder.layer"
    # A body's constant output with no other evidence inherits the If node.
    assert module_source(props, "Constant_9")[0] == "encoder.layer"
    assert model.meta[SUMMARY_META_KEY].attributed == 6


def test_unattributable_node_is_recorded_and_strict_raises() -> None:
    proto = make_model(
        [
            helper.make_node("Constant", [], ["y"], name="Constant_1", value=t("c")),
            helper.make_node("Relu", ["x"], ["z"], name="/encoder/Relu"),
        ],
        outputs=("y", "z"),
    )
    props, model, _ = run(proto)
    assert schema.NODE_MODULE_KEY not in props["Constant_1"]
    assert props["Constant_1"][schema.NODE_SOURCE_KEY] == "unattributed"
    assert props["Constant_1"][schema.NODE_REASON_KEY]
    summary = model.meta[SUMMARY_META_KEY]
    assert [u.node for u in summary.unattributed] == ["Constant_1"]
    with pytest.raises(AttributionError, match="1 of 2 nodes") as info:
        run(proto, strict=True)
    assert info.value.unattributed[0].node == "Constant_1"


def test_second_run_changes_nothing() -> None:
    proto = make_model(
        [
            helper.make_node("Constant", [], ["k"], name="Constant_1", value=t("c")),
            helper.make_node("Add", ["x", "k"], ["y"], name="/head/Add"),
        ]
    )
    model = ir.serde.deserialize_model(proto)
    first = AttributeNodesPass(TREE)(model)
    assert first.modified
    before = ir.serde.serialize_model(first.model).SerializeToString()
    second = AttributeNodesPass(TREE)(first.model)
    assert not second.modified
    assert ir.serde.serialize_model(second.model).SerializeToString() == before


def test_submodel_root_prefixes_paths_and_parameter_names() -> None:
    tree = ModuleTree(
        [
            ModuleInfo("", "Root"),
            ModuleInfo("encoder", "Encoder"),
            ModuleInfo("encoder.dense", "torch.nn.Linear", parameters=(ParameterInfo("bias", (2,)),)),
        ]
    )
    proto = make_model(
        [
            helper.make_node("Identity", ["dense.bias"], ["k"], name="Identity_1"),
            helper.make_node("Add", ["x", "k"], ["y"], name="/dense/Add"),
        ],
        [t("dense.bias")],
    )
    props, model, _ = run(proto, export=ExportInfo(root="encoder"), tree=tree)
    assert module_source(props, "/dense/Add") == ("encoder.dense", "scope")
    assert module_source(props, "Identity_1") == ("encoder.dense", "parameter")
    assert schema.decode_model_metadata(dict(model.metadata_props)).export.root == "encoder"


def test_a_scope_naming_no_module_is_said_on_a_fresh_export(caplog: pytest.LogCaptureFixture) -> None:
    """On a fresh TorchScript export a scope is the exporter's record of the call: one that names no module of
    the tree contradicts it, so the pass says so (a warning naming the node), rather than silently taking what
    the neighbours give; the same name in a file annotated after the fact is only a name, and nothing is said."""
    from optimum_hierarchy.annotation.file import annotate_proto

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="/nope/Relu")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    tree = ModuleTree([ModuleInfo("", "Root"), ModuleInfo("enc", "Encoder")])
    with caplog.at_level("WARNING", logger="optimum_hierarchy"):
        annotate_proto(helper.make_model(graph), tree, ExportInfo())
    assert "/nope/Relu" in caplog.text and "matches no module of the tree" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="optimum_hierarchy"):
        annotate_proto(helper.make_model(graph), tree, ExportInfo(), mode=Mode.AFTER_THE_FACT)
    assert "matches no module" not in caplog.text


def test_the_annotation_is_single_purpose_passes_composed() -> None:
    """AttributeNodesPass writes the records; provenance and module outputs are passes of their own."""
    proto = make_model([helper.make_node("Relu", ["x"], ["y"], name="/encoder/Relu")], outputs=("y",))
    alone = AttributeNodesPass(TREE)(ir.serde.deserialize_model(proto)).model
    assert alone.graph.node(0).metadata_props[schema.NODE_MODULE_KEY] == "encoder"
    assert schema.PROVENANCE_KEY not in alone.metadata_props
    assert schema.MODULE_OUTPUTS_KEY not in alone.metadata_props
    composed = AnnotateGraphPass(AttributeNodesPass(TREE))(ir.serde.deserialize_model(proto)).model
    assert {schema.PROVENANCE_KEY, schema.MODULE_OUTPUTS_KEY} <= set(composed.metadata_props)
    with pytest.raises(ir.passes.PreconditionError, match="AttributeNodesPass"):
        RecordProvenancePass()(ir.serde.deserialize_model(proto))


def test_strict_raises_attribution_error_through_the_composed_passes() -> None:
    proto = make_model([helper.make_node("Constant", [], ["y"], name="Constant_1", value=t("c"))], outputs=("y",))
    with pytest.raises(AttributionError):
        AnnotateGraphPass(AttributeNodesPass(TREE, strict=True))(ir.serde.deserialize_model(proto))


def test_provenance_goes_with_the_after_optimizer_mode_only() -> None:
    with pytest.raises(ValueError, match="AFTER_OPTIMIZER"):
        AttributeNodesPass(TREE, mode=Mode.AFTER_OPTIMIZER)
