"""The data the HTML view reads: the module tree, every node in columns, and the tools' results by module.

The nodes are stored by column (``name``, ``op``, ``module``, ...), with the repeated strings (op types,
sources, domains, tensor names) in tables and referenced by index, so a 20,000-node model is a few MB
of JSON that the page parses at once. Fields few nodes have (a reason, the modules a fused node replaced,
attributes) are maps from the node's index. The page's script (``page.js``) documents what it reads.
"""

from __future__ import annotations

__all__ = ["view_data"]

import json
import math
from typing import Any

import onnx

from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.retriever import HierarchyRetriever
from optimum_hierarchy.tools.error import ErrorReport, Metrics
from optimum_hierarchy.tools.profile import ModuleProfile
from optimum_hierarchy.walk import iter_proto_nodes

_MAX_VALUE_CHARS = 120
_MAX_LIST_ITEMS = 16
_MAX_SMALL_TENSOR = 8


def _text(value: object) -> str:
    """A protobuf string field as text: a field that is not UTF-8 comes as ``bytes``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 1] + "\u2026"


def _listed(items: list[str], total: int) -> str:
    more = f", \u2026 {total} values" if total > len(items) else ""
    return "[" + ", ".join(items) + more + "]"


def _dtype(data_type: int) -> str:
    try:
        return str(onnx.TensorProto.DataType.Name(data_type)).lower()
    except ValueError:
        return f"dtype {data_type}"


def _tensor_text(tensor: onnx.TensorProto) -> str:
    dims = [int(d) for d in tensor.dims]
    text = f"tensor {_dtype(tensor.data_type)} {dims}"
    if math.prod(dims) <= _MAX_SMALL_TENSOR and tensor.data_location != onnx.TensorProto.EXTERNAL:
        try:  # a Constant's few values say more than its shape; an odd encoding keeps the summary
            values = onnx.numpy_helper.to_array(tensor).ravel().tolist()
        except (ValueError, TypeError, KeyError):
            return text
        text += " " + json.dumps(values if dims else values[0], ensure_ascii=False, default=str)
    return text


def _attribute_text(attr: onnx.AttributeProto) -> str:
    """A short text for an attribute's value: numbers and strings as they are, tensors and graphs summarized."""
    kind = onnx.AttributeProto
    if attr.ref_attr_name:
        return f"the calling function's attribute {_text(attr.ref_attr_name)!r}"
    if attr.type == kind.INT:
        return str(attr.i)
    if attr.type == kind.FLOAT:
        return f"{attr.f:.7g}"
    if attr.type == kind.STRING:
        return json.dumps(_text(attr.s), ensure_ascii=False)
    if attr.type == kind.TENSOR:
        return _tensor_text(attr.t)
    if attr.type == kind.SPARSE_TENSOR:
        return f"sparse tensor {_dtype(attr.sparse_tensor.values.data_type)} {list(attr.sparse_tensor.dims)}"
    if attr.type == kind.GRAPH:
        return f"graph {_text(attr.g.name)!r} ({len(attr.g.node)} nodes)"
    if attr.type == kind.TYPE_PROTO:
        return f"type {onnx.helper.printable_type(attr.tp)}"
    if attr.type == kind.INTS:
        return _listed([str(i) for i in attr.ints[:_MAX_LIST_ITEMS]], len(attr.ints))
    if attr.type == kind.FLOATS:
        return _listed([f"{f:.7g}" for f in attr.floats[:_MAX_LIST_ITEMS]], len(attr.floats))
    if attr.type == kind.STRINGS:
        texts = [json.dumps(_text(s), ensure_ascii=False) for s in attr.strings[:_MAX_LIST_ITEMS]]
        return _listed(texts, len(attr.strings))
    counted = {
        kind.TENSORS: ("tensors", attr.tensors),
        kind.GRAPHS: ("graphs", attr.graphs),
        kind.SPARSE_TENSORS: ("sparse tensors", attr.sparse_tensors),
        kind.TYPE_PROTOS: ("types", attr.type_protos),
    }
    if attr.type in counted:
        what, values = counted[attr.type]
        return f"{len(values)} {what}"
    return f"(attribute of type {attr.type})"


def _node_details(
    proto: onnx.ModelProto, retriever: HierarchyRetriever, where: str
) -> list[tuple[str, list[list[str]]]]:
    """Each node's domain and attributes ``[[name, value text], ...]``, in the retriever's node order."""
    found = [node for node, _ in iter_proto_nodes(proto.graph)]
    same = len(found) == len(retriever.nodes) and all(
        _text(p.name) == n.name and _text(p.op_type) == n.op_type for p, n in zip(found, retriever.nodes, strict=True)
    )
    if not same:
        raise HierarchyError(
            f"{where}: its nodes are not those of the hierarchy being drawn (was the file rewritten meanwhile?); "
            "write the view again."
        )
    return [(_text(p.domain), [[_text(a.name), _short(_attribute_text(a))] for a in p.attribute]) for p in found]


class _Table:
    """Distinct strings, each given the index of its first appearance."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        return self.index.setdefault(text, len(self.index))

    def values(self) -> list[str]:
        return list(self.index)


def _json_number(value: float) -> float | str:
    """A finite number as it is; NaN and infinities as text (JSON has no such numbers)."""
    return value if math.isfinite(value) else str(value)


def _metrics(kind: str, metrics: Metrics | None) -> dict[str, float | str | None]:
    fields = ("rel_l2", "max_abs", "cosine")
    if metrics is None:
        return {f"{kind}_{f}": None for f in fields}
    return {f"{kind}_{f}": _json_number(float(getattr(metrics, f))) for f in fields}


def _check_modules(name: str, paths: list[str], retriever: HierarchyRetriever, what: str, command: str) -> list[str]:
    """The paths, each the tree's own spelling; an error naming those that are not modules of this model."""
    canonical = [retriever.tree.canonical(p) for p in paths]
    unknown = [p for p, c in zip(paths, canonical, strict=True) if c is None]
    if unknown:
        model = retriever.hierarchy.path or "the model"
        shown = ", ".join(repr(p) for p in unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise HierarchyError(
            f"{name}: {shown} {'is not a module' if len(unknown) == 1 else 'are not modules'} of {model}: it is "
            f"{what} for a different model. Give the result for this model (or for another file of the same "
            f"model, e.g. its optimized or quantized version): `{command}`."
        )
    return [c for c in canonical if c is not None]


def _profile_columns(
    name: str, profile: ModuleProfile, retriever: HierarchyRetriever
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """(what the view says about the profile, module -> its subtree and own time in ms per run)."""
    from optimum_hierarchy.tools.profile import PROFILE_RESULT

    paths = _check_modules(
        name, [m.path for m in profile.modules], retriever, PROFILE_RESULT.what, PROFILE_RESULT.command
    )
    runs = profile.runs
    columns = {
        p: {"subtree_ms": m.subtree_us / runs / 1000, "own_ms": m.own_us / runs / 1000}
        for p, m in zip(paths, profile.modules, strict=True)
    }
    return {"file": name, "runs": runs}, columns


def _error_columns(
    name: str, report: ErrorReport, retriever: HierarchyRetriever
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(what the view says about the report, module -> its error metrics and the reason for those missing)."""
    from optimum_hierarchy.tools.error import ERROR_RESULT

    paths = _check_modules(name, [m.module for m in report.modules], retriever, ERROR_RESULT.what, ERROR_RESULT.command)
    columns = {}
    for path, m in zip(paths, report.modules, strict=True):
        record: dict[str, Any] = {**_metrics("local", m.local), **_metrics("accumulated", m.accumulated)}
        record.update(_metrics("own", m.own))
        record["reason"] = m.reason
        columns[path] = record
    about = {"file": name, "reference": str(report.reference), "candidate": str(report.candidate)}
    return about, columns


def view_data(
    retriever: HierarchyRetriever,
    graph: onnx.ModelProto | None = None,
    profile: tuple[str, ModuleProfile] | None = None,
    error: tuple[str, ErrorReport] | None = None,
    *,
    where: str = "graph",
) -> dict[str, Any]:
    """The page's data. ``graph``: the model the retriever was built from, for the nodes' domains and attributes
    (none shown without it; ``where`` names it in errors). ``profile`` / ``error``: (what to call the result in
    the page, the result read)."""
    profile_about, times = _profile_columns(*profile, retriever) if profile is not None else (None, {})
    error_about, errors = _error_columns(*error, retriever) if error is not None else (None, {})
    index = {id(n): i for i, n in enumerate(retriever.nodes)}
    modules = []
    for info in retriever.get_module_subtree(""):
        stats = retriever.get_module_stats(info.path)
        # Fused nodes attributed elsewhere (a common ancestor) that replaced nodes of this module.
        own = {id(n) for n in retriever.get_nodes_by_module(info.path)}
        elsewhere = [index[id(n)] for n in retriever.get_nodes_by_module(info.path, spanning=True) if id(n) not in own]
        modules.append(
            {
                "path": info.path,
                "parent": info.parent,
                "class": info.class_name,
                "own": stats.own_nodes,
                "nodes": stats.subtree_nodes,
                "params": stats.subtree_parameters,
                "children": list(retriever.tree.children(info.path)),
                "fused_into": elsewhere,
                "time": times.get(info.path),
                "error": errors.get(info.path),
            }
        )
    position = {m["path"]: i for i, m in enumerate(modules)}
    ops, sources, domains, tensors = _Table(), _Table(), _Table(), _Table()
    details = _node_details(graph, retriever, where) if graph is not None else None
    nodes: dict[str, Any] = {
        "name": [],
        "op": [],
        "module": [],
        "source": [],
        "in": [],
        "out": [],
        "domain": None if details is None else [],
        "attrs": None if details is None else {},
        "reason": {},
        "sources": {},
    }
    for i, n in enumerate(retriever.nodes):
        nodes["name"].append(n.name)
        nodes["op"].append(ops(n.op_type))
        nodes["module"].append(-1 if n.module is None else position[n.module])
        nodes["source"].append(-1 if n.source is None else sources(n.source))
        nodes["in"].append([tensors(t) for t in n.inputs])
        nodes["out"].append([tensors(t) for t in n.outputs])
        if n.reason:
            nodes["reason"][str(i)] = n.reason
        if n.sources:
            nodes["sources"][str(i)] = list(n.sources)
        if details is not None:
            domain, attributes = details[i]
            nodes["domain"].append(domains(domain))
            if attributes:
                nodes["attrs"][str(i)] = attributes
    return {
        "modules": modules,
        "nodes": nodes,
        "ops": ops.values(),
        "sources": sources.values(),
        "domains": domains.values(),
        "tensors": tensors.values(),
        "profile": profile_about,
        "error": error_about,
    }
