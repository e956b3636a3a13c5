"""The dynamo metadata reader: a strict parser of Python list reprs (checked against repr itself), the module
of a node, malformed and hostile values, and the tree rebuilt from a file's metadata."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
from dynamo_cases import DynamoCase
from dynamo_support import load, module_of, name_scope_module, source_of
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper
from support import OPTIMUM_CLI

from optimum_hierarchy import annotate_hierarchy, schema
from optimum_hierarchy.evidence.dynamo_metadata import (
    MAX_ITEMS,
    NAME_SCOPES_KEY,
    module_scopes,
    parse_string_list,
)
from optimum_hierarchy.passes.attribute_nodes import SUMMARY_META_KEY
from optimum_hierarchy.schema import ExportInfo, ModuleInfo, ModuleTree

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


@given(st.lists(TEXT, max_size=8))
def test_parses_what_python_repr_writes(values: list[str]) -> None:
    assert parse_string_list(repr(values)) == values


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{'a': 1}",
        "['a', 3]",
        "['a' 'b']",
        "[['a']]",
        "['a'",
        "['a\\q']",
        "['a'] + x",
        "__import__('os').system('true')",
        "['\\ud800']",
        "['unterminated]",
    ],
)
def test_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        parse_string_list(text)


def test_bounded() -> None:
    with pytest.raises(ValueError, match="entries"):
        parse_string_list(repr(["x"] * (MAX_ITEMS + 1)))
    with pytest.raises(ValueError, match="characters"):
        parse_string_list(repr(["x" * 70_000]))


def test_module_of_a_node() -> None:
    assert module_scopes({NAME_SCOPES_KEY: "['', 'encoder', 'encoder.layer.0', 'linear']"}) == [
        "",
        "encoder",
        "encoder.layer.0",
    ]
    assert module_scopes({NAME_SCOPES_KEY: "['_empty_nn_module_stack_from_metadata_hook', 'sym_size_int_2']"}) == []
    assert module_scopes({}) is None
    with pytest.raises(ValueError, match="module path"):
        module_scopes({NAME_SCOPES_KEY: "['', 'a..b', 'x']"})


TREE = ModuleTree([ModuleInfo("", "M"), ModuleInfo("enc", "E"), ModuleInfo("enc.lin", "torch.nn.Linear")])


def _graph(*scopes: str) -> onnx.ModelProto:
    nodes = []
    for k, value in enumerate(scopes):
        node = helper.make_node("Relu", ["x" if k == 0 else f"t{k - 1}"], [f"t{k}"], name=f"node_relu_{k}")
        node.metadata_props.add(key=NAME_SCOPES_KEY, value=value)
        nodes.append(node)
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(f"t{len(scopes) - 1}", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


BAD = {
    "not a list of strings": ("['', 3]", "cannot be read"),
    "thousands of entries": (repr(["enc"] * 5000), "cannot be read"),
    "a module absent from the tree": ("['', 'enc', 'enc.nope', 'relu_1']", "not in the module tree"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_values_are_refused_with_a_reason(case: str, caplog: pytest.LogCaptureFixture) -> None:
    """The bad value is no evidence: the node is placed from its neighbours, or left unattributed with the
    refusal in its reason; a warning names it; nothing raises."""
    import onnx_ir as ir

    from optimum_hierarchy.passes.attribute_nodes import AttributeNodesPass

    value, why = BAD[case]
    model = ir.serde.deserialize_model(_graph("['', 'enc', 'enc.lin', 'linear']", value, "['', 'relu_2']"))
    AttributeNodesPass(TREE, ExportInfo())(model)
    bad = list(model.graph)[1]
    props = bad.metadata_props
    assert why in caplog.text
    if props[schema.NODE_SOURCE_KEY] == "unattributed":
        assert why in props[schema.NODE_REASON_KEY]
    else:
        assert props[schema.NODE_SOURCE_KEY] == "context"
    first, _, last = list(model.graph)
    assert (first.metadata_props[schema.NODE_MODULE_KEY], last.metadata_props[schema.NODE_MODULE_KEY]) == (
        "enc.lin",
        "",
    )
    assert model.meta[SUMMARY_META_KEY].nodes == 3


@pytest.mark.parametrize("case", ["not a list of strings", "thousands of entries"])
def test_cli_bad_values_no_traceback_and_strict_leaves_the_file(case: str, tmp_path: Path) -> None:
    """(Without --config the tree is rebuilt from the metadata itself, so no module can be absent from it.)"""
    value, why = BAD[case]
    node = helper.make_node(
        "Constant", [], ["y"], name="node_c", value=helper.make_tensor("c", TensorProto.FLOAT, [1], [1.0])
    )
    node.metadata_props.add(key=NAME_SCOPES_KEY, value=value)  # alone: nothing else can place it
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    lone = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "model.onnx"
    onnx.save(lone, str(path))
    before = path.read_bytes()
    strict = subprocess.run(
        [OPTIMUM_CLI, "hierarchy", "annotate", str(path), "--strict"], capture_output=True, text=True, check=False
    )
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "Traceback" not in strict.stderr and "could not be attributed" in strict.stderr + strict.stdout
    assert path.read_bytes() == before
    plain = subprocess.run(
        [OPTIMUM_CLI, "hierarchy", "annotate", str(path)], capture_output=True, text=True, check=False
    )
    assert plain.returncode == 0 and "Traceback" not in plain.stderr
    assert "unattributed" in plain.stdout
    (stored,) = onnx.load(str(path)).graph.node
    assert why in {p.key: p.value for p in stored.metadata_props}[schema.NODE_REASON_KEY]


def test_a_plain_dynamo_file_annotated_after_the_fact(dynamo_cases: dict[str, DynamoCase], tmp_path: Path) -> None:
    """torch.onnx.export's default output (onnxscript-optimized), no model at hand: the tree comes from the
    metadata with real classes, and every node whose metadata is believed sits at its name_scopes module."""
    case = dynamo_cases["bert"]
    path = tmp_path / "model.onnx"
    shutil.copy(case.plain_optimized, path)
    (record,) = annotate_hierarchy(path)
    model = load(path)
    classes = {p: f"{type(m).__module__}.{type(m).__qualname__}" for p, m in case.model.named_modules()}
    tree = schema.decode_model_metadata(schema.read_props(model)).tree
    named = [p for p in tree if tree[p].class_name]
    assert len(named) > 10
    for path_ in named:
        assert tree[path_].class_name == classes[path_], path_
    assert set(tree) <= set(classes)
    metadata_nodes = [n for n in model.graph.node if source_of(n) == "metadata"]
    assert len(metadata_nodes) > 0.9 * len(model.graph.node)
    for node in metadata_nodes:
        assert module_of(node) == name_scope_module(node), node.name
    assert record.summary.attributed == record.summary.nodes
