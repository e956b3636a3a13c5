"""Both package stacks: what works without optimum-onnx, and how a missing extra is reported."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys

import pytest
from support import run_cli, without_optimum_onnx_reason

from optimum_hierarchy.cli import plugin
from optimum_hierarchy.errors import MissingExtraError, has_optimum_onnx

ONLY_WITHOUT_EXTRA = pytest.mark.skipif(
    without_optimum_onnx_reason() is None, reason="optimum-onnx is installed on this stack"
)


def test_has_optimum_onnx_is_whether_optimums_onnx_exporter_imports() -> None:
    try:
        importlib.import_module("optimum.exporters.onnx")
    except ImportError:
        importable = False
    else:
        importable = True
    assert has_optimum_onnx() is importable


@pytest.mark.cli
def test_optimum_cli_starts_and_lists_the_hierarchy_commands() -> None:
    completed = run_cli("hierarchy", "--help")
    for command in ("export", "annotate", "tree", "nodes", "stats", "view", "profile", "extract", "compare"):
        assert command in completed.stdout
    assert run_cli("env").returncode == 0  # the host's own commands keep working


@pytest.mark.cli
@ONLY_WITHOUT_EXTRA
def test_without_the_extra_export_onnx_says_what_to_do() -> None:
    completed = run_cli("export", "onnx", "--model", "m", "--hierarchy", "out", check=False)
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    message = completed.stderr.replace("\n", " ")
    assert "optimum-hierarchy[onnx]" in message and "optimum-cli hierarchy export" in message


@ONLY_WITHOUT_EXTRA
def test_without_the_extra_its_api_names_the_extra(tmp_path: object) -> None:
    from optimum_hierarchy import export_with_hierarchy

    with pytest.raises(MissingExtraError, match=r"optimum-hierarchy\[onnx\]"):
        export_with_hierarchy("model-dir", "out")
    for module in ("optimum_hierarchy.exporters.onnx_config", "optimum_hierarchy.tools.quantize"):
        code = f"import {module}"
        completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        assert completed.returncode == 1
        assert "MissingExtraError" in completed.stderr and "optimum-hierarchy[onnx]" in completed.stderr


def test_extensions_are_installed_only_where_the_commands_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    extensions = [(f"optimum.commands.fake{i}", lambda i=i: calls.append(f"fake{i}")) for i in range(2)]
    monkeypatch.setattr(plugin, "_extensions", lambda: extensions)
    monkeypatch.setattr(plugin, "_exists", lambda module: module.endswith("fake1"))
    assert plugin.install_command_extensions() == ["optimum.commands.fake1"]
    assert calls == ["fake1"]


def test_an_extension_that_cannot_import_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise ImportError("cannot import name 'ONNXExportCommand'")

    monkeypatch.setattr(plugin, "_extensions", lambda: [("optimum.commands.export.onnx", broken)])
    monkeypatch.setattr(plugin, "_exists", lambda module: True)
    with caplog.at_level(logging.WARNING, logger=plugin.__name__):
        assert plugin.install_command_extensions() == []
    assert "cannot extend optimum.commands.export.onnx" in caplog.text
