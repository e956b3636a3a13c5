from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support import MODELS, load_torch_model

from optimum_hierarchy.capture.module_tree import capture_module_tree, find_module_path


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


def test_find_module_path() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.ReLU()))
    assert find_module_path(model, model[1][0]) == "1.0"
    assert find_module_path(model, model) == ""
    assert find_module_path(model, torch.nn.ReLU()) is None
