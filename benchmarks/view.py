"""The HTML view at scale: the page before issue 24 against today's, side by side, in headless Chromium.

A GPT-2 of 96 layers (``GPT2Config(n_layer=96, n_embd=64, n_head=2)``: the node count of a large model,
the weights of a small one) is exported with TorchScript through Optimum's pipeline with the hierarchy
(``export_with_hierarchy``, task ``text-generation``: about 21,000 nodes). The old page is rendered by
``optimum_hierarchy/html.py`` as of commit ``OLD_COMMIT`` (read with ``git show``), the new one by
today's :func:`optimum_hierarchy.html.write_html`. Each is
opened ``--repeats`` times in a fresh tab of one headless Chromium (selenium), alternating, and measured:

* ``size``: the HTML file in MB;
* ``load``: from navigation start to the end of the first frame painted after the page's script ran
  (``performance.now()`` in a ``setTimeout`` inside a ``requestAnimationFrame``, both pages alike); the new
  page's own ``hierarchy-view-ready`` mark is printed too;
* ``keystroke``: for each character typed into the search box (selenium's ``send_keys``, one key at a
  time, the query ``QUERY``), from the ``keydown`` event's time stamp to the end of the first frame painted
  after the node list's heading (``#summary``) changed. A change made inside an animation frame (the new
  page's search runs there) is counted until the end of the next frame, so the new page's numbers
  include up to one extra frame. ``first key`` is the first character (the one the old page was slowest
  on: it matches the most nodes), ``max key`` the slowest of the query.

Run by hand (about 2 minutes on 2 cores): ``.venv/bin/python benchmarks/view.py``; the table goes to
stdout and the numbers to ``benchmarks/view.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OLD_COMMIT = "4941d0a"
"""The last commit with the page as a Python string template."""
QUERY = "attn"

_WATCH = """
window.__keyMs = null;
const done = (ms) => { window.__keyMs = ms; };
const search = document.getElementById("search");
const summary = document.getElementById("summary");
const before = summary.textContent;
let start = null;
search.addEventListener("keydown", (e) => { start = e.timeStamp; }, { capture: true, once: true });
const observer = new MutationObserver(() => {
  if (summary.textContent === before) return;
  observer.disconnect();
  requestAnimationFrame(() => setTimeout(() => done(performance.now() - start), 0));
});
observer.observe(summary, { childList: true, characterData: true, subtree: true });
"""


def _old_renderer(work: Path) -> Any:
    """``write_html`` of ``optimum_hierarchy/html.py`` at ``OLD_COMMIT``."""
    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:optimum_hierarchy/html.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    path = work / "old_html.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("old_html", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_html"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.write_html


def _export(work: Path, layers: int) -> Path:
    """The GPT-2 through Optimum's pipeline with the hierarchy (``export_with_hierarchy``: TorchScript)."""
    import torch
    import transformers

    from optimum_hierarchy import export_with_hierarchy

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=layers, n_embd=64, n_head=2, vocab_size=1000)
    transformers.GPT2LMHeadModel(config).save_pretrained(work / "gpt2")
    export_with_hierarchy(work / "gpt2", work / "onnx", task="text-generation")
    return work / "onnx" / "model.onnx"


def _browser(profile: Path) -> Any:
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    flags = (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
        "--window-size=1400,900",
    )  # fmt: skip
    for flag in flags:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_script_timeout(120)
    driver.set_page_load_timeout(300)
    return driver


def _measure(driver: Any, page: Path) -> dict[str, Any]:
    from selenium.webdriver.common.by import By

    driver.get("about:blank")
    driver.get(page.as_uri())  # returns after the load event: the inline script has run
    load = driver.execute_async_script(
        "const done = arguments[0]; requestAnimationFrame(() => setTimeout(() => done(performance.now()), 0));"
    )
    ready = driver.execute_script(
        "const m = performance.getEntriesByName('hierarchy-view-ready'); return m.length ? m[0].startTime : null;"
    )
    search = driver.find_element(By.ID, "search")
    keys = []
    for char in QUERY:
        driver.execute_script(_WATCH)
        search.send_keys(char)
        deadline = time.monotonic() + 60
        while (ms := driver.execute_script("return window.__keyMs;")) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{page.name}: the search heading did not change after typing {char!r}")
            time.sleep(0.02)
        keys.append(ms)
    return {"load_ms": load, "ready_ms": ready, "keys_ms": keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "view.json")
    parser.add_argument("--work", type=Path, default=None, help="Keep the export and the pages here (reused).")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from optimum_hierarchy.html import write_html
    from optimum_hierarchy.retriever import HierarchyRetriever

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = work / "onnx" / "model.onnx"
        if not model.exists():
            started = time.perf_counter()
            _export(work, args.layers)
            print(f"exported {model.name} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        retriever = HierarchyRetriever(model)
        pages = {}
        render_s = {}
        for side, write in (("old", _old_renderer(work)), ("new", write_html)):
            started = time.perf_counter()
            pages[side] = write(retriever, work / f"{side}.html", title=model.name)
            render_s[side] = time.perf_counter() - started
        driver = _browser(work / "profile")
        runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
        try:
            for _ in range(args.repeats):
                for side in ("old", "new"):
                    runs[side].append(_measure(driver, pages[side]))
                    print(side, runs[side][-1], file=sys.stderr)
        finally:
            driver.quit()
        result: dict[str, Any] = {"layers": args.layers, "nodes": len(retriever.nodes), "modules": len(retriever.tree)}
        result["query"] = QUERY
        for side in ("old", "new"):
            result[side] = {
                "size_mb": pages[side].stat().st_size / 1e6,
                "render_s": render_s[side],
                "load_ms": statistics.median(r["load_ms"] for r in runs[side]),
                "first_key_ms": statistics.median(r["keys_ms"][0] for r in runs[side]),
                "max_key_ms": statistics.median(max(r["keys_ms"]) for r in runs[side]),
                "ready_ms": statistics.median(r["ready_ms"] for r in runs[side]) if side == "new" else None,
                "runs": runs[side],
            }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    old, new = result["old"], result["new"]
    print(f"GPT-2, {args.layers} layers, TorchScript: {result['nodes']} nodes, {result['modules']} modules")
    print(f"median of {args.repeats} loads; keystrokes typing {QUERY!r}")
    print(f"| {'':<22} | {'old page':>10} | {'new page':>10} | {'new / old':>9} |")
    print(f"|{'-' * 24}|{'-' * 12}:|{'-' * 12}:|{'-' * 10}:|")
    for key, label in (
        ("size_mb", "size (MB)"),
        ("render_s", "render in Python (s)"),
        ("load_ms", "load (ms)"),
        ("first_key_ms", "first keystroke (ms)"),
        ("max_key_ms", "slowest keystroke (ms)"),
    ):
        print(f"| {label:<22} | {old[key]:>10.3f} | {new[key]:>10.3f} | {new[key] / old[key]:>9.3f} |")
    print(f"new page's own ready mark: {new['ready_ms']:.0f} ms after navigation start")


if __name__ == "__main__":
    main()
