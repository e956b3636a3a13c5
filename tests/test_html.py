"""The HTML view in a real headless Chromium: what a person would see and do."""

from __future__ import annotations

import collections
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
from support import run_cli

from optimum_hierarchy import HierarchyRetriever
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.html import write_html
from optimum_hierarchy.tools.error import ErrorReport, Metrics, ModuleError
from optimum_hierarchy.tools.profile import ModuleProfile, ModuleTime


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium and chromedriver (.ci/setup installs Debian's chromium-driver)")
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # No background traffic: this machine's network is closed, and the page must not need any.
    flags = (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
    )  # fmt: skip
    for flag in flags:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    session = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    yield session
    session.quit()


def _item(browser: Any, path: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f'li.module[data-path="{path}"]')


def _row_label(item: Any) -> Any:
    from selenium.webdriver.common.by import By

    return item.find_element(By.CSS_SELECTOR, ":scope > .row > span.label")


def _shown(browser: Any, path: str) -> bool:
    """Whether the module's row is drawn and displayed (the tree draws only the rows of expanded modules)."""
    from selenium.webdriver.common.by import By

    items = browser.find_elements(By.CSS_SELECTOR, f'li.module[data-path="{path}"]')
    return any(_row_label(item).is_displayed() for item in items)


def _summary_after(browser: Any, typed: str) -> str:
    """The node list's heading once the search for what was typed has run (at the next animation frame)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    summary = browser.find_element(By.ID, "summary")
    query = typed.strip()
    if query:
        WebDriverWait(browser, 10).until(lambda _: summary.text.endswith(f' "{query}"'))
    else:
        WebDriverWait(browser, 10).until(lambda _: not summary.text.endswith('"'))
    return str(summary.text)


def _all_tree_paths(browser: Any) -> list[str]:
    """Every module row of the tree, expanded whole and scrolled through from top to bottom."""
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "expand-all").click()
    seen: list[str] = []
    height, view = browser.execute_script(
        "const t = document.getElementById('tree-scroll'); t.scrollTop = 0; return [t.scrollHeight, t.clientHeight];"
    )
    for top in range(0, height, max(1, view // 2)):
        browser.execute_script("document.getElementById('tree-scroll').scrollTop = arguments[0];", top)
        for item in browser.find_elements(By.CSS_SELECTOR, "li.module"):
            path = item.get_attribute("data-path")
            if path not in seen:
                seen.append(path)
    browser.find_element(By.ID, "collapse-all").click()
    return seen


def test_tree_expand_select_and_search(browser: Any, cli_exports: dict[str, Path], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    model = cli_exports["bert"] / "model.onnx"
    page = tmp_path / "bert.html"
    run_cli("hierarchy", "view", str(model), "-o", str(page))
    retriever = HierarchyRetriever(model)

    browser.get(page.as_uri())
    assert browser.find_elements(By.CSS_SELECTOR, "script[src], link[href], img[src]") == []  # self-contained
    # Every module is in the tree, in depth-first order (drawn a window at a time: expanded, then scrolled).
    assert _all_tree_paths(browser) == [m.path for m in retriever.get_module_subtree("")]

    # The root is selected: every node is listed.
    assert browser.find_element(By.ID, "summary").text.startswith(f"{len(retriever.nodes)} nodes")
    # First level visible, deeper levels collapsed.
    encoder = _item(browser, "encoder")
    assert _row_label(encoder).is_displayed()
    assert f"{retriever.get_module_stats('encoder').subtree_nodes} nodes" in encoder.text
    assert not _shown(browser, "encoder.layer")

    # Expand encoder: its child appears, with its class and node count as the retriever says.
    encoder.find_element(By.CSS_SELECTOR, ":scope > .row > button.toggle").click()
    assert _shown(browser, "encoder.layer")
    layer = _item(browser, "encoder.layer")
    stats = retriever.get_module_stats("encoder.layer")
    row = layer.find_element(By.CSS_SELECTOR, ":scope > .row").text
    assert "ModuleList" in row and f"{stats.subtree_nodes} nodes" in row

    # Select a module: its nodes (subtree) are listed with op types and tensors.
    _row_label(layer).click()
    expand = layer.find_element(By.CSS_SELECTOR, ":scope > .row > button.toggle")
    expand.click()
    query = "encoder.layer.0.attention.self.query"
    for ancestor in ("encoder.layer.0", "encoder.layer.0.attention", "encoder.layer.0.attention.self"):
        toggle = _item(browser, ancestor).find_element(By.CSS_SELECTOR, ":scope > .row > button.toggle")
        toggle.click()
    _row_label(_item(browser, query)).click()
    assert browser.find_element(By.ID, "selected").text.startswith(query)
    rows = browser.find_elements(By.CSS_SELECTOR, "#nodes tr.node")
    expected = retriever.get_nodes_by_module(query, subtree=True)
    assert [r.get_attribute("data-name") for r in rows] == [n.name for n in expected]
    matmul = next(r for r in rows if r.get_attribute("data-name") == "/encoder/layer.0/attention/self/query/MatMul")
    cells = [c.text for c in matmul.find_elements(By.TAG_NAME, "td")]
    assert cells[1] == "MatMul" and cells[2] == query
    assert "/embeddings/LayerNorm/LayerNormalization_output_0" in cells[3]
    # Clicked, a node shows its details: an ONNX op without attributes here.
    matmul.click()
    detail = matmul.find_element(By.XPATH, "following-sibling::tr[1]")
    assert _field(detail, "domain").text == "ai.onnx (default)"
    assert _field(detail, "source").text == retriever.get_node(matmul.get_attribute("data-name")).source
    assert _field(detail, "attributes").text == "none"
    # Without result files, no time or error columns.
    assert browser.find_elements(By.CSS_SELECTOR, "#columns, .metrics, #module-info [data-field=time]") == []

    # Search: the matching nodes are listed, and their modules highlighted and made visible.
    search = browser.find_element(By.ID, "search")
    search.send_keys("softmax")
    _summary_after(browser, "softmax")
    rows = browser.find_elements(By.CSS_SELECTOR, "#nodes tr.node")
    softmax = [n for n in retriever.nodes if "softmax" in n.name.lower() or n.op_type == "Softmax"]
    assert [r.get_attribute("data-name") for r in rows] == [n.name for n in softmax]
    highlighted = [e.get_attribute("data-path") for e in browser.find_elements(By.CSS_SELECTOR, "li.module.match")]
    assert sorted(highlighted) == sorted({n.module for n in softmax})
    for path in highlighted:
        assert _row_label(_item(browser, path)).is_displayed()


# --- what the tools know: node details, fused nodes, result columns --------------------------------


def _profile(model: Path, subtree_us: dict[str, int], runs: int) -> ModuleProfile:
    """A profile as `hierarchy profile` makes it, with these subtree times (microseconds over all runs)."""
    total = max(subtree_us.values())
    modules = tuple(
        ModuleTime(path, "C", path.count(".") + bool(path), 0, us, 0, runs, 0, 1, 0.0, us / total)
        for path, us in subtree_us.items()
    )
    return ModuleProfile(model, "disabled", runs, 1, {"input_ids": (1, 8)}, 10, total, total, runs, modules, (), 1)


MODULE_KEY, SOURCE_KEY = "pkg.optimum_hierarchy.module", "pkg.optimum_hierarchy.source"
SOURCES_KEY, REASON_KEY = "pkg.optimum_hierarchy.sources", "pkg.optimum_hierarchy.reason"
LONG_NAME = "/bert/encoder/layer.0/attention/output/dense/" + "a_very_long_node_name_segment_" * 14 + "MatMul"


def _props(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def _set_props(node: onnx.NodeProto, props: dict[str, str]) -> None:
    del node.metadata_props[:]
    for key, value in props.items():
        node.metadata_props.add(key=key, value=value)


def _open_module(browser: Any, path: str) -> None:
    """Unfold the module's ancestors by their toggles, then click its label."""
    from selenium.webdriver.common.by import By

    parts = path.split(".")
    for ancestor in ["", *(".".join(parts[:k]) for k in range(1, len(parts)))]:
        item = _item(browser, ancestor)
        if "collapsed" in (item.get_attribute("class") or ""):
            item.find_element(By.CSS_SELECTOR, ":scope > .row > button.toggle").click()
    _row_label(_item(browser, path)).click()


def _field(detail: Any, name: str) -> Any:
    from selenium.webdriver.common.by import By

    return detail.find_element(By.CSS_SELECTOR, f'table.fields > tr[data-field="{name}"] > td')


def _no_horizontal_scroll(browser: Any) -> None:
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    wrap = browser.execute_script(
        "const w = document.getElementById('table-wrap'); return [w.scrollWidth, w.clientWidth];"
    )
    assert wrap[0] <= wrap[1], wrap


@pytest.mark.sweep  # the sweep's O2 BERT export (ORTOptimizer's com.microsoft fusions), made once per session
def test_fused_nodes_emptied_modules_and_result_columns(
    browser: Any, sweep_exports: dict[str, Any], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    o2 = sweep_exports["bert"].o2
    assert o2 is not None
    proto = onnx.load(str(o2 / "model.onnx"))
    # A long name, and an unattributed node with its reason: what the file may hold.
    long_node = next(n for n in proto.graph.node if n.name == "/bert/encoder/layer.0/attention/output/dense/MatMul")
    long_node.name = LONG_NAME
    tanh = next(n for n in proto.graph.node if n.op_type == "Tanh")
    _set_props(tanh, {SOURCE_KEY: "unattributed", REASON_KEY: "no evidence names a module (test)"})
    model = tmp_path / "model.onnx"
    onnx.save(proto, str(model))

    # Read independently, with plain onnx: the fused nodes, and the modules they emptied.
    fused = [n for n in proto.graph.node if n.domain == "com.microsoft" and _props(n).get(SOURCE_KEY) == "fusion"]
    assert fused
    own_count = collections.Counter(_props(n).get(MODULE_KEY) for n in proto.graph.node)
    took = collections.defaultdict(list)  # module -> the fused nodes elsewhere that replaced its nodes
    for n in proto.graph.node:
        for source in json.loads(_props(n).get(SOURCES_KEY, "[]")):
            if source != _props(n)[MODULE_KEY]:
                took[source].append(n)
    emptied = sorted(m for m in took if own_count[m] == 0)
    assert emptied

    profile_rows = {"": 9872, "bert": 4936, "bert.encoder.layer.0.attention.self": 2468}  # runs 4: 2.468, 1.234, 0.617
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(_profile(model, profile_rows, runs=4).to_dict()))
    error = tmp_path / "error.json"
    metrics = {"local": Metrics(max_abs=0.5, rel_l2=0.00125, cosine=0.99), "zero": Metrics(0.0, 0.0, 1.0)}
    accumulated = Metrics(max_abs=1.5, rel_l2=0.0375, cosine=0.9)
    error_rows = [
        ModuleError("", "BertModel", ("logits",), accumulated, metrics["zero"]),
        ModuleError("bert.encoder.layer.0.attention.self", "BertSelfAttention", ("t",), accumulated, metrics["local"]),
        ModuleError("bert.encoder.layer.0.attention.self.query", "Linear", (), None, None,
                    reason="its output tensors are not in both files"),
    ]  # fmt: skip
    report = ErrorReport(Path("a.onnx"), Path("b.onnx"), {"input_ids": [1, 8]}, tuple(error_rows))
    error.write_text(json.dumps(report.to_json()))
    page = tmp_path / "view.html"
    run_cli("hierarchy", "view", str(model), "-o", str(page), "--profile", str(profile), "--error", str(error))
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text  # no external URL anywhere: it works offline

    browser.set_window_size(1400, 900)
    browser.get(page.as_uri())
    assert browser.find_elements(By.CSS_SELECTOR, "script[src], link[href], img[src]") == []

    # Columns: time per run of the subtree in ms, then local and accumulated relative L2 error.
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#columns > span")] == [
        "ms / run", "local", "accum."
    ]  # fmt: skip
    root = _item(browser, "")
    cells = root.find_elements(By.CSS_SELECTOR, ":scope > .row > .metrics > .metric")
    assert [c.text for c in cells] == ["2.468 ms", "0", "3.75e-2"]
    _open_module(browser, "bert.encoder.layer.0.attention.self")
    attention = _item(browser, "bert.encoder.layer.0.attention.self")
    cells = attention.find_elements(By.CSS_SELECTOR, ":scope > .row > .metrics > .metric")
    assert [c.text for c in cells] == ["0.617 ms", "1.25e-3", "3.75e-2"]
    info = browser.find_element(By.ID, "module-info").text
    assert "0.617 ms with its submodules" in info and "local rel L2 1.25e-3" in info
    bert = _item(browser, "bert").find_elements(By.CSS_SELECTOR, ":scope > .row > .metrics > .metric")
    assert [c.text for c in bert] == ["1.234 ms", "", ""]  # in the profile, not in the error result

    # A fused node: its domain, attributes and the modules it replaced, as the file says.
    node = next(n for n in fused if n.op_type == "Attention")
    module = _props(node)[MODULE_KEY]
    _open_module(browser, module)
    row = browser.find_element(By.CSS_SELECTOR, f'#nodes tr.node[data-name="{node.name}"]')
    row.click()
    detail = row.find_element(By.XPATH, "following-sibling::tr[1]")
    assert "detail" in (detail.get_attribute("class") or "")
    assert _field(detail, "domain").text == node.domain == "com.microsoft"
    assert _field(detail, "source").text == "fusion"
    replaced = [e.text for e in _field(detail, "sources").find_elements(By.CSS_SELECTOR, ".link")]
    assert replaced == [s or "(root)" for s in json.loads(_props(node)[SOURCES_KEY])]
    attrs = detail.find_elements(By.CSS_SELECTOR, "tr.attr")
    assert [a.get_attribute("data-attr") for a in attrs] == [a.name for a in node.attribute]
    assert node.attribute
    for shown, attr in zip(attrs, node.attribute, strict=True):
        value = onnx.helper.get_attribute_value(attr)
        text = shown.find_element(By.CSS_SELECTOR, "td.attr-value").text
        assert float(text) == pytest.approx(value, rel=1e-6) if isinstance(value, float) else text == str(value)

    # An emptied module names the fused nodes that took its work; each opens that node.
    for path in emptied:
        _open_module(browser, path)
        note = browser.find_element(By.CSS_SELECTOR, '#module-info [data-field="fused-into"]')
        assert note.text.startswith("no nodes of its own now; its work is in: ")
        links = note.find_elements(By.CSS_SELECTOR, ".link")
        assert [e.text for e in links] == [f"{n.name or f'<unnamed {n.op_type}>'} ({_props(n)[MODULE_KEY] or 'root'})"
                                           for n in took[path]]  # fmt: skip
    links[-1].click()
    shown = browser.find_elements(By.CSS_SELECTOR, "#nodes tr.node")
    assert [r.get_attribute("data-name") for r in shown] == [took[emptied[-1]][-1].name]
    assert browser.find_element(By.CSS_SELECTOR, "#nodes tr.detail").is_displayed()

    # An unattributed node (found by search): how it was attributed, and why not.
    search = browser.find_element(By.ID, "search")
    search.send_keys("Tanh")
    _summary_after(browser, "Tanh")
    row = browser.find_element(By.CSS_SELECTOR, f'#nodes tr.node[data-name="{tanh.name}"]')
    row.click()
    detail = row.find_element(By.XPATH, "following-sibling::tr[1]")
    assert _field(detail, "module").text == "(unattributed)"
    assert _field(detail, "source").text == "unattributed"
    assert _field(detail, "reason").text == "no evidence names a module (test)"
    search.clear()
    search.send_keys(" ")  # an empty query: back to the selected module
    _summary_after(browser, " ")

    # At 1400 x 900 the node table fits, a long node name wraps, its full text on hover.
    _open_module(browser, "bert.encoder.layer.0.attention.output")
    row = browser.find_element(By.CSS_SELECTOR, "#nodes tr.node")
    assert row.get_attribute("data-name") == LONG_NAME
    assert row.find_element(By.TAG_NAME, "td").get_attribute("title") == LONG_NAME
    _no_horizontal_scroll(browser)
    row.click()
    _no_horizontal_scroll(browser)


def test_counts_root_nodes_and_long_module_paths(browser: Any, cli_exports: dict[str, Path], tmp_path: Path) -> None:
    """ "1 node", not "1 nodes"; an unnamed node at the root is "<unnamed Cast> (root)"; a module heading wraps."""
    from selenium.webdriver.common.by import By

    proto = onnx.load(str(cli_exports["bert"] / "model.onnx"))
    # The embeddings' LayerNormalization, made an unnamed fused node at the root that replaced its module's node.
    emptied = "embeddings.LayerNorm"
    (norm,) = [n for n in proto.graph.node if _props(n).get(MODULE_KEY) == emptied]
    assert norm.op_type == "LayerNormalization"
    norm.name = ""
    _set_props(norm, {MODULE_KEY: "", SOURCE_KEY: "fusion", SOURCES_KEY: json.dumps([emptied])})
    model = tmp_path / "model.onnx"
    onnx.save(proto, str(model))
    page = tmp_path / "view.html"
    run_cli("hierarchy", "view", str(model), "-o", str(page))
    retriever = HierarchyRetriever(model)
    single = [m for m in retriever.tree if retriever.get_module_stats(m).subtree_nodes == 1]
    assert single  # the word embeddings' Gather, each other LayerNorm

    browser.set_window_size(1400, 900)
    browser.get(page.as_uri())
    for path in single:
        _open_module(browser, path)
        count = _item(browser, path).find_element(By.CSS_SELECTOR, ":scope > .row > span.count").text
        assert count == "1 node", path
        assert browser.find_element(By.CSS_SELECTOR, '#module-info [data-field="counts"]').text.startswith("1 node (")
        assert browser.find_element(By.ID, "summary").text == "1 node in this module and its submodules"

    _open_module(browser, emptied)
    (fused,) = browser.find_elements(By.CSS_SELECTOR, '#module-info [data-field="fused-into"] .link')
    assert fused.text == "<unnamed LayerNormalization> (root)"
    fused.click()
    assert browser.find_element(By.ID, "summary").text == "node <unnamed LayerNormalization> (root)"

    # A long module path in the heading wraps at 1400 px instead of widening the page.
    long_path = ".".join(["encoder", "layer", "0"] + ["a_rather_long_submodule_name"] * 12)
    browser.execute_script("document.getElementById('selected').textContent = arguments[0];", long_path)
    _no_horizontal_scroll(browser)
    heading = browser.execute_script(
        "const h = document.getElementById('selected'); return [h.scrollWidth, h.clientWidth];"
    )
    assert heading[0] <= heading[1], heading


def test_result_files_that_do_not_fit_are_refused(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    """Not JSON, not the format, or of another model: exit 1, the file named with what to do, no HTML file."""
    model = cli_exports["bert"] / "model.onnx"
    output = tmp_path / "view.html"
    not_json = tmp_path / "profile.txt"
    not_json.write_text("kernel time by module: 12 ms\n")
    completed = run_cli("hierarchy", "view", str(model), "-o", str(output), "--profile", str(not_json), check=False)
    assert completed.returncode == 1
    message = " ".join(completed.stderr.split())
    assert str(not_json) in message and "not valid JSON" in message and "hierarchy profile" in message
    assert not output.exists()

    # The same checks through the API (the CLI only prints them), for the other ways a file can be wrong.
    retriever = HierarchyRetriever(model)
    other_model = _profile(model, {"h.0": 2}, runs=2).to_dict()
    unknown = ModuleError("transformer.h.0", "GPT2Block", ("t",), Metrics(0, 0, 1), Metrics(0, 0, 1))
    not_numbers = ModuleError("", "BertModel", ("t",), Metrics(0, 0, 1), Metrics(0, 0, 1)).to_json()
    not_numbers["local_rel_l2"] = "x"
    wrong: list[tuple[str, Any, str]] = [
        ("profile", {"runs": 10}, "expected a 'modules' list"),
        ("profile", {"runs": 0, "modules": []}, "positive number of runs"),
        ("profile", {"runs": 2, "modules": [{"path": "", "subtree_us": "12"}]}, "must be microseconds"),
        (
            "profile",
            {"runs": 2, "modules": [{"path": "", "own_us": 1, "subtree_us": 2}]},
            "module '': 'depth' must be an integer",
        ),
        ("profile", other_model, "different model"),
        ("error", [], "a JSON object is expected"),
        ("error", ErrorReport(Path("a"), Path("b"), {}, (unknown,)).to_json(), "'transformer.h.0' is not a module"),
        ("error", {"reference": "a", "candidate": "b", "inputs": {}, "modules": [not_numbers]}, "numbers or null"),
    ]
    for i, (kind, content, expected) in enumerate(wrong):
        path = tmp_path / f"{kind}{i}.json"
        path.write_text(json.dumps(content))
        with pytest.raises(HierarchyError, match=expected) as caught:
            write_html(retriever, output, "t", **{kind: path})
        assert str(caught.value).startswith(f"{path}: ") and f"hierarchy {kind}" in str(caught.value)
        assert not output.exists()


def test_pictures_of_error_per_layer_and_precision(browser: Any, cli_exports: dict[str, Path], tmp_path: Path) -> None:
    """Given an int4 file and its error report, the page shows the error per layer and the precision map."""
    from selenium.webdriver.common.by import By

    from optimum_hierarchy.tools.int4 import quantize_int4

    reference = cli_exports["bert"] / "model.onnx"
    candidate = tmp_path / "int4.onnx"
    quantize_int4(reference, candidate, block_size=32, exclude_modules=["encoder.layer.0.attention.self.*"])
    error = tmp_path / "error.json"
    error.write_text(run_cli("hierarchy", "error", str(reference), str(candidate), "--json").stdout)
    page = tmp_path / "int4.html"
    run_cli("hierarchy", "view", str(candidate), "-o", str(page), "--error", str(error))
    assert "http://" not in page.read_text(encoding="utf-8")

    # Read independently, with plain onnx: the modules whose nodes are MatMulNBits.
    graph = onnx.load(str(candidate), load_external_data=False).graph
    int4 = {_props(n)[MODULE_KEY] for n in graph.node if n.op_type == "MatMulNBits"}
    assert int4 and not any(m.startswith("encoder.layer.0.attention.self") for m in int4)

    browser.set_window_size(1400, 900)
    browser.get(page.as_uri())
    figures = browser.find_elements(By.CSS_SELECTOR, "#pictures > figure")
    assert [f.get_attribute("id") for f in figures] == ["error-by-layer", "precision-map"]
    error_svg = browser.find_element(By.CSS_SELECTOR, "#error-by-layer > svg")
    assert error_svg.is_displayed() and error_svg.size["width"] > 100
    titles = [t.get_attribute("textContent") for t in error_svg.find_elements(By.TAG_NAME, "title")]
    for layer in ("encoder.layer.0", "encoder.layer.1"):  # both layers, in both series
        assert any(t.startswith(f"{layer}: local") for t in titles), layer
        assert any(t.startswith(f"{layer}: accumulated") for t in titles), layer
    cells = browser.find_elements(By.CSS_SELECTOR, '#precision-map > svg g[id^="oh-precision-cell-"] > title')
    shown = dict(c.get_attribute("textContent").rsplit(": ", 1) for c in cells)
    assert {m for m, p in shown.items() if p == "int4"} == int4
    assert shown["encoder.layer.0.attention.self.query"] == "fp32"

    # Without an error report or mixed precisions, no pictures.
    plain = tmp_path / "plain.html"
    run_cli("hierarchy", "view", str(reference), "-o", str(plain))
    browser.get(plain.as_uri())
    assert browser.find_elements(By.CSS_SELECTOR, "#pictures figure") == []
    assert not browser.find_element(By.ID, "pictures").is_displayed()


def test_node_table_draws_only_the_rows_on_screen(browser: Any, cli_exports: dict[str, Path], tmp_path: Path) -> None:
    """The root's node list is drawn a window at a time, and scrolling through it shows every node in order."""
    from selenium.webdriver.common.by import By

    model = cli_exports["bert"] / "model.onnx"
    page = tmp_path / "bert.html"
    run_cli("hierarchy", "view", str(model), "-o", str(page))
    names = [n.name for n in HierarchyRetriever(model).nodes]
    browser.set_window_size(1000, 700)
    browser.get(page.as_uri())
    drawn = browser.find_elements(By.CSS_SELECTOR, "#nodes tr.node")
    assert 0 < len(drawn) < len(names) // 2, (len(drawn), len(names))

    # Rows not drawn yet have an estimated height, so the list grows as it is scrolled: scroll to its end.
    script = """const r = document.getElementById('right'); const before = r.scrollTop;
        r.scrollTop = before + r.clientHeight / 2;
        requestAnimationFrame(() => requestAnimationFrame(() => arguments[0](r.scrollTop > before)));"""
    seen: list[str] = []
    moved = True
    while moved:
        for row in browser.find_elements(By.CSS_SELECTOR, "#nodes tr.node"):
            name = row.get_attribute("data-name")
            if name not in seen:
                seen.append(name)
        moved = browser.execute_async_script(script)
    assert seen == names
