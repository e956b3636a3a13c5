"""`optimum-cli hierarchy ...` query commands, run as the real CLI; their --json equals the API's answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import run_cli

from optimum_hierarchy import HierarchyRetriever
from optimum_hierarchy.cli.views import diff_data, nodes_data, show_data, stats_data, tree_data


def _json(*args: str) -> object:
    return json.loads(run_cli("hierarchy", *args, "--json").stdout)


def test_json_output_matches_the_api(cli_exports: dict[str, Path]) -> None:
    path = cli_exports["bert"] / "model.onnx"
    file = str(path)
    retriever = HierarchyRetriever(path)
    assert _json("tree", file) == tree_data(retriever)
    assert _json("tree", file, "--module", "encoder.layer.0", "--depth", "1") == tree_data(
        retriever, "encoder.layer.0", 1
    )
    assert _json("nodes", file, "encoder.layer.*.attention.self") == nodes_data(
        retriever, "encoder.layer.*.attention.self"
    )
    assert _json("nodes", file, "encoder", "--own") == nodes_data(retriever, "encoder", own=True)
    assert _json("stats", file) == stats_data(retriever)
    assert _json("stats", file, "--by", "op") == stats_data(retriever, by="op")
    assert _json("stats", file, "--depth", "3") == stats_data(retriever, depth=3)
    node = "/encoder/layer.0/attention/self/query/MatMul"
    shown = _json("show", file, node)
    assert shown == show_data(retriever, node)
    assert shown["module"] == "encoder.layer.0.attention.self.query"  # type: ignore[index]
    other = str(cli_exports["gpt2"] / "model.onnx")
    assert _json("diff", file, other, "--depth", "1") == diff_data(retriever, HierarchyRetriever(other), depth=1)


def test_stats_rows_cover_every_node(cli_exports: dict[str, Path]) -> None:
    for depth in ("0", "1", "2", "4"):
        data = _json("stats", str(cli_exports["vit"] / "model.onnx"), "--depth", depth)
        assert sum(r["nodes"] for r in data["rows"]) == data["total_nodes"]  # type: ignore[index]


def test_tables_are_printed(cli_exports: dict[str, Path]) -> None:
    file = str(cli_exports["vit"] / "model.onnx")
    tree = run_cli("hierarchy", "tree", file, "--depth", "2").stdout
    assert "ViTForImageClassification" in tree and "encoder" in tree and "nodes 177" in tree
    assert "layer.0" not in tree  # depth 2 stops above the layers
    assert "MatMul" in run_cli("hierarchy", "stats", file, "--by", "op").stdout
    assert "Conv" in run_cli("hierarchy", "nodes", file, "vit.embeddings.patch_embeddings").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tree", "{plain}"), "optimum-cli hierarchy annotate"),
        (("tree", "{missing}"), "no such file"),
        (("nodes", "{file}", "no.such.*"), "no module matches"),
        (("show", "{file}", "NoSuchNode"), "no node named"),
        (("tree", "{file}", "--module", "nope"), "not a module"),
        (("view", "{file}", "-o", "{missing}/x.html"), "no such directory"),
    ],
)
def test_errors_are_clear(
    args: tuple[str, ...], message: str, cli_exports: dict[str, Path], plain_exports: dict[str, Path], tmp_path: Path
) -> None:
    values = {
        "plain": str(plain_exports["bert"] / "model.onnx"),
        "missing": str(tmp_path / "missing"),
        "file": str(cli_exports["bert"] / "model.onnx"),
    }
    completed = run_cli("hierarchy", *(a.format(**values) for a in args), check=False)
    assert completed.returncode == 1
    assert "error:" in completed.stderr and message in completed.stderr
    assert "Traceback" not in completed.stderr
