from __future__ import annotations

import json

import pytest

from optimum_hierarchy import schema
from optimum_hierarchy.errors import MissingHierarchyError, SchemaError
from optimum_hierarchy.schema import (
    AttributionSummary,
    ExportInfo,
    HierarchyMetadata,
    ModuleInfo,
    ModuleTree,
    ParameterInfo,
    UnattributedNode,
)


def small_tree() -> ModuleTree:
    return ModuleTree(
        [
            ModuleInfo("", "pkg.Root"),
            ModuleInfo("encoder", "pkg.Encoder"),
            ModuleInfo("encoder.layer", "torch.nn.modules.container.ModuleList"),
            ModuleInfo("encoder.layer.0", "pkg.Layer"),
            ModuleInfo(
                "encoder.layer.0.dense",
                "torch.nn.Linear",
                parameters=(ParameterInfo("weight", (4, 4)), ParameterInfo("bias", (4,))),
            ),
            ModuleInfo(
                "head",
                "torch.nn.Linear",
                parameters=(ParameterInfo("weight", (4, 4), tied_to="encoder.layer.0.dense.weight"),),
            ),
        ]
    )


def test_tree_structure_is_derived_from_paths() -> None:
    tree = small_tree()
    assert tree["encoder.layer.0.dense"].parent == "encoder.layer.0"
    assert tree["encoder.layer.0.dense"].depth == 4
    assert tree[""].parent is None and tree[""].depth == 0
    assert tree.children("encoder.layer") == ("encoder.layer.0",)
    assert tree.is_leaf("head") and not tree.is_leaf("encoder")
    assert tree.owner_of_tensor("encoder.layer.0.dense.bias") == "encoder.layer.0.dense"
    assert tree.owner_of_tensor("nope.weight") is None
    # The tied copy does not count twice.
    assert tree["head"].parameter_count == 0
    assert tree["encoder.layer.0.dense"].parameter_count == 20


def test_lowest_common_ancestor() -> None:
    lca = ModuleTree.lowest_common_ancestor
    assert lca(["a.b.c", "a.b.d"]) == "a.b"
    assert lca(["a.b", "a.b.c"]) == "a.b"
    assert lca(["a.layer.1", "a.layer.10"]) == "a.layer"  # component-wise, not string prefixes
    assert lca(["a", "b"]) == ""
    assert lca(["", "a"]) == ""
    assert lca([]) is None


def test_tree_rejects_orphans_and_duplicates() -> None:
    with pytest.raises(SchemaError, match="no parent"):
        ModuleTree([ModuleInfo("", "R"), ModuleInfo("a.b", "X")])
    with pytest.raises(SchemaError, match="twice"):
        ModuleTree([ModuleInfo("", "R"), ModuleInfo("", "R")])
    with pytest.raises(SchemaError, match="root"):
        ModuleTree([ModuleInfo("a", "R")])


def test_model_metadata_round_trip_is_json_and_deterministic() -> None:
    meta = HierarchyMetadata(
        tree=small_tree(),
        export=ExportInfo(root="encoder", model_type="bert", model_class="pkg.Root", rules="bert"),
        summary=AttributionSummary(
            nodes=3, by_source={"scope": 2}, unattributed=(UnattributedNode("n", "Add", "g", "why"),)
        ),
    )
    props = schema.encode_model_metadata(meta)
    assert props == schema.encode_model_metadata(meta)
    for value in props.values():
        json.loads(value)  # every model-level value is JSON
    modules = json.loads(props[schema.MODULES_KEY])
    assert modules[4] == {
        "path": "encoder.layer.0.dense",
        "class": "torch.nn.Linear",
        "parent": "encoder.layer.0",
        "depth": 4,
        "leaf": True,
        "parameters": [{"name": "weight", "shape": [4, 4]}, {"name": "bias", "shape": [4]}],
        "parameter_count": 20,
    }
    decoded = schema.decode_model_metadata(props)
    assert decoded.tree == meta.tree
    assert decoded.export == meta.export
    assert decoded.summary == meta.summary
    assert decoded.summary is not None and decoded.summary.attributed == 2


def test_decode_errors_name_the_key() -> None:
    props = schema.encode_model_metadata(HierarchyMetadata(tree=small_tree(), export=ExportInfo()))
    with pytest.raises(MissingHierarchyError, match="optimum-cli export onnx --hierarchy"):
        schema.decode_model_metadata({})
    with pytest.raises(SchemaError, match="schema version 99"):
        schema.decode_model_metadata({**props, schema.SCHEMA_VERSION_KEY: "99"})
    with pytest.raises(SchemaError, match=schema.MODULES_KEY):
        schema.decode_model_metadata({**props, schema.MODULES_KEY: "[{"})
    bad_parent = json.loads(props[schema.MODULES_KEY])
    bad_parent[1]["parent"] = "elsewhere"
    with pytest.raises(SchemaError, match="parent"):
        schema.decode_model_metadata({**props, schema.MODULES_KEY: json.dumps(bad_parent)})
    with pytest.raises(SchemaError, match="root 'missing'"):
        schema.decode_model_metadata({**props, schema.EXPORT_KEY: json.dumps({"root": "missing"})})
    deep = "[" * 100 + "]" * 100
    with pytest.raises(SchemaError, match="deeper"):
        schema.decode_model_metadata({**props, schema.MODULES_KEY: deep})


def test_namespace_follows_tree_levels() -> None:
    assert schema.namespace_of("encoder.layer.0.attention") == "encoder/layer/0/attention"
    assert schema.namespace_of("") == ""
