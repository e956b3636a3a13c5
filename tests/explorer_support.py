"""Checks of a Model Explorer per-node data file against the format and against the ONNX adapter itself.

The format is that of ``model_explorer.node_data_builder`` (ai-edge-model-explorer): graph id ->
``GraphNodeData`` (``results``: node id -> ``NodeDataResult``; ``gradient``: ``GradientItem``s with
stops 0 and 1). Where ai-edge-model-explorer and model-explorer-onnx are installed (the test extra
has them; CI must), the file is rebuilt with the builder's own dataclasses (which refuse an unknown
field) and serialized by it, and every key is looked up in the graphs the adapter makes of the model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import onnx
import pytest


def load_node_data(path: Path) -> dict[str, Any]:
    """The file, with its shape checked by hand (no package code)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and data, "graph id -> GraphNodeData"
    for graph, entry in data.items():
        assert isinstance(graph, str)
        assert set(entry) <= {"name", "results", "gradient", "thresholds"}, entry.keys()
        assert entry["results"], graph
        for node, result in entry["results"].items():
            assert isinstance(node, str) and set(result) == {"value"}, (node, result)
            assert isinstance(result["value"], (int, float)) and not isinstance(result["value"], bool)
        stops = [g["stop"] for g in entry["gradient"]]
        assert stops[0] == 0 and stops[-1] == 1 and stops == sorted(stops)
    return data


def node_names(path: Path) -> set[str]:
    """The names of the main graph's nodes, read with plain onnx."""
    return {n.name for n in onnx.load(str(path), load_external_data=False).graph.node}


def check_with_model_explorer(model: Path, data: dict[str, Any]) -> None:
    """The builder accepts the data and writes the same JSON; the adapter's graphs have every key."""
    try:
        from model_explorer import node_data_builder as ndb
        from model_explorer_onnx.main import ONNXAdapter
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI must have ai-edge-model-explorer and model-explorer-onnx (the test extra installs them)")
        pytest.skip("ai-edge-model-explorer and model-explorer-onnx are not installed (pip install -e '.[test]')")
    rebuilt = ndb.ModelNodeData(
        graphsData={
            graph: ndb.GraphNodeData(
                name=entry.get("name"),
                results={k: ndb.NodeDataResult(**v) for k, v in entry["results"].items()},
                gradient=[ndb.GradientItem(**g) for g in entry["gradient"]],
            )
            for graph, entry in data.items()
        }
    )
    assert json.loads(rebuilt.to_json_string()) == {
        graph: {
            **entry,
            "thresholds": [],
            "hideInAggregatedStatsTable": False,
            "hideInChildrenStatsTable": False,
            "showExpandedSummaryOnGroupNode": False,
            "showLabelCountColumnsInChildrenStatsTable": False,
        }
        for graph, entry in data.items()
    }
    graphs = {g.id: {n.id for n in g.nodes} for g in ONNXAdapter().convert(str(model), {})["graphs"]}
    for graph, entry in data.items():
        assert graph in graphs, (graph, sorted(graphs))
        missing = set(entry["results"]) - graphs[graph]
        assert not missing, sorted(missing)[:5]
