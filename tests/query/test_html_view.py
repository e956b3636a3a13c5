"""The HTML view in a real headless Chromium: what a person would see and do."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import run_cli

from optimum_hierarchy import HierarchyRetriever


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


def test_tree_expand_select_and_search(browser: Any, cli_exports: dict[str, Path], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    model = cli_exports["bert"] / "model.onnx"
    page = tmp_path / "bert.html"
    run_cli("hierarchy", "view", str(model), "-o", str(page))
    retriever = HierarchyRetriever(model)

    browser.get(page.as_uri())
    assert browser.find_elements(By.CSS_SELECTOR, "script[src], link[href], img[src]") == []  # self-contained
    assert len(browser.find_elements(By.CSS_SELECTOR, "li.module")) == len(retriever.tree)

    # The root is selected: every node is listed.
    assert browser.find_element(By.ID, "summary").text.startswith(f"{len(retriever.nodes)} nodes")
    # First level visible, deeper levels collapsed.
    encoder = _item(browser, "encoder")
    assert _row_label(encoder).is_displayed()
    assert f"{retriever.get_module_stats('encoder').subtree_nodes} nodes" in encoder.text
    layer = _item(browser, "encoder.layer")
    assert not _row_label(layer).is_displayed()

    # Expand encoder: its child appears, with its class and node count as the retriever says.
    encoder.find_element(By.CSS_SELECTOR, ":scope > .row > button.toggle").click()
    assert _row_label(layer).is_displayed()
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

    # Search: the matching nodes are listed, and their modules highlighted and made visible.
    search = browser.find_element(By.ID, "search")
    search.send_keys("softmax")
    rows = browser.find_elements(By.CSS_SELECTOR, "#nodes tr.node")
    softmax = [n for n in retriever.nodes if "softmax" in n.name.lower() or n.op_type == "Softmax"]
    assert [r.get_attribute("data-name") for r in rows] == [n.name for n in softmax]
    highlighted = [e.get_attribute("data-path") for e in browser.find_elements(By.CSS_SELECTOR, "li.module.match")]
    assert sorted(highlighted) == sorted({n.module for n in softmax})
    for path in highlighted:
        assert _row_label(_item(browser, path)).is_displayed()
