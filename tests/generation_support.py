"""Checks shared by the tests of transformers' exporter path: component files, roots, and each node against torch's
own record of its module (``name_scopes``, parsed here with ``ast``)."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import onnx
from fusion_support import within

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
RULE_NAME = "pkg.onnxscript.rewriter.rule_name"
MODULE_KEY = "pkg.optimum_hierarchy.module"
SOURCE_KEY = "pkg.optimum_hierarchy.source"
REASON_KEY = "pkg.optimum_hierarchy.reason"
EMPTY_STACK = "_empty_nn_module_stack_from_metadata_hook"


def component_files(directory: Path) -> dict[str, Path]:
    manifest = json.loads((directory / "export.json").read_text())
    return {name: directory / entry["file"] for name, entry in manifest["components"].items()}


def component_roots(model: Any, components: list[str]) -> dict[str, str]:
    """Where transformers takes each component from (``decompose_for_generation``), as a path of ``model``."""
    paths = {id(module): path for path, module in model.named_modules()}
    roots = {}
    for name in components:
        if name in ("prefill", "decode"):
            roots[name] = ""
        elif name == "language_model":
            roots[name] = paths[id(model.get_decoder())]
        else:
            owner = getattr(model, name, None) or getattr(model.base_model, name)
            roots[name] = paths[id(owner)]
    return roots


def join(root: str, path: str) -> str:
    return f"{root}.{path}" if root and path else root or path


def scope_module(props: dict[str, str], root: str) -> str | None:
    text = props.get(NAME_SCOPES)
    if text is None:
        return None
    stack = [s for s in ast.literal_eval(text)[:-1] if s != EMPTY_STACK]
    return join(root, stack[-1] if stack else "")


def props_of(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def load(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path), load_external_data=False)


def check_nodes(files: dict[str, Path], model: Any, roots: dict[str, str], share: float = 0.95) -> dict[str, float]:
    """Every node at the module its own ``name_scopes`` names (a rewrite rule's node: at an ancestor of it), or
    unattributed with a reason; modules are paths of ``named_modules()`` inside the component's root. Returns the
    attributed share of each file, each asserted >= ``share``."""
    modules = {path for path, _ in model.named_modules(remove_duplicate=False)}
    shares = {}
    for name, path in files.items():
        nodes = list(load(path).graph.node)
        attributed = 0
        for node in nodes:
            props = props_of(node)
            module = props.get(MODULE_KEY)
            if module is None:
                assert props.get(SOURCE_KEY) == "unattributed" and props.get(REASON_KEY), (name, node.name)
                continue
            attributed += 1
            assert module in modules, (name, node.name, module)
            assert within(module, roots[name]), (name, node.name, module, roots[name])
            named = scope_module(props, roots[name])
            if named is None:
                continue  # no record of torch's: checked by the fusion test where a fusion made it
            if RULE_NAME in props:  # a rewrite rule made it, with the record of the first node it matched
                assert within(named, module), (name, node.name, node.op_type, module, named)
            else:
                assert module == named, (name, node.name, node.op_type, module, named)
        shares[name] = attributed / len(nodes)
        assert attributed >= share * len(nodes), (name, attributed, len(nodes))
    assert shares, "no component"
    return shares
