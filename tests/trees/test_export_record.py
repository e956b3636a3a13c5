"""Annotate after the fact a plain ``torch.onnx.export`` file beside a config that names no architecture.

A ``ResNetConfig`` saved on its own gives ``ResNetModel``; the nodes record ``ResNetForImageClassification``
paths. The tree must come from the nodes' own records, and each Conv that onnxscript's optimizer folded a
BatchNorm into must sit at the lowest common ancestor of the conv and the norm it replaced, both read here
from the same export without the optimizer.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from fusion_support import within

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
MODULE_KEY = "pkg.optimum_hierarchy.module"
SOURCE_KEY = "pkg.optimum_hierarchy.source"


def _props(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def _deepest(node: onnx.NodeProto) -> str:
    stack = [s for s in ast.literal_eval(_props(node)[NAME_SCOPES])[:-1] if not s.startswith("_empty")]
    return stack[-1] if stack else ""


def _lca(paths: list[str]) -> str:
    parts = [p.split(".") for p in paths]
    common = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, Path]:
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], num_labels=3)
    model = ResNetForImageClassification(config).eval()
    root = tmp_path_factory.mktemp("resnet")
    config.save_pretrained(root)  # no "architectures": AutoModel would build a ResNetModel
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.onnx.export(model, (x,), dynamo=True).save(root / "model.onnx")
        torch.onnx.export(model, (x,), dynamo=True, optimize=False).save(root / "unoptimized.onnx.keep")
    return model, root / "model.onnx", root / "unoptimized.onnx.keep"


def test_tree_from_the_nodes_records_and_folded_convs_at_the_lca(resnet: tuple[Any, Path, Path]) -> None:
    from optimum_hierarchy import annotate_hierarchy, read_hierarchy

    model, path, unoptimized = resnet
    assert not json.loads(path.with_name("config.json").read_text()).get("architectures")
    annotate_hierarchy(path)
    modules = {p for p, _ in model.named_modules()}
    assert read_hierarchy(path).tree[""].class_name.endswith("ResNetForImageClassification")

    # the unoptimized export: the conv reading each weight, and the norm reading that conv's output
    plain = onnx.load(str(unoptimized)).graph.node
    replaced = {}
    for node in plain:
        if node.op_type == "Conv":
            norm = next(n for n in plain if node.output[0] in n.input)
            assert "norm" in _deepest(norm) or norm.op_type.startswith("BatchNorm"), norm.op_type
            replaced[node.input[1]] = _lca([_deepest(node), _deepest(norm)])

    folded = 0
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        props = _props(node)
        module = props.get(MODULE_KEY)
        assert module in modules or module == "", (node.name, module)
        if node.op_type == "Conv" and node.input[1] in replaced:
            folded += 1
            assert module == replaced[node.input[1]], (node.name, module, replaced[node.input[1]])
        elif NAME_SCOPES in props and "pkg.onnxscript.rewriter.rule_name" not in props:
            assert module == _deepest(node), (node.name, module)
        else:
            assert module is not None and within(_deepest(node) if NAME_SCOPES in props else module, module)
    assert folded == len(replaced) == 8
