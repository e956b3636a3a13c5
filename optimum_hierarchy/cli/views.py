"""What the ``optimum-cli hierarchy`` query commands show: plain data (their ``--json``) and rich renderings of it.

Each ``*_data`` function returns JSON-ready data in a fixed order; the terminal view is drawn from
that same data, so the two cannot disagree.
"""

from __future__ import annotations

__all__ = [
    "diff_data",
    "nodes_data",
    "render_diff",
    "render_nodes",
    "render_show",
    "render_stats",
    "render_tree",
    "show_data",
    "stats_data",
    "tree_data",
]

import collections
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from optimum_hierarchy.modules import depth_of, name_of
from optimum_hierarchy.read import NodeAttribution
from optimum_hierarchy.retriever import HierarchyRetriever


def _short_class(name: str) -> str:
    return name.rpartition(".")[2] or "?"


def tree_data(retriever: HierarchyRetriever, module: str = "", depth: int | None = None) -> dict[str, Any]:
    """The module tree under ``module``, ``depth`` levels deep (``None``: all)."""

    def build(path: str, level: int) -> dict[str, Any]:
        stats = retriever.get_module_stats(path)
        record: dict[str, Any] = {
            "module": path,
            "class": stats.class_name,
            "own_nodes": stats.own_nodes,
            "nodes": stats.subtree_nodes,
            "parameters": stats.subtree_parameters,
        }
        if depth is None or level < depth:
            record["children"] = [build(child, level + 1) for child in retriever.tree.children(path)]
        return record

    return build(module, 0)


def render_tree(data: dict[str, Any]) -> Tree:
    def label(record: dict[str, Any]) -> Text:
        name = name_of(record["module"]) or "(root)"
        text = Text(name, style="bold")
        text.append(f" {_short_class(record['class'])}", style="cyan")
        text.append(f"  nodes {record['nodes']}", style="green")
        if record["parameters"]:
            text.append(f"  params {record['parameters']:,}", style="magenta")
        return text

    def add(branch: Tree, record: dict[str, Any]) -> None:
        for child in record.get("children", []):
            add(branch.add(label(child)), child)

    root = Tree(label(data))
    add(root, data)
    return root


def _node_record(node: NodeAttribution) -> dict[str, Any]:
    return {
        "name": node.name,
        "op_type": node.op_type,
        "module": node.module,
        "source": node.source,
        "sources": list(node.sources),
        "inputs": list(node.inputs),
        "outputs": list(node.outputs),
    }


def nodes_data(
    retriever: HierarchyRetriever, pattern: str, *, own: bool = False, spanning: bool = False
) -> dict[str, Any]:
    """Nodes of the modules matching ``pattern`` (a path or a glob), with their subtrees unless ``own``."""
    modules = [m.path for m in retriever.find_modules(pattern)]
    if not modules:
        raise KeyError(f"no module matches {pattern!r}")
    seen: dict[int, NodeAttribution] = {}
    index = {id(n): i for i, n in enumerate(retriever.nodes)}
    for path in modules:
        for node in retriever.get_nodes_by_module(path, subtree=not own, spanning=spanning):
            seen[index[id(node)]] = node
    nodes = [seen[i] for i in sorted(seen)]
    return {"pattern": pattern, "modules": modules, "nodes": [_node_record(n) for n in nodes]}


def render_nodes(data: dict[str, Any]) -> Table:
    table = Table(title=f"{len(data['nodes'])} nodes in {len(data['modules'])} module(s) matching {data['pattern']!r}")
    for column in ("node", "op type", "module", "source"):
        table.add_column(column)
    for n in data["nodes"]:
        table.add_row(n["name"] or "<unnamed>", n["op_type"], n["module"] or "(root)", n["source"] or "")
    return table


def stats_data(retriever: HierarchyRetriever, *, by: str = "module", depth: int = 1) -> dict[str, Any]:
    """Node and parameter counts by module (grouped at ``depth``) or by op type."""
    if by == "op":
        modules_of: dict[str, set[str | None]] = {}
        for node in retriever.nodes:
            modules_of.setdefault(node.op_type, set()).add(node.module)
        counts = retriever.op_type_counts()
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        by_op = [{"op_type": op, "nodes": n, "modules": len(modules_of[op])} for op, n in ordered]
        return {"by": "op", "total_nodes": len(retriever.nodes), "rows": by_op}
    rows = []
    for path, nodes in retriever.group_operations_by_hierarchy(depth).items():
        stats = retriever.get_module_stats(path)
        grouped_below = depth_of(path) >= depth
        rows.append(
            {
                "module": path,
                "class": stats.class_name,
                "nodes": len(nodes),
                "parameters": stats.subtree_parameters if grouped_below else stats.own_parameters,
                "parameter_bytes": stats.subtree_parameter_bytes if grouped_below else stats.own_parameter_bytes,
                "op_types": dict(
                    sorted(collections.Counter(n.op_type for n in nodes).items(), key=lambda kv: (-kv[1], kv[0]))
                ),
            }
        )
    return {"by": "module", "depth": depth, "total_nodes": len(retriever.nodes), "rows": rows}


def render_stats(data: dict[str, Any]) -> Table:
    total = data["total_nodes"] or 1
    if data["by"] == "op":
        table = Table(title=f"{data['total_nodes']} nodes by op type")
        for column in ("op type", "nodes", "%", "modules"):
            table.add_column(column, justify="left" if column == "op type" else "right")
        for r in data["rows"]:
            table.add_row(r["op_type"], str(r["nodes"]), f"{100 * r['nodes'] / total:.1f}", str(r["modules"]))
        return table
    table = Table(title=f"{data['total_nodes']} nodes by module (depth {data['depth']})")
    for column in ("module", "class", "nodes", "%", "parameters", "top op types"):
        table.add_column(column, justify="right" if column in {"nodes", "%", "parameters"} else "left")
    for r in data["rows"]:
        top = ", ".join(f"{op} {n}" for op, n in list(r["op_types"].items())[:4])
        table.add_row(
            r["module"] or "(root)",
            _short_class(r["class"]),
            str(r["nodes"]),
            f"{100 * r['nodes'] / total:.1f}",
            f"{r['parameters']:,}",
            top,
        )
    return table


def show_data(retriever: HierarchyRetriever, name: str) -> dict[str, Any]:
    node = retriever.get_node(name)
    record = _node_record(node)
    record["graph"] = node.graph
    record["reason"] = node.reason
    record["path_to_root"] = [
        {"module": p, "class": retriever.tree[p].class_name} for p in retriever.get_node_path(name)
    ]
    record["spanning"] = node.spanning
    return record


def render_show(data: dict[str, Any]) -> RenderableType:
    table = Table(show_header=False, title=f"node {data['name'] or '<unnamed>'}")
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("op type", data["op_type"])
    table.add_row("module", data["module"] if data["module"] is not None else "(unattributed)")
    table.add_row("found by", data["source"] or "")
    if data["reason"]:
        table.add_row("reason", data["reason"])
    if data["sources"]:
        table.add_row("replaced nodes of", "\n".join(data["sources"]) + ("\n(spanning)" if data["spanning"] else ""))
    table.add_row("inputs", "\n".join(data["inputs"]))
    table.add_row("outputs", "\n".join(data["outputs"]))
    path = Table(title="from its module up to the root")
    path.add_column("module")
    path.add_column("class")
    for entry in data["path_to_root"]:
        path.add_row(entry["module"] or "(root)", entry["class"])
    return Group(table, path)


def diff_data(
    before: HierarchyRetriever, after: HierarchyRetriever, *, depth: int | None = None, everything: bool = False
) -> dict[str, Any]:
    rows = []
    for d in before.diff(after):
        level = depth_of(d.path)
        if depth is not None and level > depth:
            continue
        if not everything and not d.changed:
            continue
        rows.append(
            {
                "module": d.path,
                "nodes_before": d.nodes_before,
                "nodes_after": d.nodes_after,
                "op_types_before": dict(d.op_types_before),
                "op_types_after": dict(d.op_types_after),
            }
        )
    return {"nodes_before": len(before.nodes), "nodes_after": len(after.nodes), "rows": rows}


def render_diff(data: dict[str, Any]) -> Table:
    table = Table(title=f"nodes by module: {data['nodes_before']} -> {data['nodes_after']}")
    for column in ("module", "before", "after", "op types gone", "op types new"):
        table.add_column(column, justify="right" if column in {"before", "after"} else "left")
    for r in data["rows"]:
        gone = {op: n - r["op_types_after"].get(op, 0) for op, n in r["op_types_before"].items()}
        new = {op: n - r["op_types_before"].get(op, 0) for op, n in r["op_types_after"].items()}
        table.add_row(
            r["module"] or "(root)",
            str(r["nodes_before"]),
            str(r["nodes_after"]),
            ", ".join(f"{op} {n}" for op, n in gone.items() if n > 0),
            ", ".join(f"{op} {n}" for op, n in new.items() if n > 0),
        )
    return table
