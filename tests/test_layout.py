"""Tests mirror the package (CONTRIBUTING.md, Layout): ``optimum_hierarchy/a/b.py`` is tested in ``tests/a/test_b.py``,
or CONTRIBUTING's table "Where a module's tests live" names the test files that use it instead."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "optimum_hierarchy"


def _modules() -> list[str]:
    return sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def _mirror(module: str) -> Path:
    path = Path(module)
    return ROOT / "tests" / path.parent / f"test_{path.name}"


def _table() -> dict[str, list[str]]:
    """CONTRIBUTING's table: each module listed in a row, with the test files of that row."""
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    section = text.split("### Where a module's tests live", 1)[1].split("\n#", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| `") else []
        if len(cells) == 2:
            tests = re.findall(r"`([^`]+)`", cells[1])
            for module in re.findall(r"`([^`]+)`", cells[0]):
                assert module not in rows, f"{module}: two rows"
                rows[module] = tests
    return rows


def test_every_module_has_its_tests_somewhere() -> None:
    table = _table()
    missing = [m for m in _modules() if not _mirror(m).is_file() and m not in table]
    assert not missing, f"no tests/<path>/test_<name>.py and no row in CONTRIBUTING's table: {missing}"


def test_the_table_names_real_files_and_only_modules_without_a_mirror() -> None:
    table = _table()
    assert len(table) > 20
    modules = set(_modules())
    for module, tests in table.items():
        assert module in modules, f"CONTRIBUTING's table lists {module}, which is not a package module"
        assert not _mirror(module).is_file(), f"{module} has its mirror file; drop its row"
        assert tests and all((ROOT / t).is_file() for t in tests), f"{module}: {tests}"


def test_no_test_directory_without_a_package_directory() -> None:
    """A test directory mirrors a package directory, or is one of the cross-cutting suites CONTRIBUTING names."""
    cross_cutting = {"reliability", "sweep", "optimization", "golden"}
    directories = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert directories - packages - cross_cutting == set()


def test_the_layout_section_names_every_package_file_and_folder() -> None:
    """CONTRIBUTING's Layout block names each top-level module and folder of the package, and each module of
    a folder (as ``name.py`` or ``name.py,``), so the tree and its description cannot drift apart silently."""
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    unnamed = []
    for path in sorted(PACKAGE.iterdir()):
        if path.is_dir() and (path / "__init__.py").is_file():
            if not re.search(rf"^\s+{path.name}/", block, re.MULTILINE):
                unnamed.append(f"{path.name}/")
            unnamed += [
                f"{path.name}/{m.name}"
                for m in sorted(path.glob("*.py"))
                if m.name != "__init__.py" and not re.search(rf"\b{re.escape(m.name)}\b", block)
            ]
        elif path.suffix == ".py" and path.name != "__init__.py" and not re.search(rf"^\s+{path.name}\b", block, re.M):
            unnamed.append(path.name)
    assert not unnamed, f"CONTRIBUTING's Layout does not name: {unnamed}"
