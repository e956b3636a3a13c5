"""Attributions of real tiny exports, checked against TorchScript scopes and PyTorch module semantics."""

from __future__ import annotations

import collections
from pathlib import Path

import onnx
import pytest
import torch
from support import MODELS, load_torch_model
from transformers.pytorch_utils import Conv1D

from optimum_hierarchy import schema
from optimum_hierarchy.read import read_hierarchy


def onnx_file(directory: Path) -> Path:
    return directory / "model.onnx"


@pytest.mark.parametrize("name", MODELS)
def test_every_node_has_a_module_and_scopes_match(
    name: str, cli_exports: dict[str, Path], model_dirs: dict[str, Path]
) -> None:
    model = load_torch_model(name, model_dirs[name])
    modules = dict(model.named_modules())
    hierarchy = read_hierarchy(onnx_file(cli_exports[name]))
    nodes = hierarchy.nodes
    assert len(nodes) > 100
    assert [n.name for n in nodes if n.module is None] == []
    scoped = [n for n in nodes if n.name.startswith("/")]
    assert len(scoped) > 0.8 * len(nodes)
    for node in scoped:
        # Independent reading of the TorchScript scope: the segments between the slashes.
        expected = ".".join(node.name.split("/")[1:-1])
        assert expected in modules, node.name
        assert node.module == expected, node.name
        assert node.source == "scope"
    # Unscoped nodes are attributed from parameters or context, never invented paths.
    for node in nodes:
        assert node.module in modules


# Modules whose outputs the exported task drops, so the exporter removes their nodes:
# BertModel's pooler (feature-extraction exports last_hidden_state only).
PRUNED = {"vit": set(), "bert": {"pooler"}, "gpt2": set()}


@pytest.mark.parametrize("name", MODELS)
def test_module_semantics(name: str, cli_exports: dict[str, Path], model_dirs: dict[str, Path]) -> None:
    model = load_torch_model(name, model_dirs[name])
    counts = collections.Counter((n.module, n.op_type) for n in read_hierarchy(onnx_file(cli_exports[name])).nodes)
    expectations = [
        ((torch.nn.Linear, Conv1D), ("MatMul", "Gemm")),
        ((torch.nn.LayerNorm,), ("LayerNormalization",)),
        ((torch.nn.Embedding,), ("Gather",)),
        ((torch.nn.Conv2d,), ("Conv",)),
    ]
    checked = 0
    for classes, ops in expectations:
        for path, module in model.named_modules():
            if path.split(".")[0] in PRUNED[name]:
                assert not any(m == path or m.startswith(path + ".") for m, _ in counts), path
                continue
            if isinstance(module, classes):
                assert sum(counts[(path, op)] for op in ops) == 1, (path, ops)
                checked += 1
    assert checked >= 8


@pytest.mark.parametrize("name", MODELS)
def test_repeated_blocks_are_attributed_alike(
    name: str, cli_exports: dict[str, Path], model_dirs: dict[str, Path]
) -> None:
    model = load_torch_model(name, model_dirs[name])
    nodes = read_hierarchy(onnx_file(cli_exports[name])).nodes
    lists = [p for p, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) >= 2]
    assert lists
    for container in lists:
        multisets = []
        for index in range(len(model.get_submodule(container))):
            block = f"{container}.{index}"
            multisets.append(
                collections.Counter(
                    (n.module[len(block) :], n.op_type)
                    for n in nodes
                    if n.module == block or n.module.startswith(block + ".")
                )
            )
        assert sum(multisets[0].values()) > 10
        assert all(m == multisets[0] for m in multisets[1:]), container


@pytest.mark.parametrize("name", MODELS)
def test_stored_tree_and_namespace(name: str, cli_exports: dict[str, Path], model_dirs: dict[str, Path]) -> None:
    model = load_torch_model(name, model_dirs[name])
    hierarchy = read_hierarchy(onnx_file(cli_exports[name]))
    assert list(hierarchy.tree) == [p for p, _ in model.named_modules()]
    assert hierarchy.export.root == ""
    assert hierarchy.export.rules == name
    assert hierarchy.metadata.summary is not None and hierarchy.metadata.summary.coverage == 1.0
    proto = onnx.load(str(onnx_file(cli_exports[name])), load_external_data=False)
    for node in proto.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        assert props[schema.NAMESPACE_KEY] == props[schema.NODE_MODULE_KEY].replace(".", "/")
        # No custom attributes on standard ops: ONNX Runtime would refuse the model.
        assert not any(a.name.startswith(("source_module", "pkg.")) for a in node.attribute)
