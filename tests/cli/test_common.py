"""What the ``optimum-cli hierarchy`` commands share (``optimum_hierarchy.cli.common``)."""

from __future__ import annotations

import json
from argparse import ArgumentParser, Namespace
from pathlib import Path
from typing import Any

import pytest

from optimum_hierarchy.cli import common
from optimum_hierarchy.errors import HierarchyError


def test_the_optimization_levels_are_the_tools_ones() -> None:
    from optimum_hierarchy.tools.runtime import OPTIMIZATION_LEVELS

    assert common.OPTIMIZATION_LEVELS is OPTIMIZATION_LEVELS  # one tuple, tools/choices.py


def test_shared_arguments_parse() -> None:
    parser = ArgumentParser()
    common.model_argument(parser)
    common.json_argument(parser)
    common.shape_argument(parser, "a size")
    common.optimization_level_argument(parser, "the level")
    args = parser.parse_args(["m.onnx", "--json", "--shape", "batch_size=1", "--shape", "sequence_length=8"])
    assert (str(args.model), args.json, args.shape, args.optimization_level) == (
        "m.onnx",
        True,
        ["batch_size=1", "sequence_length=8"],
        "all",
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["m.onnx", "--optimization-level", "O2"])


class _Command:
    def __init__(self, **args: Any) -> None:
        self.args = Namespace(**args)


def test_query_prints_json_or_the_rendering(capsys: pytest.CaptureFixture[str]) -> None:
    common.query(_Command(json=True), lambda a: {"b": 1, "a": "é"}, lambda data: "table")
    assert json.loads(capsys.readouterr().out) == {"b": 1, "a": "é"}
    common.query(_Command(json=False), lambda a: {"b": 1}, lambda data: f"rendered {data['b']}")
    assert capsys.readouterr().out == "rendered 1\n"


def test_query_errors_are_a_message_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    def fail(args: Namespace) -> Any:
        raise HierarchyError("module 'x' not found")

    with pytest.raises(SystemExit) as info:
        common.query(_Command(json=True), fail, str)
    assert info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "module 'x' not found" in captured.err


def test_model_explorer_argument_names_what_it_writes() -> None:
    parser = ArgumentParser()
    common.model_explorer_argument(parser, "each node's ms per run")
    assert parser.parse_args([]).model_explorer is None
    assert str(parser.parse_args(["--model-explorer", "out.json"]).model_explorer) == "out.json"
    assert "each node's ms per run" in parser.format_help()


@pytest.mark.parametrize("columns", [None, "80"])
def test_piped_tables_keep_module_paths_whole(cli_exports: dict[str, Path], columns: str | None) -> None:
    """stdout a pipe, with or without COLUMNS: one table row per line, each node's module path and name unbroken."""
    import os
    import subprocess

    from support import OPTIMUM_CLI

    from optimum_hierarchy import HierarchyRetriever

    model = cli_exports["bert"] / "model.onnx"
    glob = "encoder.layer.0.attention.**"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = columns
    completed = subprocess.run(
        [OPTIMUM_CLI, "hierarchy", "nodes", str(model), glob], capture_output=True, text=True, env=env, check=True
    )
    lines = completed.stdout.splitlines()
    retriever = HierarchyRetriever(model)
    nodes = [n for m in retriever.find_modules(glob) for n in retriever.get_nodes_by_module(m.path)]
    assert nodes and any(n.module and len(n.module) > 30 for n in nodes)
    for node in nodes:
        assert any(node.name in line and f" {node.module} " in line for line in lines), node.name
