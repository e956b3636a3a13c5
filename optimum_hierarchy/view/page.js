// The HTML view of an annotated model: a module tree, the nodes of the selected module, a search box.
//
// The data (view/data.py) is JSON in #hierarchy-data: `modules` (depth first from the root, each with its
// path, parent, class, counts, children and tool results), `nodes` by column (`name`, `op`, `module`,
// `source`, `in`, `out` and `domain` as indices into the tables `ops`, `modules`, `sources`, `tensors` and
// `domains`; -1 for none; `reason`, `sources` and `attrs` as maps from a node's index), `profile` and `error`.
//
// Every string in the data comes from the model or a result file: it is only ever set as textContent.
//
// At 20,000 nodes the page stays fast because it draws only what is on screen: the tree is a window of
// fixed-height rows over the modules whose ancestors are expanded, and the node table a window of rows
// (measured once drawn, estimated before) between two spacer rows. The search runs over an index built
// once (every name lower-cased in one string), at most once per animation frame whatever the typing speed.
// biome-ignore lint/suspicious/noRedundantUseStrict: the page inlines this file as a classic script, not a module
"use strict";

(() => {
  const data = JSON.parse(document.getElementById("hierarchy-data").textContent);
  const DASH = "\u2014";
  const TREE_ROW = 22; // px, as li.module in page.css
  const TREE_OVERSCAN = 30; // rows drawn above and below the visible ones
  const NODE_ROW_ESTIMATE = 21; // px, for a node row not drawn yet while no row of the list is measured
  const NODE_OVERSCAN = 200; // px drawn above and below the visible part of the table

  const modules = data.modules;
  const nodes = data.nodes;
  const nodeCount = nodes.name.length;
  const moduleIndex = new Map(modules.map((m, i) => [m.path, i]));
  const childrenOf = modules.map((m) => m.children.map((c) => moduleIndex.get(c)));
  const parentOf = modules.map((m) => (m.parent === null || m.parent === undefined ? -1 : moduleIndex.get(m.parent)));
  const depthOf = new Int32Array(modules.length);
  // Depth-first order: a module's subtree is the range [first[m], last[m]) of these positions.
  const order = new Int32Array(modules.length);
  const first = new Int32Array(modules.length);
  const last = new Int32Array(modules.length);
  {
    let next = 0;
    const stack = [[0, 0, false]];
    while (stack.length) {
      const [m, depth, done] = stack.pop();
      if (done) {
        last[m] = next;
        continue;
      }
      depthOf[m] = depth;
      first[m] = next;
      order[next++] = m;
      stack.push([m, depth, true]);
      const children = childrenOf[m];
      for (let k = children.length - 1; k >= 0; k--) stack.push([children[k], depth + 1, false]);
    }
  }
  // Each node's module as its depth-first position (-1: unattributed), for subtree tests by range.
  const nodePosition = new Int32Array(nodeCount);
  for (let i = 0; i < nodeCount; i++) nodePosition[i] = nodes.module[i] < 0 ? -1 : first[nodes.module[i]];

  const expanded = new Uint8Array(modules.length);
  expanded[0] = 1; // the root open, the rest closed
  const matched = new Uint8Array(modules.length);
  let selected = null; // a module's index
  let visible = []; // the modules shown in the tree, in order

  const byId = (id) => document.getElementById(id);
  const treeScroll = byId("tree-scroll");
  const tree = byId("tree");
  const right = byId("right");
  const body = byId("nodes");

  // --- text ---------------------------------------------------------------------------------------------

  const pathOf = (m) => modules[m].path;
  const nameOf = (path) => (path === "" ? "(root)" : path.split(".").pop());
  const shortClass = (cls) => (cls ? cls.split(".").pop() : "?");
  const nodeName = (i) => nodes.name[i];
  const nodeOp = (i) => data.ops[nodes.op[i]];
  const nodeModule = (i) => (nodes.module[i] < 0 ? null : pathOf(nodes.module[i]));
  const nodeLabel = (i) => nodeName(i) || `<unnamed ${nodeOp(i)}>`;
  const moduleText = (module) => (module === null ? "(unattributed)" : module || "(root)");
  // A node with its module in parentheses: "<unnamed Cast> (root)", not "((root))".
  const nodeWhere = (i) => {
    const module = nodeModule(i);
    return `${nodeLabel(i)} (${module === null ? "unattributed" : module || "root"})`;
  };
  const count = (n, what) => `${n} ${what}${n === 1 ? "" : "s"}`;
  const ms = (value) => `${value.toFixed(3)} ms`;
  const err = (value) => {
    if (value === null || value === undefined) return DASH;
    if (typeof value !== "number") return String(value);
    return value === 0 ? "0" : value.toExponential(2);
  };
  const cosine = (value) => (typeof value === "number" ? value.toPrecision(6) : err(value));

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function link(text, action) {
    const a = el("span", "link", text);
    a.addEventListener("click", (e) => {
      e.stopPropagation();
      action();
    });
    return a;
  }

  function joined(parts) {
    const out = [];
    parts.forEach((p, i) => {
      if (i) out.push(", ");
      out.push(p);
    });
    return out;
  }

  // --- the tree: a window of rows over the visible modules -----------------------------------------------

  const rows = new Map(); // module index -> its li, made when first drawn

  function metricCells(m) {
    const cells = el("span", "metrics");
    if (data.profile) {
      const t = el("span", "metric time", m.time ? ms(m.time.subtree_ms) : "");
      t.title = m.time ? "time per run, this module and its submodules" : "not in the profile";
      cells.append(t);
    }
    if (data.error) {
      for (const kind of ["local", "accumulated"]) {
        const value = m.error ? m.error[`${kind}_rel_l2`] : null;
        const c = el("span", `metric ${kind}`, m.error ? err(value) : "");
        if (!m.error) c.title = "not in the error result";
        else c.title = value === null && m.error.reason ? m.error.reason : `${kind} relative L2 error`;
        cells.append(c);
      }
    }
    return cells;
  }

  function treeRow(index) {
    let li = rows.get(index);
    if (li) return li;
    const m = modules[index];
    li = el("li", "module");
    li.dataset.path = m.path;
    li.style.paddingLeft = `${depthOf[index] * 16}px`;
    const row = el("div", "row");
    const toggle = el("button", "toggle", "");
    toggle.type = "button";
    toggle.addEventListener("click", () => setExpanded(index, !expanded[index]));
    const label = el("span", "label", nameOf(m.path));
    label.addEventListener("click", () => select(index));
    const cls = el("span", "cls", shortClass(m.class));
    cls.title = m.class;
    row.append(toggle, label, cls, el("span", "count", count(m.nodes, "node")));
    if (m.params) row.append(el("span", "params", `${m.params.toLocaleString("en-US")} params`));
    if (data.profile || data.error) row.append(metricCells(m));
    li.append(row);
    rows.set(index, li);
    return li;
  }

  function layoutTree() {
    visible = [];
    for (let p = 0; p < modules.length; ) {
      const m = order[p];
      visible.push(m);
      p = expanded[m] ? p + 1 : last[m];
    }
    drawTree();
  }

  function drawTree() {
    const top = Math.max(0, Math.floor(treeScroll.scrollTop / TREE_ROW) - TREE_OVERSCAN);
    const shown = Math.ceil(treeScroll.clientHeight / TREE_ROW) + 2 * TREE_OVERSCAN;
    const end = Math.min(visible.length, top + shown);
    const items = [];
    for (let k = top; k < end; k++) {
      const m = visible[k];
      const li = treeRow(m);
      const hasChildren = childrenOf[m].length > 0;
      li.classList.toggle("collapsed", hasChildren && !expanded[m]);
      li.classList.toggle("selected", m === selected);
      li.classList.toggle("match", matched[m] === 1);
      li.firstChild.firstChild.textContent = hasChildren ? (expanded[m] ? "-" : "+") : "";
      items.push(li);
    }
    tree.style.paddingTop = `${top * TREE_ROW}px`;
    tree.style.paddingBottom = `${(visible.length - end) * TREE_ROW}px`;
    tree.replaceChildren(...items);
  }

  function setExpanded(m, open) {
    if (!childrenOf[m].length) return;
    expanded[m] = open ? 1 : 0;
    layoutTree();
  }

  function expandTo(m) {
    for (let p = parentOf[m]; p >= 0; p = parentOf[p]) expanded[p] = 1;
  }

  function scrollTreeTo(m) {
    const k = visible.indexOf(m);
    if (k < 0) return;
    const top = k * TREE_ROW;
    if (top < treeScroll.scrollTop || top + TREE_ROW > treeScroll.scrollTop + treeScroll.clientHeight) {
      treeScroll.scrollTop = Math.max(0, top - treeScroll.clientHeight / 3);
    }
    drawTree();
  }

  // --- the node table: a window of rows between two spacers ----------------------------------------------

  let listed = new Int32Array(0); // node indices of the table
  let heights = new Float64Array(0); // each item's height once drawn (its row and open detail row); 0 before
  let measured = [0, 0]; // the sum and count of the heights measured: their mean stands for the others
  let open = new Set(); // nodes whose details are shown
  let nodeRows = new Map(); // node index -> its tr, for the current list
  const topSpacer = spacer();
  const bottomSpacer = spacer();

  function spacer() {
    const tr = el("tr", "spacer");
    const td = el("td");
    td.colSpan = 5;
    tr.append(td);
    return tr;
  }

  function field(table, name, label, ...content) {
    const tr = el("tr");
    tr.dataset.field = name;
    const td = el("td");
    td.append(...content);
    tr.append(el("th", "", label), td);
    table.append(tr);
  }

  function nodeDetail(i) {
    const table = el("table", "fields");
    const module = nodeModule(i);
    const domain = nodes.domain === null ? null : data.domains[nodes.domain[i]];
    field(table, "domain", "domain", domain === null ? "(not read)" : domain || "ai.onnx (default)");
    field(
      table,
      "module",
      "module",
      module === null ? "(unattributed)" : link(moduleText(module), () => selectPath(module)),
    );
    field(table, "source", "attributed by", nodes.source[i] < 0 ? "(not recorded)" : data.sources[nodes.source[i]]);
    const reason = nodes.reason[i];
    if (reason) field(table, "reason", "reason", reason);
    const sources = nodes.sources[i] || [];
    if (sources.length) {
      const spanning = !sources.includes(module);
      field(
        table,
        "sources",
        "replaced nodes of",
        ...joined(sources.map((s) => link(moduleText(s), () => selectPath(s)))),
        spanning ? " (it spans them: attributed to their common ancestor)" : "",
      );
    }
    const attrs = nodes.attrs === null ? null : nodes.attrs[i] || [];
    if (attrs === null) {
      field(table, "attributes", "attributes", "(not read)");
    } else if (!attrs.length) {
      field(table, "attributes", "attributes", "none");
    } else {
      const list = el("table", "attrs");
      for (const [name, value] of attrs) {
        const tr = el("tr", "attr");
        tr.dataset.attr = name;
        const v = el("td", "attr-value", value);
        v.title = value;
        tr.append(el("td", "attr-name", name), v);
        list.append(tr);
      }
      field(table, "attributes", "attributes", list);
    }
    return table;
  }

  function detailRow(i) {
    const detail = el("tr", "detail");
    detail.dataset.name = nodeName(i);
    const td = el("td");
    td.colSpan = 5;
    td.append(nodeDetail(i));
    detail.append(td);
    return detail;
  }

  function nodeRow(i) {
    let tr = nodeRows.get(i);
    if (tr) return tr;
    tr = el("tr", open.has(i) ? "node open" : "node");
    tr.dataset.name = nodeName(i);
    const tensors = (list) => list.map((t) => data.tensors[t]).join(", ");
    const cells = [nodeLabel(i), nodeOp(i), moduleText(nodeModule(i)), tensors(nodes.in[i]), tensors(nodes.out[i])];
    cells.forEach((text, k) => {
      const td = el("td", k >= 3 ? "io" : "", text);
      td.title = text;
      tr.append(td);
    });
    tr.dataset.index = String(i);
    nodeRows.set(i, tr);
    return tr;
  }

  function toggleDetail(i) {
    const tr = nodeRow(i);
    if (open.has(i)) {
      open.delete(i);
      tr.classList.remove("open");
      if (tr.nextElementSibling?.classList.contains("detail")) tr.nextElementSibling.remove();
    } else {
      open.add(i);
      tr.classList.add("open");
      tr.after(detailRow(i));
    }
    drawNodes();
  }

  function drawNodes() {
    const head = byId("node-table").tHead.getBoundingClientRect().bottom;
    const listTop = head - right.getBoundingClientRect().top + right.scrollTop;
    const from = right.scrollTop - listTop - NODE_OVERSCAN;
    const to = right.scrollTop - listTop + right.clientHeight + NODE_OVERSCAN;
    let y = 0;
    let k = 0;
    const guess = measured[1] ? measured[0] / measured[1] : NODE_ROW_ESTIMATE;
    const height = (j) => heights[j] || guess;
    while (k < listed.length && y + height(k) < from) y += height(k++);
    const start = k;
    const above = y;
    while (k < listed.length && y < to) y += height(k++);
    const end = k;
    let below = 0;
    for (; k < listed.length; k++) below += height(k);
    const items = [topSpacer];
    for (let j = start; j < end; j++) {
      const i = listed[j];
      const tr = nodeRow(i);
      items.push(tr);
      if (open.has(i)) {
        const next = tr.nextElementSibling;
        items.push(next?.classList.contains("detail") ? next : detailRow(i));
      }
    }
    items.push(bottomSpacer);
    topSpacer.firstChild.style.height = `${above}px`;
    bottomSpacer.firstChild.style.height = `${below}px`;
    body.replaceChildren(...items);
    // Measure what was drawn; the next draw places the rows by these heights.
    for (let j = start; j < end; j++) {
      const tr = nodeRows.get(listed[j]);
      const detail = open.has(listed[j]) ? tr.nextElementSibling : null;
      const h = tr.offsetHeight + (detail ? detail.offsetHeight : 0);
      if (!heights[j]) measured = [measured[0] + h, measured[1] + 1];
      else measured = [measured[0] + h - heights[j], measured[1]];
      heights[j] = h;
    }
    if (nodeRows.size > 4 * (end - start) + 200) {
      for (const [i, tr] of nodeRows) if (!tr.isConnected) nodeRows.delete(i);
    }
  }

  function showNodes(list, heading, opened) {
    listed = list;
    heights = new Float64Array(list.length);
    measured = [0, 0];
    open = new Set(opened || []);
    nodeRows = new Map();
    byId("summary").textContent = heading;
    right.scrollTop = 0;
    drawNodes();
  }

  function showNode(i) {
    showNodes(Int32Array.of(i), `node ${nodeWhere(i)}`, [i]);
  }

  // --- the selected module ---------------------------------------------------------------------------------

  function moduleInfo(m) {
    const info = byId("module-info");
    info.replaceChildren();
    const line = (name, ...content) => {
      const div = el("div");
      div.dataset.field = name;
      div.append(...content);
      info.append(div);
    };
    line("counts", `${count(m.nodes, "node")} (${m.own} its own), ${m.params.toLocaleString("en-US")} parameters`);
    if (data.profile) {
      const about = `(${data.profile.file}, ${data.profile.runs} runs)`;
      line(
        "time",
        m.time
          ? `time per run: ${ms(m.time.subtree_ms)} with its submodules, ${ms(m.time.own_ms)} in its own nodes ${about}`
          : `time: none of its nodes ran in the profile (${data.profile.file})`,
      );
    }
    if (data.error) {
      const e = m.error;
      const metrics = (kind, name) =>
        `${name} rel L2 ${err(e[`${kind}_rel_l2`])}, max abs ${err(e[`${kind}_max_abs`])}, ` +
        `cosine ${cosine(e[`${kind}_cosine`])}`;
      const own = e && e.own_rel_l2 !== null ? `; ${metrics("own", "own")}` : "";
      line(
        "error",
        e
          ? `error (${data.error.file}): ${metrics("local", "local")}; ${metrics("accumulated", "accumulated")}` +
              own +
              (e.reason ? ` (${e.reason})` : "")
          : `error: not compared (${data.error.file})`,
      );
    }
    if (m.fused_into.length) {
      const intro = m.own
        ? "part of its work is in fused nodes elsewhere: "
        : "no nodes of its own now; its work is in: ";
      line("fused-into", intro, ...joined(m.fused_into.map((i) => link(nodeWhere(i), () => showNode(i)))));
    }
  }

  function select(index) {
    selected = index;
    const m = modules[index];
    expandTo(index);
    layoutTree();
    scrollTreeTo(index);
    byId("selected").textContent = `${m.path || "(root)"} ${DASH} ${m.class}`;
    moduleInfo(m);
    const own = byId("own-only").checked;
    const list = [];
    if (own) {
      const p = first[index];
      for (let i = 0; i < nodeCount; i++) if (nodePosition[i] === p) list.push(i);
    } else {
      const lo = first[index];
      const hi = last[index];
      for (let i = 0; i < nodeCount; i++) if (nodePosition[i] >= lo && nodePosition[i] < hi) list.push(i);
    }
    const heading = own
      ? count(list.length, "own node")
      : `${count(list.length, "node")} in this module and its submodules`;
    showNodes(Int32Array.from(list), heading);
  }

  function selectPath(path) {
    const index = moduleIndex.get(path);
    if (index !== undefined) select(index);
  }

  // --- search: a substring of a node's name or op type, over an index built once -----------------------------

  let names = null; // every name lower-cased, one after the other
  let starts = null; // where each node's name starts in `names` (and where the last one ends)

  function buildIndex() {
    if (names !== null) return;
    const lower = new Array(nodeCount);
    starts = new Int32Array(nodeCount + 1);
    let at = 0;
    for (let i = 0; i < nodeCount; i++) {
      lower[i] = nodeName(i).toLowerCase();
      starts[i] = at;
      at += lower[i].length;
    }
    starts[nodeCount] = at;
    names = lower.join("");
  }

  function owner(position) {
    // The node whose name holds this position of `names`: the last start at or before it.
    let lo = 0;
    let hi = nodeCount - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid] <= position) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  function matches(query) {
    buildIndex();
    const hit = new Uint8Array(nodeCount);
    for (let at = names.indexOf(query); at >= 0; ) {
      const i = owner(at);
      if (at + query.length <= starts[i + 1]) {
        hit[i] = 1;
        at = names.indexOf(query, starts[i + 1]);
      } else {
        at = names.indexOf(query, at + 1); // it runs over into the next name
      }
    }
    const opHit = data.ops.map((op) => op.toLowerCase().includes(query));
    const found = [];
    for (let i = 0; i < nodeCount; i++) if (hit[i] || opHit[nodes.op[i]]) found.push(i);
    return found;
  }

  function search(text) {
    const query = text.trim().toLowerCase();
    matched.fill(0);
    if (!query) {
      layoutTree();
      if (selected !== null) select(selected);
      return;
    }
    const hits = matches(query);
    for (const i of hits) {
      const m = nodes.module[i];
      if (m < 0 || matched[m]) continue;
      matched[m] = 1;
      expandTo(m);
    }
    layoutTree();
    const verb = hits.length === 1 ? " matches" : " match";
    showNodes(Int32Array.from(hits), `${count(hits.length, "node")}${verb} "${text.trim()}"`);
  }

  let pending = null;
  function scheduleSearch(text) {
    // Keystrokes faster than frames are folded into one search, with the latest text.
    if (pending === null) {
      requestAnimationFrame(() => {
        const query = pending;
        pending = null;
        search(query);
      });
    }
    pending = text;
  }

  // --- start ---------------------------------------------------------------------------------------------------

  if (data.profile || data.error) {
    document.body.classList.add("with-metrics");
    const columns = el("div");
    columns.id = "columns";
    const heads = [];
    if (data.profile) heads.push(["ms / run", `subtree time per run (${data.profile.file})`]);
    if (data.error) {
      heads.push(["local", `local relative L2 error (${data.error.file})`]);
      heads.push(["accum.", `accumulated relative L2 error (${data.error.file})`]);
    }
    for (const [text, title] of heads) {
      const h = el("span", "", text);
      h.title = title;
      columns.append(h);
    }
    treeScroll.before(columns);
  }

  let frame = null;
  const redraw = (what) => () => {
    if (frame !== null) return;
    frame = requestAnimationFrame(() => {
      frame = null;
      what();
    });
  };
  treeScroll.addEventListener("scroll", () => drawTree(), { passive: true });
  right.addEventListener("scroll", redraw(drawNodes), { passive: true });
  window.addEventListener("resize", () => {
    drawTree();
    drawNodes();
  });
  byId("own-only").addEventListener("change", () => {
    if (selected !== null) select(selected);
  });
  byId("search").addEventListener("input", (e) => scheduleSearch(e.target.value));
  body.addEventListener("click", (e) => {
    // One listener for every node row, drawn or not yet: a click in a row (not in its detail) opens it.
    const tr = e.target.closest("tr.node");
    if (tr && body.contains(tr)) toggleDetail(Number(tr.dataset.index));
  });
  byId("expand-all").addEventListener("click", () => {
    for (let m = 0; m < modules.length; m++) if (childrenOf[m].length) expanded[m] = 1;
    layoutTree();
  });
  byId("collapse-all").addEventListener("click", () => {
    expanded.fill(0);
    expanded[0] = 1;
    layoutTree();
  });
  select(0);
  performance.mark("hierarchy-view-ready");
  document.body.dataset.ready = "true";
  setTimeout(buildIndex, 0); // the search index, once the page is drawn
})();
