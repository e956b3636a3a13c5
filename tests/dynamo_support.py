"""Definitions the dynamo tests check against, computed here from the files, independently of the package."""

from __future__ import annotations

import ast
import collections
from collections.abc import Iterable
from pathlib import Path

import onnx

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
NO_MODULE = "_empty_nn_module_stack_from_metadata_hook"


def props(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def name_scope_module(node: onnx.NodeProto) -> str | None:
    """The deepest module path in the node's own name_scopes (the last entry is the FX node's name); None if absent.

    An empty module stack (torch's ``_empty_nn_module_stack_from_metadata_hook``) is the exported module.
    """
    text = props(node).get(NAME_SCOPES)
    if text is None:
        return None
    entries = ast.literal_eval(text)  # the test's own reading of torch's repr
    modules = [e for e in entries[:-1] if e != NO_MODULE]
    return modules[-1] if modules else ""


def module_of(node: onnx.NodeProto) -> str | None:
    return props(node).get("pkg.optimum_hierarchy.module")


def sources_of(node: onnx.NodeProto) -> str | None:
    return props(node).get("pkg.optimum_hierarchy.sources")


def source_of(node: onnx.NodeProto) -> str | None:
    return props(node).get("pkg.optimum_hierarchy.source")


def lca(paths: Iterable[str]) -> str:
    split = [p.split(".") if p else [] for p in paths]
    assert split, "lca of nothing"
    common = split[0]
    for parts in split[1:]:
        n = 0
        while n < min(len(common), len(parts)) and common[n] == parts[n]:
            n += 1
        common = common[:n]
    return ".".join(common)


def within(path: str, ancestor: str) -> bool:
    return not ancestor or path == ancestor or path.startswith(ancestor + ".")


def load(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path), load_external_data=False)


def created_regions(before: onnx.ModelProto, after: onnx.ModelProto) -> list[tuple[list[onnx.NodeProto], set[str]]]:
    """Nodes of ``after`` absent from ``before`` (by name and op type), grouped into regions joined by tensors
    ``before`` does not have, each with the names of the ``before`` nodes it replaced.

    Replaced: the ``before`` nodes gone from ``after`` that lie behind the region's outputs known to ``before``,
    walking producers back to tensors that still exist in ``after``; and those gone from ``after`` that read a
    weight (initializer) the region now reads: the region took over their use of it.
    """
    old_nodes = {(n.name, n.op_type) for n in before.graph.node}
    new = [n for n in after.graph.node if (n.name, n.op_type) not in old_nodes]
    after_names = {(n.name, n.op_type) for n in after.graph.node}
    old_tensors = {t for n in before.graph.node for t in (*n.input, *n.output)} | {i.name for i in before.graph.input}
    after_tensors = {t for n in after.graph.node for t in (*n.input, *n.output)} | {i.name for i in after.graph.input}
    after_tensors |= {i.name for i in after.graph.initializer}
    producer = {t: n for n in before.graph.node for t in n.output}
    initializers = {i.name for i in before.graph.initializer} & {i.name for i in after.graph.initializer}
    # Regions: union of created nodes sharing a tensor unknown to `before`.
    parent = list(range(len(new)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_tensor: dict[str, list[int]] = collections.defaultdict(list)
    for i, n in enumerate(new):
        for t in (*n.input, *n.output):
            if t and t not in old_tensors:
                by_tensor[t].append(i)
    for members in by_tensor.values():
        for j in members[1:]:
            parent[find(j)] = find(members[0])
    groups: dict[int, list[int]] = collections.defaultdict(list)
    for i in range(len(new)):
        groups[find(i)].append(i)
    regions = []
    for members in groups.values():
        nodes = [new[i] for i in members]
        outputs = {t for n in nodes for t in n.output if t in old_tensors}
        replaced: set[str] = set()
        stack = list(outputs)
        seen = set(stack)
        while stack:
            tensor = stack.pop()
            node = producer.get(tensor)
            if node is None or (node.name, node.op_type) in after_names:
                continue
            if tensor not in outputs and tensor in after_tensors:
                continue
            replaced.add(node.name)
            for t in node.input:
                if t and t not in seen:
                    seen.add(t)
                    stack.append(t)
        weights = {t for n in nodes for t in n.input if t in initializers}
        replaced.update(
            n.name for n in before.graph.node if (n.name, n.op_type) not in after_names and weights & set(n.input)
        )
        regions.append((nodes, replaced))
    return regions
