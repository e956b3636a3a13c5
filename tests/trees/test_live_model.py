from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support import MODELS, load_torch_model

from optimum_hierarchy.trees.base import FoundTree, LiveModel, TreeSource
from optimum_hierarchy.trees.live_model import capture_module_tree, find_module_path, from_live_model
from optimum_hierarchy.trees.sources import tree_of_model


@pytest.mark.parametrize("name", MODELS)
def test_tree_matches_named_modules(name: str, model_dirs: dict[str, Path]) -> None:
    model = load_torch_model(name, model_dirs[name])
    tree = capture_module_tree(model)
    named = list(model.named_modules())
    assert len(named) > 10
    assert list(tree) == [path for path, _ in named]
    for path, module in named:
        info = tree[path]
        assert info.class_name == f"{type(module).__module__}.{type(module).__qualname__}"
        assert tree.is_leaf(path) == (len(list(module.children())) == 0)
        own = dict(module.named_parameters(recurse=False))
        assert [p.name for p in info.parameters] == list(own)
        assert [p.shape for p in info.parameters] == [tuple(t.shape) for t in own.values()]
        if path:
            assert info.parent == path.rpartition(".")[0]
            assert info.depth == len(path.split("."))


def test_tied_weights_are_counted_once(model_dirs: dict[str, Path]) -> None:
    model = load_torch_model("gpt2", model_dirs["gpt2"])
    assert model.lm_head.weight is model.transformer.wte.weight
    tree = capture_module_tree(model)
    (lm_weight,) = tree["lm_head"].parameters
    assert lm_weight.tied_to == "transformer.wte.weight"
    total = sum(info.parameter_count for info in tree.values())
    assert total == sum(p.numel() for p in model.parameters())  # parameters() deduplicates too


def test_the_live_model_is_a_tree_source_like_the_files(model_dirs: dict[str, Path]) -> None:
    """At export the tree comes through the interface every source shares: evidence in, a FoundTree out."""
    source: TreeSource[LiveModel] = from_live_model
    model = load_torch_model("bert", model_dirs["bert"])
    found = source(LiveModel(model))
    assert isinstance(found, FoundTree)
    assert list(found.tree) == list(capture_module_tree(model)) and len(found.tree) > 10
    assert found.root == "" and found.model_type == "bert"
    assert found.model_class == f"{type(model).__module__}.{type(model).__qualname__}"
    assert tree_of_model(model) == found
    plain = tree_of_model(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    assert plain.model_type is None and plain.model_class == "torch.nn.modules.container.Sequential"


def test_find_module_path() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.ReLU()))
    assert find_module_path(model, model[1][0]) == "1.0"
    assert find_module_path(model, model) == ""
    assert find_module_path(model, torch.nn.ReLU()) is None


def test_shared_modules_are_one_entry_with_their_aliases() -> None:
    """A module under several paths (T5's shared embedding, a shared block with children): one entry at its first
    path in named_modules(), every other path of the same object an alias; the aliases survive JSON."""
    from optimum_hierarchy.schema import decode_module_tree, encode_module_tree

    block = torch.nn.Sequential(torch.nn.Linear(2, 2))
    model = torch.nn.Module()
    model.first = block
    model.inner = torch.nn.Module()
    model.inner.again = block
    tree = capture_module_tree(model)
    expected: dict[str, str] = {}
    first: dict[int, str] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        if first.setdefault(id(module), path) != path:
            expected[path] = first[id(module)]
    assert dict(tree.aliases) == expected == {"inner.again": "first", "inner.again.0": "first.0"}
    assert [p for p in tree] == [p for p, _ in model.named_modules()]
    assert tree.canonical("inner.again.0") == "first.0" and tree.canonical("nope") is None
    assert dict(decode_module_tree(encode_module_tree(tree)).aliases) == expected
