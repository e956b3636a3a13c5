"""Profile times and per-module errors as Model Explorer's per-node data, shown as node colours.

Google's Model Explorer (``pip install ai-edge-model-explorer``) shows ONNX files through the
``model-explorer-onnx`` adapter, which groups nodes into their modules by the ``namespace`` each node
carries and gives every node an id: its name, made unique by onnx_ir's ``NameFixPass`` (see
:func:`explorer_nodes`). Its "Add per-node data" file, written here, is what
``model_explorer.node_data_builder.ModelNodeData`` serializes to::

    {"<graph id>": {"name": "...", "results": {"<node id>": {"value": 1.5}, ...},
                    "gradient": [{"stop": 0, "bgColor": "#ffffff"}, {"stop": 1, "bgColor": "#d62728"}]}}

Model Explorer colours each node by its value on the gradient, and its group nodes (the modules)
show the sum, mean, min and max of their nodes.

* **profile**: the milliseconds per run of ONNX Runtime's kernels for the node. A node ONNX Runtime
  created by fusion is not in the file: its time goes to the file's node that produced the same output
  tensor (the last node of the subgraph it replaced), so module sums stay right; run the profile with
  ``optimization_level="disable"`` for exactly the file's nodes.
* **error**: each node of the candidate file shows the error of the smallest compared module that holds
  it (the module itself, or its nearest ancestor with a measured error), by default the *local* relative
  L2 error, which points at the module that adds the error. With a local metric a node shows what the
  nodes it belongs with add: the *own* error of that module (:mod:`optimum_hierarchy.tools.error`), its
  local error restricted to its nodes outside its compared submodules. So the reshapes, transposes,
  casts and the mask and shape computations around compared submodules (an attention's, the root's)
  show what they add (about nothing in float), not their submodules' error nor the whole model's; a
  node whose module's own error could not be measured gets no value. With an accumulated metric a
  node shows its module's accumulated error.
"""

from __future__ import annotations

__all__ = [
    "ERROR_METRICS",
    "ExplorerNode",
    "NodeData",
    "check_node_data_path",
    "error_node_data",
    "explorer_nodes",
    "profile_node_data",
    "write_node_data",
]

import collections
import contextlib
import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

from optimum_hierarchy.atomic import atomic_write
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.read import read_hierarchy
from optimum_hierarchy.schema import ModuleTree, decode_node
from optimum_hierarchy.tools.choices import ERROR_METRICS
from optimum_hierarchy.tools.error import ErrorReport
from optimum_hierarchy.tools.profile import ModuleProfile
from optimum_hierarchy.walk import iter_ir_sites
from optimum_hierarchy.wire import read_model_file

_MAIN_GRAPH = "<main>"  # the adapter's id of an unnamed main graph
_GRADIENT = ({"stop": 0, "bgColor": "#ffffff"}, {"stop": 0.5, "bgColor": "#fdae61"}, {"stop": 1, "bgColor": "#d62728"})


@dataclasses.dataclass(frozen=True)
class NodeData:
    """One set of per-node values, and what could not be placed on a node of the file."""

    name: str
    """Shown by Model Explorer as the data's name."""
    values: Mapping[str, Mapping[str, float]]
    """Graph id -> node id -> value."""
    unplaced: int = 0
    """Items (kernel events, nodes) that have no node of the file to show them on."""
    unplaced_note: str = ""

    @property
    def nodes(self) -> int:
        return sum(len(v) for v in self.values.values())

    def to_json(self) -> dict[str, Any]:
        """The "Add per-node data" file: graph id -> ``GraphNodeData`` (Model Explorer's own field names)."""
        return {
            graph: {
                "name": self.name,
                "results": {node: {"value": value} for node, value in sorted(values.items())},
                "gradient": [dict(g) for g in _GRADIENT],
            }
            for graph, values in sorted(self.values.items())
            if values
        }


@dataclasses.dataclass(frozen=True)
class ExplorerNode:
    """A node of the file as the ``model-explorer-onnx`` adapter shows it."""

    graph_id: str
    node_id: str
    name: str
    """Its name in the file (``""`` if it has none)."""
    op_type: str
    outputs: tuple[str, ...]
    module: str | None


def explorer_nodes(proto: onnx.ModelProto) -> list[ExplorerNode]:
    """Every node of ``proto`` with the graph id and node id the ``model-explorer-onnx`` adapter (0.4) gives it.

    The adapter names nodes with onnx_ir's ``NameFixPass`` (an unnamed node gets a generated name, a
    repeated name a suffix), which is run here on a copy too; it embeds an ``If``'s branches in the
    graph holding it, their nodes named ``<If id>/<branch>/<name>``; the body of another control-flow
    node of the main graph (``Loop``, ``Scan``) is the graph ``<node>/<attribute>``. Deeper bodies of
    those are not shown by the adapter and are left out.
    """
    model = ir.serde.deserialize_model(proto)
    before = {
        id(site.node): (site.node.name or "", tuple(v.name for v in site.node.outputs if v.name))
        for site in iter_ir_sites(model.graph)
    }
    with contextlib.suppress(ImportError):  # onnx_ir older than the adapter's: names as they are
        from onnx_ir.passes.common import NameFixPass

        NameFixPass()(model)
    out: list[ExplorerNode] = []

    def visit(graph: ir.Graph, graph_id: str, prefix: str, top: bool) -> None:
        for node in graph:
            name, outputs = before[id(node)]
            node_id = prefix + (node.name or "")
            module = decode_node(node.metadata_props, node.name or "", strict=False).module
            out.append(ExplorerNode(graph_id, node_id, name, node.op_type, outputs, module))
            for attr in node.attributes.values():
                if attr.type != ir.AttributeType.GRAPH:
                    continue
                if node.op_type == "If" and node.domain in {"", "ai.onnx"}:
                    visit(attr.as_graph(), graph_id, f"{node_id}/{attr.name}/", top)
                elif top:
                    visit(attr.as_graph(), f"{node.name}/{attr.name}", "", False)

    visit(model.graph, model.graph.name or _MAIN_GRAPH, "", True)
    return out


def _graph_proto(path: Path) -> onnx.ModelProto:
    with read_model_file(path) as source:  # the graph and its metadata; no weight values
        return source.proto


def profile_node_data(profile: ModuleProfile) -> NodeData:
    """Milliseconds per run of each node of the profiled file (see the module's docstring)."""
    by_name: dict[str, tuple[str, str, str]] = {}
    producer: dict[str, tuple[str, str]] = {}
    for node in explorer_nodes(_graph_proto(profile.model)):
        if node.name:
            by_name.setdefault(node.name, (node.op_type, node.graph_id, node.node_id))
        for tensor in node.outputs:
            producer.setdefault(tensor, (node.graph_id, node.node_id))
    values: dict[str, dict[str, float]] = collections.defaultdict(dict)
    unplaced = unplaced_us = 0
    for n in profile.nodes:
        same = by_name.get(n.node)
        if same is not None and same[0] == n.op_type:
            where: tuple[str, str] | None = same[1:]
        else:
            where = next((producer[t] for t in n.outputs if t in producer), None)
        if where is None:
            unplaced += n.calls
            unplaced_us += n.time_us
            continue
        graph, node_id = where
        values[graph][node_id] = values[graph].get(node_id, 0.0) + n.time_us / profile.runs / 1000
    note = (
        f"{unplaced} kernel events ({unplaced_us / profile.runs / 1000:.3f} ms per run) of nodes that ONNX Runtime "
        "added and that produce no tensor of the file"
        if unplaced
        else ""
    )
    return NodeData(
        name=f"ms per run ({profile.optimization_level})", values=dict(values), unplaced=unplaced, unplaced_note=note
    )


def error_node_data(report: ErrorReport, metric: str = "local_rel_l2") -> NodeData:
    """The error of the smallest compared module holding each node of the candidate file."""
    if metric not in ERROR_METRICS:
        raise HierarchyError(f"metric {metric!r}: expected one of {', '.join(ERROR_METRICS)}.")
    kind, _, field = metric.partition("_")
    measured: dict[str, float | None] = {}  # the compared modules: a value, or None (not measured)
    for row in report.modules:
        metrics = getattr(row, kind)
        if metrics is not None:
            shown = row.own if kind == "local" else metrics  # a node shows what its module's own nodes add
            measured[row.module] = float(getattr(shown, field)) if shown is not None else None
    proto = _graph_proto(report.candidate)
    tree = read_hierarchy(proto).tree  # checks the file's hierarchy metadata
    values: dict[str, dict[str, float]] = collections.defaultdict(dict)
    unplaced = 0
    for node in explorer_nodes(proto):
        value = _nearest(node.module, measured, tree) if node.module is not None else None
        if value is None:
            unplaced += 1
        else:
            values[node.graph_id][node.node_id] = value
    note = (
        f"{unplaced} nodes without a module, without a compared module above them, or whose module's own error "
        "was not measured"
        if unplaced
        else ""
    )
    return NodeData(name=metric, values=dict(values), unplaced=unplaced, unplaced_note=note)


def _nearest(module: str, measured: Mapping[str, float | None], tree: ModuleTree) -> float | None:
    """The value of ``module`` or of its nearest ancestor that was compared (``None``: not measured)."""
    path: str | None = module
    while path is not None:
        if path in measured:
            return measured[path]
        path = tree[path].parent if path in tree else None
    return None


def check_node_data_path(output: str | os.PathLike[str], *models: str | os.PathLike[str]) -> Path:
    """Refuse a node data path that is one of ``models``, a directory, or in a directory that does not exist."""
    output = Path(output)
    for model in models:
        if output.exists() and Path(model).exists() and output.resolve() == Path(model).resolve():
            raise HierarchyError(f"--model-explorer {output}: is a model file; give another path (OUT.json).")
    if output.is_dir():
        raise HierarchyError(f"--model-explorer {output}: is a directory; give the path of the .json file to write.")
    if not output.parent.is_dir():
        raise HierarchyError(f"--model-explorer {output}: no such directory {output.parent}.")
    return output


def write_node_data(data: NodeData, output: str | os.PathLike[str], *models: str | os.PathLike[str]) -> Path:
    """Write ``data`` as Model Explorer's per-node data file, atomically; never over one of ``models``."""
    output = check_node_data_path(output, *models)
    if not data.nodes:
        raise HierarchyError(f"--model-explorer {output}: no value could be placed on a node ({data.unplaced_note}).")
    try:
        atomic_write(output, (json.dumps(data.to_json(), indent=1, sort_keys=True) + "\n").encode("utf-8"))
    except OSError as e:
        raise HierarchyError(f"--model-explorer {output}: cannot be written ({e.strerror or e}).") from e
    return output
