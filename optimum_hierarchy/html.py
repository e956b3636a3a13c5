"""A self-contained interactive HTML view of an annotated model (no network needed to view it).

One file: the data as JSON inside a ``<script type="application/json">`` element, the style and the
script inline. What it shows: a collapsible module tree with each module's class, node count and
parameter count; a search box over node names and op types; the nodes of the selected module (its
subtree, or its own nodes only) with op type, module and input/output tensors.
"""

from __future__ import annotations

__all__ = ["render_html", "write_html"]

import html
import json
import os
from pathlib import Path
from typing import Any

from optimum_hierarchy.atomic import atomic_write
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.retriever import HierarchyRetriever


def _data(retriever: HierarchyRetriever) -> dict[str, Any]:
    modules = []
    for info in retriever.get_module_subtree(""):
        stats = retriever.get_module_stats(info.path)
        modules.append(
            {
                "path": info.path,
                "parent": info.parent,
                "class": info.class_name,
                "own": stats.own_nodes,
                "nodes": stats.subtree_nodes,
                "params": stats.subtree_parameters,
                "children": list(retriever.tree.children(info.path)),
            }
        )
    nodes = [
        {"name": n.name, "op": n.op_type, "module": n.module, "source": n.source, "in": n.inputs, "out": n.outputs}
        for n in retriever.nodes
    ]
    return {"modules": modules, "nodes": nodes}


def render_html(retriever: HierarchyRetriever, title: str) -> str:
    payload = json.dumps(_data(retriever), separators=(",", ":"), ensure_ascii=False)
    # Names come from the file (untrusted). Inside <script>, "</script" would close the element and
    # "<!--" start an escape state; "\u003c" is the same JSON string with no "<" at all.
    payload = payload.replace("<", "\\u003c")
    return _TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)


def write_html(retriever: HierarchyRetriever, output: str | os.PathLike[str], title: str) -> Path:
    """Write the view to ``output`` atomically (a temporary file in the same directory, then a rename)."""
    output = Path(output)
    try:
        atomic_write(output, render_html(retriever, title).encode("utf-8"))
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
body { font-family: system-ui, sans-serif; margin: 0; display: flex; height: 100vh; }
#left { width: 45%; overflow: auto; border-right: 1px solid #ccc; padding: 8px; }
#right { flex: 1; overflow: auto; padding: 8px; }
ul { list-style: none; padding-left: 16px; margin: 0; }
li.module > .row { white-space: nowrap; cursor: default; }
li.module.collapsed > ul { display: none; }
button.toggle { width: 22px; border: none; background: none; cursor: pointer; }
span.label { cursor: pointer; font-weight: 600; }
span.cls { color: #067; margin-left: 6px; }
span.count { color: #383; margin-left: 6px; }
span.params { color: #839; margin-left: 6px; }
li.module.selected > .row > span.label { background: #ffe08a; }
li.module.match > .row > span.label { outline: 2px solid #e07; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border-bottom: 1px solid #eee; padding: 2px 6px; text-align: left; vertical-align: top; }
td.io { color: #555; font-family: monospace; }
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
  <label><input id="own-only" type="checkbox"> own nodes only (not its submodules)</label>
  <p id="summary"></p>
  <table><thead><tr><th>node</th><th>op type</th><th>module</th><th>inputs</th><th>outputs</th></tr></thead>
  <tbody id="nodes"></tbody></table>
</div>
<script type="application/json" id="hierarchy-data">__DATA__</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("hierarchy-data").textContent);
const modules = new Map(data.modules.map(m => [m.path, m]));
const items = new Map();
let selected = null;

function nameOf(path) { return path === "" ? "(root)" : path.split(".").pop(); }
function shortClass(cls) { return cls ? cls.split(".").pop() : "?"; }
function within(path, ancestor) { return ancestor === "" || path === ancestor || path.startsWith(ancestor + "."); }

function build(path, depth) {
  const m = modules.get(path);
  const li = document.createElement("li");
  li.className = "module" + (depth >= 1 && m.children.length ? " collapsed" : "");
  li.dataset.path = path;
  const row = document.createElement("div");
  row.className = "row";
  const toggle = document.createElement("button");
  toggle.className = "toggle";
  toggle.textContent = m.children.length ? (li.classList.contains("collapsed") ? "+" : "-") : "";
  toggle.addEventListener("click", () => setCollapsed(li, !li.classList.contains("collapsed")));
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = nameOf(path);
  label.addEventListener("click", () => select(path));
  const cls = document.createElement("span");
  cls.className = "cls";
  cls.textContent = shortClass(m.class);
  const count = document.createElement("span");
  count.className = "count";
  count.textContent = m.nodes + " nodes";
  row.append(toggle, label, cls, count);
  if (m.params) {
    const params = document.createElement("span");
    params.className = "params";
    params.textContent = m.params.toLocaleString("en-US") + " params";
    row.append(params);
  }
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

function showNodes(nodes, heading) {
  const body = document.getElementById("nodes");
  body.replaceChildren();
  for (const n of nodes) {
    const tr = document.createElement("tr");
    tr.className = "node";
    tr.dataset.name = n.name;
    const cells = [n.name || "<unnamed>", n.op, n.module === null ? "(unattributed)" : (n.module || "(root)"),
                   n.in.join(", "), n.out.join(", ")];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i >= 3) td.className = "io";
      tr.append(td);
    });
    body.append(tr);
  }
  document.getElementById("summary").textContent = heading;
}

function select(path) {
  if (selected !== null) items.get(selected).classList.remove("selected");
  selected = path;
  items.get(path).classList.add("selected");
  expandTo(path);
  const m = modules.get(path);
  document.getElementById("selected").textContent = (path || "(root)") + " \\u2014 " + m.class;
  const own = document.getElementById("own-only").checked;
  const nodes = data.nodes.filter(n => n.module !== null && (own ? n.module === path : within(n.module, path)));
  showNodes(nodes, nodes.length + (own ? " own nodes" : " nodes in this module and its submodules"));
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
  showNodes(hits, hits.length + " nodes match \\"" + text.trim() + "\\"");
}

document.getElementById("tree").append(build("", 0));
document.getElementById("own-only").addEventListener("change", () => { if (selected !== null) select(selected); });
document.getElementById("search").addEventListener("input", e => search(e.target.value));
select("");
</script>
</body>
</html>
"""
