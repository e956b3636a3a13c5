from __future__ import annotations

from optimum_hierarchy.schema import ModuleInfo, ModuleTree
from optimum_hierarchy.scope import ScopeResolver, scope_segments


def tree_of(*paths: str) -> ModuleTree:
    return ModuleTree([ModuleInfo("", "Root"), *(ModuleInfo(p, "M") for p in paths)])


def test_scope_segments() -> None:
    assert scope_segments("/encoder/layer.0/attention/self/query/MatMul") == [
        "encoder",
        "layer.0",
        "attention",
        "self",
        "query",
    ]
    assert scope_segments("/Shape") == []
    assert scope_segments("/Gather_1") == []
    assert scope_segments("Constant_12") is None
    assert scope_segments("onnx::Add_3") is None
    assert scope_segments("") is None
    assert scope_segments("/a//MatMul") is None


def test_resolves_child_names_relative_to_enclosing_scope() -> None:
    tree = tree_of("encoder", "encoder.layer", "encoder.layer.0", "encoder.layer.0.query")
    resolver = ScopeResolver(tree)
    assert resolver.resolve("/encoder/layer.0/query/MatMul") == "encoder.layer.0.query"
    assert resolver.resolve("/encoder/Shape") == "encoder"
    assert resolver.resolve("/Shape") == ""


def test_repeated_container_level() -> None:
    # TorchScript names nested Sequential children by their full path: /layer1/layer1.0/conv1/Conv.
    tree = tree_of("layer1", "layer1.0", "layer1.0.conv1")
    assert ScopeResolver(tree).resolve("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"


def test_call_suffix_dropped_only_when_needed() -> None:
    tree = tree_of("act", "block", "block.act_1")
    resolver = ScopeResolver(tree)
    assert resolver.resolve("/act_1/Relu") == "act"  # second call of `act`
    assert resolver.resolve("/block/act_1/Relu") == "block.act_1"  # a module really named act_1


def test_unknown_scope_is_not_guessed() -> None:
    resolver = ScopeResolver(tree_of("encoder"))
    assert resolver.resolve("/decoder/MatMul") is None
    assert resolver.resolve("/encoder/attention/MatMul") is None


def test_submodel_export_root() -> None:
    tree = tree_of("model", "model.encoder", "model.encoder.layers", "model.encoder.layers.0")
    resolver = ScopeResolver(tree, root="model.encoder")
    assert resolver.resolve("/layers.0/MatMul") == "model.encoder.layers.0"
    assert resolver.resolve("/Shape") == "model.encoder"
