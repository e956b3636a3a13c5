from __future__ import annotations

import base64
import json
import re
import zlib
from pathlib import Path

import onnx
import onnx_ir as ir
import pytest
from support import small_tree

from optimum_hierarchy import schema
from optimum_hierarchy.errors import MissingHierarchyError, SchemaError
from optimum_hierarchy.schema import (
    KEYS,
    AttributionSummary,
    Carry,
    Encoding,
    ExportInfo,
    HierarchyMetadata,
    Level,
    NodeRecord,
    UnattributedNode,
)

GOLDEN = Path(__file__).parent / "golden"


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


def test_module_tree_json_round_trip() -> None:
    tree = small_tree()
    encoded = schema.encode_module_tree(tree)
    assert schema.decode_module_tree(json.loads(schema.dumps_json(encoded))) == tree
    with pytest.raises(SchemaError, match=r"where\[1\]: missing field 'class'"):
        schema.decode_module_tree([encoded[0], {"path": "x"}], key="where")


# --- node records -----------------------------------------------------------------------------

RECORDS = [
    NodeRecord(module="encoder.layer.0.dense", source="scope"),
    NodeRecord(module="", source="context"),  # the root module is a module, not an absence
    NodeRecord(module="encoder", source="fusion", sources=("encoder.layer.0.dense", "encoder.layer.1")),
    NodeRecord(source="unattributed", reason="no evidence: no scope, parameter or neighbour"),
    NodeRecord(),
]


@pytest.mark.parametrize("record", RECORDS)
def test_node_record_round_trip(record: NodeRecord) -> None:
    props = schema.encode_node(record)
    assert schema.decode_node(props, "n") == record
    assert props.get(schema.NAMESPACE_KEY) == record.namespace
    assert all(schema.is_ours(key, Level.NODE) for key in props)
    assert schema.is_annotated(props) == (record.module is not None or record.reason is not None)


def test_node_record_layout_is_pinned() -> None:
    """The entries, their order and their values, as the attribution pass has always written them."""
    fused = schema.encode_node(NodeRecord(module="encoder.layer", source="fusion", sources=("encoder.layer.0", "a")))
    assert list(fused.items()) == [
        ("pkg.optimum_hierarchy.module", "encoder.layer"),
        ("pkg.optimum_hierarchy.source", "fusion"),
        ("namespace", "encoder/layer"),
        ("pkg.optimum_hierarchy.sources", '["encoder.layer.0","a"]'),
    ]
    unplaced = schema.encode_node(NodeRecord(source="unattributed", reason="why"))
    assert list(unplaced.items()) == [
        ("pkg.optimum_hierarchy.source", "unattributed"),
        ("pkg.optimum_hierarchy.reason", "why"),
    ]


def test_malformed_sources_raise_unless_lenient() -> None:
    props = {schema.NODE_MODULE_KEY: "a", schema.NODE_SOURCES_KEY: '{"not": "a list"}'}
    with pytest.raises(SchemaError, match="of node 'n1'"):
        schema.decode_node(props, "n1")
    assert schema.decode_node(props, "n1", strict=False) == NodeRecord(module="a")


def test_write_node_replaces_only_our_keys_on_an_ir_node() -> None:
    node = ir.Node("", "Add", [])
    node.metadata_props.update({"pkg.torch.onnx.name_scopes": "['', 'a']", schema.NODE_REASON_KEY: "old"})
    assert schema.write_node(node, NodeRecord(module="a.b", source="scope"))
    assert node.metadata_props == {
        "pkg.torch.onnx.name_scopes": "['', 'a']",
        schema.NODE_MODULE_KEY: "a.b",
        schema.NODE_SOURCE_KEY: "scope",
        schema.NAMESPACE_KEY: "a/b",
    }
    assert not schema.write_node(node, NodeRecord(module="a.b", source="scope"))  # twice: no change
    assert schema.write_node(node, NodeRecord(source="unattributed", reason="why"))
    assert node.metadata_props == {
        "pkg.torch.onnx.name_scopes": "['', 'a']",
        schema.NODE_SOURCE_KEY: "unattributed",
        schema.NODE_REASON_KEY: "why",
    }
    assert schema.decode_node(node.metadata_props) == NodeRecord(source="unattributed", reason="why")


def test_write_node_on_a_proto_keeps_other_entries_first() -> None:
    node = onnx.helper.make_node("Add", ["x", "y"], ["z"], name="n")
    node.metadata_props.add(key=schema.NODE_SOURCES_KEY, value='["stale"]')
    node.metadata_props.add(key="user", value="kept")
    record = NodeRecord(module="a", source="parameter")
    assert schema.write_node(node, record)
    assert [(p.key, p.value) for p in node.metadata_props] == [
        ("user", "kept"),
        ("namespace", "a"),
        ("pkg.optimum_hierarchy.module", "a"),
        ("pkg.optimum_hierarchy.source", "parameter"),
    ]
    assert not schema.write_node(node, record)
    assert schema.decode_node(schema.read_props(node)) == record


def test_read_props_of_protos_and_ir_objects() -> None:
    proto = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    onnx.helper.set_model_props(proto, {"a": "1", schema.SUMMARY_KEY: "{}"})
    assert schema.read_props(proto) == {"a": "1", schema.SUMMARY_KEY: "{}"}
    assert schema.read_props(ir.serde.deserialize_model(proto)) == {"a": "1", schema.SUMMARY_KEY: "{}"}
    node = ir.Node("", "Add", [], metadata_props={"k": "v"})
    props = schema.read_props(node)
    props["k"] = "changed"  # a copy
    assert node.metadata_props == {"k": "v"}


def test_replace_props_keeps_foreign_entries_in_order_and_sorts_ours() -> None:
    proto = onnx.ModelProto()
    for key, value in (("z", "1"), (schema.SUMMARY_KEY, "old"), ("namespace", "foreign at model level"), ("a", "2")):
        proto.metadata_props.add(key=key, value=value)
    ours = {schema.SCHEMA_VERSION_KEY: "1", schema.MODULES_KEY: "[]", "not ours": "dropped"}
    schema.replace_props(proto.metadata_props, ours, Level.MODEL)
    assert [(p.key, p.value) for p in proto.metadata_props] == [
        ("z", "1"),
        ("namespace", "foreign at model level"),
        ("a", "2"),
        (schema.MODULES_KEY, "[]"),
        (schema.SCHEMA_VERSION_KEY, "1"),
    ]


def test_is_ours() -> None:
    assert schema.is_ours(schema.NAMESPACE_KEY, Level.NODE)
    assert not schema.is_ours(schema.NAMESPACE_KEY, Level.MODEL)
    assert schema.is_ours("pkg.optimum_hierarchy.written_by_a_later_version", Level.NODE)
    assert not schema.is_ours("pkg.torch.onnx.name_scopes", Level.NODE)


# --- the key table ----------------------------------------------------------------------------------


def _documented_keys() -> dict[str, Level]:
    """The keys the layout in schema.py's docstring lists (``  - ``key``: ...``), and where."""
    doc = schema.__doc__
    assert doc is not None
    node_part, model_part = doc.split("* Per model", 1)
    listed = r"^  - ``(pkg\.optimum_hierarchy\.[a-z_]+|namespace)``"
    keys = {k: Level.NODE for k in re.findall(listed, node_part, re.MULTILINE)}
    keys.update({k: Level.MODEL for k in re.findall(listed, model_part, re.MULTILINE)})
    return keys


def test_the_table_covers_exactly_the_keys_schema_defines() -> None:
    constants = {value for name, value in vars(schema).items() if name.endswith("_KEY") and isinstance(value, str)}
    documented = _documented_keys()
    assert len(constants) == len(documented) == 12
    assert set(KEYS) == constants == set(documented)
    assert {k: rule.level for k, rule in KEYS.items()} == documented
    assert all(rule.key == key for key, rule in KEYS.items())
    assert all(bool(rule.merged) == (rule.level is Level.NODE) for rule in KEYS.values())
    assert all(schema.is_ours(key, rule.level) for key, rule in KEYS.items())


def _check_value(rule: schema.KeyRule, value: str) -> None:
    if rule.encoding is Encoding.JSON:
        json.loads(value)
    elif rule.encoding is Encoding.ZLIB_JSON:
        json.loads(zlib.decompress(base64.b64decode(value, validate=True)))
    else:
        with pytest.raises(ValueError):  # plain text, not JSON (a module path, a source name, a reason)
            json.loads(value)


def test_keys_of_an_annotated_export_are_in_the_table(cli_exports: dict[str, Path]) -> None:
    proto = onnx.load(str(cli_exports["bert"] / "model.onnx"), load_external_data=False)
    model_keys = [key for key in schema.read_props(proto) if schema.is_ours(key, Level.MODEL)]
    node_props = [schema.read_props(node) for node in proto.graph.node]
    node_keys = {key for props in node_props for key in props if schema.is_ours(key, Level.NODE)}
    assert len(model_keys) >= 5 and len(node_props) > 100 and node_keys
    for key in model_keys:
        assert KEYS[key].level is Level.MODEL, key
        _check_value(KEYS[key], schema.read_props(proto)[key])
    for props in node_props:
        for key, value in props.items():
            if schema.is_ours(key, Level.NODE):
                assert KEYS[key].level is Level.NODE, key
                if value:
                    _check_value(KEYS[key], value)


def test_kept_keys_survive_optimization() -> None:
    """The stored export of the tiny BERT and the same file after O2 and re-attribution (tests/golden): the keys
    the table says are kept have the same value, and every key either carries is in the table."""
    export = json.loads((GOLDEN / "export-bert.json").read_text(encoding="utf-8"))
    optimized = json.loads((GOLDEN / "o2-bert.json").read_text(encoding="utf-8"))
    # The precision plan is written by `hierarchy quantize --max-error` only (tests/tools/test_plan.py checks
    # that re-annotation keeps it); every other kept key is written at export.
    kept = [k for k, rule in KEYS.items() if rule.carry is Carry.KEPT and k != schema.PRECISION_PLAN_KEY]
    assert kept and set(kept) <= set(export["model"])
    for key in kept:
        assert optimized["model"][key] == export["model"][key], key
    for golden in (export, optimized):
        assert {KEYS[k].level for k in golden["model"]} == {Level.MODEL}
        node_keys = {k for node in golden["nodes"] for k in node} - {"name", "op_type"}
        assert node_keys and {KEYS[k].level for k in node_keys} == {Level.NODE}
