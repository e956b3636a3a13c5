"""The view's page files (optimum_hierarchy/view): shipped in the wheel, and safe to inline in one page."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from optimum_hierarchy.view.page import page_file

ROOT = Path(__file__).resolve().parents[2]
FILES = ("page.html", "page.css", "page.js")


def test_page_files_can_be_inlined() -> None:
    """The style and script go inside <style> / <script>: nothing in them may end those or open a comment."""
    html = page_file("page.html")
    for slot in ('<link rel="stylesheet" href="page.css">', '<script src="page.js"></script>', 'id="hierarchy-data"'):
        assert html.count(slot) == 1, slot
    for name in FILES:
        text = page_file(name)
        assert text.strip(), name
        for banned in ("</style", "</script", "<!--", "http://", "https://"):
            assert banned not in text.lower() or (name == "page.html" and banned == "</script"), (name, banned)


@pytest.mark.cli
def test_wheel_holds_the_page_files(tmp_path: Path) -> None:
    """A wheel built from the source tree (hatchling, as .ci/setup builds it) ships the three page files."""
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    (wheel,) = tmp_path.glob("optimum_hierarchy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in FILES:
        assert f"optimum_hierarchy/view/{name}" in names, name
