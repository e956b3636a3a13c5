"""A self-contained interactive HTML view of an annotated model (no network needed to view it).

One file: the data as JSON inside a ``<script type="application/json">`` element, the style and the
script inline. What it shows: a collapsible module tree with each module's class, node count and
parameter count; a search box over node names and op types; the nodes of the selected module (its
subtree, or its own nodes only) with op type, module and input/output tensors. Clicking a node opens
its details: domain, attributes (short values; tensors and graphs summarized), how it was attributed
(and why not, for an unattributed node) and, for a fused node, the modules of the nodes it replaced. A
module with no nodes of its own left after fusion names the fused nodes its work went to.

Optional result files add columns to the tree: ``optimum-cli hierarchy profile --json`` output (time
per run of each module's subtree) and ``optimum-cli hierarchy error --json`` output (local and
accumulated relative L2 error). Every string from the model or a result file is untrusted: the JSON
has no ``<`` left, and the script inserts text with ``textContent`` only.
"""

from __future__ import annotations

__all__ = ["render_html", "write_html"]

import dataclasses
import html
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx

from optimum_hierarchy.atomic import atomic_write
from optimum_hierarchy.errors import HierarchyError, SchemaError
from optimum_hierarchy.retriever import HierarchyRetriever
from optimum_hierarchy.schema import loads_json
from optimum_hierarchy.walk import iter_proto_nodes
from optimum_hierarchy.wire import read_model_file

ResultSource = str | os.PathLike[str] | Mapping[str, Any]
"""A result file (``hierarchy profile --json`` / ``hierarchy error --json`` output), or its parsed JSON."""

_MAX_VALUE_CHARS = 120
_MAX_LIST_ITEMS = 16
_MAX_SMALL_TENSOR = 8
_ERROR_METRICS = tuple(f"{kind}_{m}" for kind in ("local", "accumulated") for m in ("rel_l2", "max_abs", "cosine"))


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
    retriever: HierarchyRetriever, graph: onnx.ModelProto | None
) -> list[tuple[str, list[list[str]]]] | None:
    """Each node's domain and attributes ``[[name, value text], ...]``, in the retriever's node order.

    Read from ``graph``, else from the retriever's file again (without weights); ``None`` when there is neither.
    """
    if graph is None:
        path = retriever.hierarchy.path
        if path is None:
            return None
        with read_model_file(path) as source:
            return _details_of(source.proto, retriever, str(path))
    return _details_of(graph, retriever, "graph")


def _details_of(proto: onnx.ModelProto, retriever: HierarchyRetriever, where: str) -> list[tuple[str, list[list[str]]]]:
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


@dataclasses.dataclass(frozen=True)
class _ResultKind:
    """A kind of result file, for its messages."""

    what: str
    command: str

    def refuse(self, name: str, problem: str) -> HierarchyError:
        return HierarchyError(f"{name}: not {self.what} ({problem}). Write it with `{self.command}`.")


_PROFILE = _ResultKind("a profile result", "optimum-cli hierarchy profile MODEL --json > profile.json")
_ERROR = _ResultKind("an error result", "optimum-cli hierarchy error REFERENCE CANDIDATE --json > error.json")


def _read_result(source: ResultSource, kind: _ResultKind) -> tuple[str, Mapping[str, Any]]:
    """(what to call it in messages, its JSON) of a result file or of already parsed data."""
    if isinstance(source, Mapping):
        return f"the data given as {kind.what}", source
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise kind.refuse(str(path), "not UTF-8 text") from e
    except OSError as e:
        raise HierarchyError(f"{path}: cannot be read ({e.strerror or e}). Check the path and its permissions.") from e
    try:
        data = loads_json(text, str(path))
    except SchemaError as e:
        raise HierarchyError(f"{e}. {kind.what.capitalize()} is the JSON `{kind.command}` writes.") from e
    if not isinstance(data, Mapping):
        raise kind.refuse(str(path), "a JSON object is expected")
    return str(path), data


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _microseconds(value: object) -> float | None:
    """``value`` as a time in microseconds; ``None`` when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _rows(name: str, data: Mapping[str, Any], kind: _ResultKind, key: str) -> list[Mapping[str, Any]]:
    rows = data.get("modules")
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) and isinstance(r.get(key), str) for r in rows):
        raise kind.refuse(name, f"expected a 'modules' list of objects, each with its module path under {key!r}")
    return rows


def _check_modules(name: str, paths: list[str], retriever: HierarchyRetriever, kind: _ResultKind) -> list[str]:
    """The paths, each the tree's own spelling; an error naming those that are not modules of this model."""
    canonical = [retriever.tree.canonical(p) for p in paths]
    unknown = [p for p, c in zip(paths, canonical, strict=True) if c is None]
    if unknown:
        model = retriever.hierarchy.path or "the model"
        shown = ", ".join(repr(p) for p in unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise HierarchyError(
            f"{name}: {shown} {'is not a module' if len(unknown) == 1 else 'are not modules'} of {model}: it is "
            f"{kind.what} for a different model. Give the result for this model (or for another file of the same "
            f"model, e.g. its optimized or quantized version): `{kind.command}`."
        )
    return [c for c in canonical if c is not None]


def _profile_columns(
    source: ResultSource, retriever: HierarchyRetriever
) -> tuple[dict[str, Any], dict[str, dict[str, float | None]]]:
    """(what the view says about the file, module -> its subtree and own time in ms per run)."""
    name, data = _read_result(source, _PROFILE)
    runs = data.get("runs")
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise _PROFILE.refuse(name, "expected 'runs', a positive number of runs")
    rows = _rows(name, data, _PROFILE, "path")
    times: list[tuple[float, float | None]] = []
    for row in rows:
        subtree, own = _microseconds(row.get("subtree_us")), _microseconds(row.get("own_us", 0))
        if subtree is None or own is None:
            raise _PROFILE.refuse(name, f"module {row['path']!r}: 'subtree_us' and 'own_us' must be microseconds")
        times.append((subtree / runs / 1000, own / runs / 1000 if "own_us" in row else None))
    paths = _check_modules(name, [r["path"] for r in rows], retriever, _PROFILE)
    columns = {p: {"subtree_ms": s, "own_ms": o} for p, (s, o) in zip(paths, times, strict=True)}
    return {"file": name, "runs": runs}, columns


def _json_number(value: float) -> float | str:
    """A finite number as it is; NaN and infinities as text (JSON has no such numbers)."""
    return value if math.isfinite(value) else str(value)


def _error_columns(
    source: ResultSource, retriever: HierarchyRetriever
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(what the view says about the file, module -> its error metrics and the reason for those missing)."""
    name, data = _read_result(source, _ERROR)
    rows = _rows(name, data, _ERROR, "module")
    metrics: list[dict[str, Any]] = []
    for row in rows:
        values = {m: row.get(m) for m in _ERROR_METRICS}
        required = all(m in row for m in ("local_rel_l2", "accumulated_rel_l2"))
        if not required or not all(v is None or _is_number(v) for v in values.values()):
            raise _ERROR.refuse(
                name, f"module {row['module']!r}: 'local_rel_l2' and 'accumulated_rel_l2' must be numbers or null"
            )
        record: dict[str, Any] = {m: None if v is None else _json_number(float(v)) for m, v in values.items()}
        reason = row.get("reason")
        record["reason"] = reason if isinstance(reason, str) else None
        metrics.append(record)
    paths = _check_modules(name, [r["module"] for r in rows], retriever, _ERROR)
    about = {"file": name}
    for field in ("reference", "candidate"):
        if isinstance(data.get(field), str):
            about[field] = data[field]
    return about, dict(zip(paths, metrics, strict=True))


def _data(
    retriever: HierarchyRetriever,
    graph: onnx.ModelProto | None = None,
    profile: ResultSource | None = None,
    error: ResultSource | None = None,
) -> dict[str, Any]:
    profile_about, times = _profile_columns(profile, retriever) if profile is not None else (None, {})
    error_about, errors = _error_columns(error, retriever) if error is not None else (None, {})
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
    details = _node_details(retriever, graph)
    nodes = []
    for i, n in enumerate(retriever.nodes):
        domain, attributes = details[i] if details is not None else (None, None)
        nodes.append(
            {
                "name": n.name,
                "op": n.op_type,
                "domain": domain,
                "module": n.module,
                "source": n.source,
                "reason": n.reason,
                "sources": list(n.sources),
                "attrs": attributes,
                "in": n.inputs,
                "out": n.outputs,
            }
        )
    return {"modules": modules, "nodes": nodes, "profile": profile_about, "error": error_about}


def render_html(
    retriever: HierarchyRetriever,
    title: str,
    *,
    graph: onnx.ModelProto | None = None,
    profile: ResultSource | None = None,
    error: ResultSource | None = None,
) -> str:
    """The page, as text.

    ``graph``: the ``ModelProto`` the retriever was built from, for the nodes' domains and attributes; by
    default the retriever's file is read again (without its weights), and a retriever built from a proto
    without it shows none. ``profile`` / ``error``: a file ``optimum-cli hierarchy profile --json`` /
    ``hierarchy error --json`` wrote (or its parsed JSON, ``ModuleProfile.to_dict()`` / ``ErrorReport.to_json()``)
    for this model; a file that is not one, or is of another model, raises :class:`HierarchyError` naming it.
    """
    data = _data(retriever, graph, profile, error)
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    # Names come from the file (untrusted). Inside <script>, "</script" would close the element and
    # "<!--" start an escape state; "\u003c" is the same JSON string with no "<" at all.
    payload = payload.replace("<", "\\u003c")
    return _TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)


def write_html(
    retriever: HierarchyRetriever,
    output: str | os.PathLike[str],
    title: str,
    *,
    graph: onnx.ModelProto | None = None,
    profile: ResultSource | None = None,
    error: ResultSource | None = None,
) -> Path:
    """Write the view (see :func:`render_html`) to ``output`` atomically: a temporary file, then a rename.

    Nothing is written when a result file is refused.
    """
    output = Path(output)
    page = render_html(retriever, title, graph=graph, profile=profile, error=error)
    try:
        atomic_write(output, page.encode("utf-8"))
    except OSError as e:
        raise HierarchyError(
            f"{output}: cannot be written ({e.strerror or e}). Check the directory's permissions and free space."
        ) from e
    return output


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
* { box-sizing: border-box; }
body { font-family: system-ui, sans-serif; margin: 0; display: flex; height: 100vh; }
#left { width: 45%; flex: none; overflow: auto; border-right: 1px solid #ccc; padding: 8px; }
#right { flex: 1; min-width: 0; overflow: auto; padding: 8px; }
ul { list-style: none; padding-left: 16px; margin: 0; }
li.module > .row { display: flex; align-items: baseline; white-space: nowrap; cursor: default; }
li.module.collapsed > ul { display: none; }
button.toggle { flex: none; width: 22px; border: none; background: none; cursor: pointer; }
span.label { cursor: pointer; font-weight: 600; }
span.cls { color: #067; margin-left: 6px; }
span.count { color: #383; margin-left: 6px; }
span.params { color: #839; margin-left: 6px; }
body.with-metrics #left { width: 52%; }
li.module > .row > span { flex: none; }
/* With metric columns, a row that is too long gives up its class name first, then its parameter count. */
body.with-metrics li.module > .row > span.cls, body.with-metrics li.module > .row > span.params {
  min-width: 0; overflow: hidden; text-overflow: ellipsis; }
body.with-metrics li.module > .row > span.cls { flex-shrink: 20; min-width: 2em; }
body.with-metrics li.module > .row > span.params { flex-shrink: 1; }
span.metrics, #columns { margin-left: auto; padding-left: 8px; display: flex; }
span.metric, #columns > span { width: 66px; text-align: right; }
span.metric { font-family: monospace; font-size: 12px; color: #a40; }
#columns { justify-content: flex-end; font-size: 11px; color: #555; }
li.module.selected > .row > span.label { background: #ffe08a; }
li.module.match > .row > span.label { outline: 2px solid #e07; }
#module-info div { margin: 4px 0; overflow-wrap: break-word; }
h3 { overflow-wrap: anywhere; }  /* a long module path wraps rather than widening the page */
.link { color: #06c; cursor: pointer; text-decoration: underline; }
#table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; table-layout: fixed; width: 100%; }
td, th { border-bottom: 1px solid #eee; padding: 2px 6px; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
td.io { color: #555; font-family: monospace; }
tr.node { cursor: pointer; }
tr.node.open { background: #eef4ff; }
tr.detail > td { background: #f6f8fb; padding: 4px 12px 8px; }
table.fields th { width: 10em; font-weight: 600; }
table.attrs td.attr-name { width: 12em; font-family: monospace; }
table.attrs td.attr-value { font-family: monospace; }
#search { width: 95%; padding: 4px; margin-bottom: 8px; }
</style>
</head>
<body>
<div id="left">
  <h3>__TITLE__</h3>
  <input id="search" type="search" placeholder="Search nodes by name or op type">
  <ul id="tree"></ul>
</div>
<div id="right">
  <h3 id="selected">Select a module</h3>
  <div id="module-info"></div>
  <label><input id="own-only" type="checkbox"> own nodes only (not its submodules)</label>
  <p id="summary"></p>
  <div id="table-wrap">
  <table id="node-table">
  <colgroup><col style="width: 28%"><col style="width: 12%"><col style="width: 22%">
  <col style="width: 19%"><col style="width: 19%"></colgroup>
  <thead><tr><th>node</th><th>op type</th><th>module</th><th>inputs</th><th>outputs</th></tr></thead>
  <tbody id="nodes"></tbody></table>
  </div>
</div>
<script type="application/json" id="hierarchy-data">__DATA__</script>
<script>
"use strict";
// Every string in `data` comes from the model or a result file: it is only ever set as textContent.
const data = JSON.parse(document.getElementById("hierarchy-data").textContent);
data.nodes.forEach((n, i) => { n.index = i; });
const modules = new Map(data.modules.map(m => [m.path, m]));
const items = new Map();
let selected = null;
const DASH = "\\u2014";

function nameOf(path) { return path === "" ? "(root)" : path.split(".").pop(); }
function shortClass(cls) { return cls ? cls.split(".").pop() : "?"; }
function within(path, ancestor) { return ancestor === "" || path === ancestor || path.startsWith(ancestor + "."); }
function nodeLabel(n) { return n.name || "<unnamed " + n.op + ">"; }
function moduleText(module) { return module === null ? "(unattributed)" : (module || "(root)"); }
// A node with its module in parentheses: "<unnamed Cast> (root)", not "((root))".
function nodeWhere(n) {
  return nodeLabel(n) + " (" + (n.module === null ? "unattributed" : (n.module || "root")) + ")";
}
function count(n, what) { return n + " " + what + (n === 1 ? "" : "s"); }
function ms(value) { return value.toFixed(3) + " ms"; }
function err(value) {
  if (value === null || value === undefined) return DASH;
  if (typeof value !== "number") return String(value);
  return value === 0 ? "0" : value.toExponential(2);
}
function cosine(value) { return typeof value === "number" ? value.toPrecision(6) : err(value); }

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function link(text, action) {
  const a = el("span", "link", text);
  a.addEventListener("click", e => { e.stopPropagation(); action(); });
  return a;
}

function metricCells(m) {
  const cells = el("span", "metrics");
  if (data.profile) {
    const t = el("span", "metric time", m.time ? ms(m.time.subtree_ms) : "");
    t.title = m.time ? "time per run, this module and its submodules" : "not in the profile";
    cells.append(t);
  }
  if (data.error) {
    for (const kind of ["local", "accumulated"]) {
      const value = m.error ? m.error[kind + "_rel_l2"] : null;
      const c = el("span", "metric " + kind, m.error ? err(value) : "");
      c.title = m.error ? (value === null && m.error.reason ? m.error.reason : kind + " relative L2 error")
                        : "not in the error result";
      cells.append(c);
    }
  }
  return cells;
}

function build(path, depth) {
  const m = modules.get(path);
  const li = el("li", "module" + (depth >= 1 && m.children.length ? " collapsed" : ""));
  li.dataset.path = path;
  const row = el("div", "row");
  const toggle = el("button", "toggle", m.children.length ? (li.classList.contains("collapsed") ? "+" : "-") : "");
  toggle.addEventListener("click", () => setCollapsed(li, !li.classList.contains("collapsed")));
  const label = el("span", "label", nameOf(path));
  label.addEventListener("click", () => select(path));
  const cls = el("span", "cls", shortClass(m.class));
  cls.title = m.class;
  row.append(toggle, label, cls, el("span", "count", count(m.nodes, "node")));
  if (m.params) row.append(el("span", "params", m.params.toLocaleString("en-US") + " params"));
  if (data.profile || data.error) row.append(metricCells(m));
  li.append(row);
  if (m.children.length) {
    const ul = document.createElement("ul");
    for (const child of m.children) ul.append(build(child, depth + 1));
    li.append(ul);
  }
  items.set(path, li);
  return li;
}

function setCollapsed(li, collapsed) {
  if (!modules.get(li.dataset.path).children.length) return;
  li.classList.toggle("collapsed", collapsed);
  li.querySelector(":scope > .row > button.toggle").textContent = collapsed ? "+" : "-";
}

function expandTo(path) {
  let parent = modules.get(path).parent;
  while (parent !== null && parent !== undefined) {
    setCollapsed(items.get(parent), false);
    parent = modules.get(parent).parent;
  }
}

function field(table, name, label, ...content) {
  const tr = el("tr");
  tr.dataset.field = name;
  const td = el("td");
  td.append(...content);
  tr.append(el("th", "", label), td);
  table.append(tr);
}

function joined(parts) {
  const out = [];
  parts.forEach((p, i) => { if (i) out.push(", "); out.push(p); });
  return out;
}

function nodeDetail(n) {
  const table = el("table", "fields");
  field(table, "domain", "domain", n.domain === null ? "(not read)" : (n.domain || "ai.onnx (default)"));
  field(table, "module", "module",
        n.module === null ? "(unattributed)" : link(moduleText(n.module), () => select(n.module)));
  field(table, "source", "attributed by", n.source || "(not recorded)");
  if (n.reason) field(table, "reason", "reason", n.reason);
  if (n.sources.length) {
    const spanning = !n.sources.includes(n.module);
    field(table, "sources", "replaced nodes of",
          ...joined(n.sources.map(s => link(moduleText(s), () => select(s)))),
          spanning ? " (it spans them: attributed to their common ancestor)" : "");
  }
  if (n.attrs === null) {
    field(table, "attributes", "attributes", "(not read)");
  } else if (!n.attrs.length) {
    field(table, "attributes", "attributes", "none");
  } else {
    const attrs = el("table", "attrs");
    for (const [name, value] of n.attrs) {
      const tr = el("tr", "attr");
      tr.dataset.attr = name;
      const v = el("td", "attr-value", value);
      v.title = value;
      tr.append(el("td", "attr-name", name), v);
      attrs.append(tr);
    }
    field(table, "attributes", "attributes", attrs);
  }
  return table;
}

function toggleDetail(tr, n) {
  const next = tr.nextElementSibling;
  if (next && next.classList.contains("detail")) {
    next.remove();
    tr.classList.remove("open");
    return;
  }
  const detail = el("tr", "detail");
  detail.dataset.name = n.name;
  const td = el("td");
  td.colSpan = 5;
  td.append(nodeDetail(n));
  detail.append(td);
  tr.after(detail);
  tr.classList.add("open");
}

function showNodes(nodes, heading) {
  const body = document.getElementById("nodes");
  body.replaceChildren();
  for (const n of nodes) {
    const tr = el("tr", "node");
    tr.dataset.name = n.name;
    const cells = [nodeLabel(n), n.op, moduleText(n.module), n.in.join(", "), n.out.join(", ")];
    cells.forEach((text, i) => {
      const td = el("td", i >= 3 ? "io" : "", text);
      td.title = text;
      tr.append(td);
    });
    tr.addEventListener("click", () => toggleDetail(tr, n));
    body.append(tr);
  }
  document.getElementById("summary").textContent = heading;
  return body;
}

function showNode(n) {
  const body = showNodes([n], "node " + nodeWhere(n));
  toggleDetail(body.firstElementChild, n);
}

function moduleInfo(path, m) {
  const info = document.getElementById("module-info");
  info.replaceChildren();
  const line = (name, ...content) => {
    const div = el("div");
    div.dataset.field = name;
    div.append(...content);
    info.append(div);
  };
  line("counts",
    count(m.nodes, "node") + " (" + m.own + " its own), " + m.params.toLocaleString("en-US") + " parameters");
  if (data.profile) {
    line("time", m.time
      ? "time per run: " + ms(m.time.subtree_ms) + " with its submodules" +
        (m.time.own_ms === null ? "" : ", " + ms(m.time.own_ms) + " in its own nodes") +
        " (" + data.profile.file + ", " + data.profile.runs + " runs)"
      : "time: none of its nodes ran in the profile (" + data.profile.file + ")");
  }
  if (data.error) {
    const e = m.error;
    line("error", e
      ? "error (" + data.error.file + "): local rel L2 " + err(e.local_rel_l2) + ", max abs " + err(e.local_max_abs) +
        ", cosine " + cosine(e.local_cosine) + "; accumulated rel L2 " + err(e.accumulated_rel_l2) +
        ", max abs " + err(e.accumulated_max_abs) + ", cosine " + cosine(e.accumulated_cosine) +
        (e.reason ? " (" + e.reason + ")" : "")
      : "error: not compared (" + data.error.file + ")");
  }
  if (m.fused_into.length) {
    const fused = m.fused_into.map(i => data.nodes[i]);
    const intro = m.own ? "part of its work is in fused nodes elsewhere: "
                        : "no nodes of its own now; its work is in: ";
    line("fused-into", intro,
         ...joined(fused.map(n => link(nodeWhere(n), () => showNode(n)))));
  }
}

function select(path) {
  if (selected !== null) items.get(selected).classList.remove("selected");
  selected = path;
  items.get(path).classList.add("selected");
  expandTo(path);
  const m = modules.get(path);
  document.getElementById("selected").textContent = (path || "(root)") + " \\u2014 " + m.class;
  moduleInfo(path, m);
  const own = document.getElementById("own-only").checked;
  const nodes = data.nodes.filter(n => n.module !== null && (own ? n.module === path : within(n.module, path)));
  showNodes(nodes, count(nodes.length, own ? "own node" : "node") + (own ? "" : " in this module and its submodules"));
}

function search(text) {
  const query = text.trim().toLowerCase();
  for (const li of items.values()) li.classList.remove("match");
  if (!query) { if (selected !== null) select(selected); return; }
  const hits = data.nodes.filter(n => n.name.toLowerCase().includes(query) || n.op.toLowerCase().includes(query));
  for (const n of hits) {
    if (n.module === null) continue;
    items.get(n.module).classList.add("match");
    expandTo(n.module);
  }
  const verb = hits.length === 1 ? " matches" : " match";
  showNodes(hits, count(hits.length, "node") + verb + " \\"" + text.trim() + "\\"");
}

if (data.profile || data.error) {
  document.body.classList.add("with-metrics");
  const columns = el("div");
  columns.id = "columns";
  const heads = [];
  if (data.profile) heads.push(["ms / run", "subtree time per run (" + data.profile.file + ")"]);
  if (data.error) {
    heads.push(["local", "local relative L2 error (" + data.error.file + ")"]);
    heads.push(["accum.", "accumulated relative L2 error (" + data.error.file + ")"]);
  }
  for (const [text, title] of heads) {
    const h = el("span", "", text);
    h.title = title;
    columns.append(h);
  }
  document.getElementById("tree").before(columns);
}
document.getElementById("tree").append(build("", 0));
document.getElementById("own-only").addEventListener("change", () => { if (selected !== null) select(selected); });
document.getElementById("search").addEventListener("input", e => search(e.target.value));
select("");
</script>
</body>
</html>
"""
