"""The definition of where a fused node belongs, implemented independently of the package.

A node ONNX Runtime (or onnxscript) created, that is not a kept node of the annotated graph, belongs
at the lowest common ancestor of the modules of the nodes it replaced: the nodes of the graph before
that are no longer there and whose results flow into what it now computes. Shared by the
optimization tests and the architecture sweep.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import onnx

MODULE_KEY = "pkg.optimum_hierarchy.module"
SOURCE_KEY = "pkg.optimum_hierarchy.source"
SOURCES_KEY = "pkg.optimum_hierarchy.sources"


def graph_nodes(source: Path | onnx.GraphProto) -> list[dict[str, Any]]:
    """The nodes of a file's main graph (or of a graph) as dicts: name, op, inputs, outputs, module, source(s)."""
    graph = onnx.load(str(source), load_external_data=False).graph if isinstance(source, Path) else source
    nodes = []
    for node in graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        nodes.append(
            {
                "name": node.name,
                "op": node.op_type,
                "inputs": list(node.input),
                "outputs": list(node.output),
                "module": props.get(MODULE_KEY),
                "source": props.get(SOURCE_KEY),
                "sources": json.loads(props[SOURCES_KEY]) if SOURCES_KEY in props else [],
            }
        )
    return nodes


def _lca(paths: set[str]) -> str:
    split = [p.split(".") if p else [] for p in paths]
    common: list[str] = []
    for parts in zip(*split, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return ".".join(common)


def within(path: str, ancestor: str) -> bool:
    return ancestor in {"", path} or path.startswith(ancestor + ".")


def expected_fusions(g0: list[dict[str, Any]], g1: list[dict[str, Any]]) -> dict[int, tuple[str, set[str]]]:
    """For each created node of g1 (index): (LCA of the modules of what it replaced, those modules)."""
    by_name = {n["name"]: k for k, n in enumerate(g0)}
    kept = {
        i: by_name[n["name"]]
        for i, n in enumerate(g1)
        if n["name"] in by_name and g0[by_name[n["name"]]]["op"] == n["op"]
    }
    g0_tensors = {t for n in g0 for t in n["inputs"] + n["outputs"] if t}
    counterpart = {t: t for n in g1 for t in n["inputs"] + n["outputs"] if t in g0_tensors}
    for i, k in kept.items():
        slots = list(zip(g1[i]["outputs"], g0[k]["outputs"], strict=False))
        if len(g1[i]["inputs"]) == len(g0[k]["inputs"]):
            slots += list(zip(g1[i]["inputs"], g0[k]["inputs"], strict=True))
        for new, old in slots:
            if new and old:
                counterpart.setdefault(new, old)
    surviving = set(counterpart.values())
    kept0 = set(kept.values())
    producer0 = {}
    for k, n in enumerate(g0):
        for t in n["outputs"]:
            producer0.setdefault(t, k)
    users1 = collections.defaultdict(list)
    producer1 = {}
    for i, n in enumerate(g1):
        for t in n["inputs"]:
            users1[t].append(i)
        for t in n["outputs"]:
            producer1.setdefault(t, i)

    created = [i for i in range(len(g1)) if i not in kept]
    # union-find over created nodes sharing a tensor that has no counterpart
    parent = {i: i for i in created}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in created:
        for t in g1[i]["outputs"]:
            if t and t not in counterpart:
                for j in users1[t]:
                    if j in parent:
                        parent[find(j)] = find(i)
    regions = collections.defaultdict(list)
    for i in created:
        regions[find(i)].append(i)

    def reach(i: int, region: set[int]) -> frozenset[str]:
        out, todo, seen = set(), [i], {i}
        while todo:
            j = todo.pop()
            for t in g1[j]["outputs"]:
                if t in counterpart:
                    out.add(counterpart[t])
                elif t:
                    for c in users1[t]:
                        if c in region and c not in seen:
                            seen.add(c)
                            todo.append(c)
        return frozenset(out)

    def cone(targets: frozenset[str]) -> set[int]:
        found, todo = set(), list(targets)
        visited = set(todo)
        while todo:
            k = producer0.get(todo.pop())
            if k is None or k in kept0 or k in found:
                continue
            found.add(k)
            for u in g0[k]["inputs"]:
                if u and u not in surviving and u not in visited:
                    visited.add(u)
                    todo.append(u)
        return found

    reaches, replaced = {}, {}
    for members in regions.values():
        region = set(members)
        for i in members:
            reaches[i] = reach(i, region)
        union = set().union(*(cone(reaches[i]) for i in members))
        inputs = {counterpart[t] for i in members for t in g1[i]["inputs"] if t in counterpart}
        memo: dict[int, bool] = {}

        def flows(k: int, union: set[int] = union, inputs: set[str] = inputs, memo: dict[int, bool] = memo) -> bool:
            if k not in memo:
                memo[k] = False
                memo[k] = any(
                    u in inputs or (producer0.get(u) in union and flows(producer0[u])) for u in g0[k]["inputs"]
                )
            return memo[k]

        for i in members:
            replaced[i] = {k for k in cone(reaches[i]) if flows(k)}
    claims = collections.defaultdict(set)
    for i, ks in replaced.items():
        for k in ks:
            claims[k].add(i)
    expected = {}
    for i, ks in replaced.items():
        own = {k for k in ks if all(reaches[j] & reaches[i] for j in claims[k])} or ks
        modules = set()
        for k in own:
            modules |= set(g0[k]["sources"]) or ({g0[k]["module"]} if g0[k]["module"] is not None else set())
        if modules:
            expected[i] = (_lca(modules), modules)
    return expected
