"""The query commands ``optimum-cli hierarchy tree|nodes|stats|show|diff``: parsing only.

What each prints, as ``--json`` data and as a table, is in :mod:`optimum_hierarchy.cli.views`.
Import-light: Optimum imports this at start-up through the plugin file; heavy imports are in ``run``.
"""

from __future__ import annotations

__all__ = ["DiffCommand", "NodesCommand", "ShowCommand", "StatsCommand", "TreeCommand"]

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from optimum.commands.base import BaseOptimumCLICommand

from optimum_hierarchy.cli.common import json_argument, model_argument, query


def retriever(path: Path) -> Any:
    """The :class:`~optimum_hierarchy.retriever.HierarchyRetriever` of ``path`` (imported here, not at start-up)."""
    from optimum_hierarchy.retriever import HierarchyRetriever

    return HierarchyRetriever(path)


class TreeCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        model_argument(parser)
        parser.add_argument("--module", default="", help="Start at this module (default: the root).")
        parser.add_argument("--depth", type=int, default=None, help="Levels to show below the start (default: all).")
        json_argument(parser)

    def run(self) -> None:
        from optimum_hierarchy.cli.views import render_tree, tree_data

        query(self, lambda a: tree_data(retriever(a.model), a.module, a.depth), render_tree)


class NodesCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        model_argument(parser)
        parser.add_argument(
            "module",
            help="A module path or glob: '*' is one path segment, '**' any number (encoder.layer.*.attention).",
        )
        parser.add_argument("--own", action="store_true", help="Only nodes attributed to the module itself.")
        parser.add_argument(
            "--spanning",
            action="store_true",
            help="Also fused nodes attributed above the module that replaced some of its nodes.",
        )
        json_argument(parser)

    def run(self) -> None:
        from optimum_hierarchy.cli.views import nodes_data, render_nodes

        query(self, lambda a: nodes_data(retriever(a.model), a.module, own=a.own, spanning=a.spanning), render_nodes)


class StatsCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        model_argument(parser)
        parser.add_argument("--by", choices=["module", "op"], default="module", help="Group by module or op type.")
        parser.add_argument(
            "--depth", type=int, default=1, help="With --by module: group nodes under modules at this depth (1)."
        )
        json_argument(parser)

    def run(self) -> None:
        from optimum_hierarchy.cli.views import render_stats, stats_data

        query(self, lambda a: stats_data(retriever(a.model), by=a.by, depth=a.depth), render_stats)


class ShowCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        model_argument(parser)
        parser.add_argument("node", help="A node name (/encoder/layer.0/attention/self/query/MatMul, Attention_0).")
        json_argument(parser)

    def run(self) -> None:
        from optimum_hierarchy.cli.views import render_show, show_data

        query(self, lambda a: show_data(retriever(a.model), a.node), render_show)


class DiffCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        model_argument(parser, "before", "The first annotated .onnx file (e.g. the plain export).")
        model_argument(parser, "after", "The second one (e.g. its optimized or quantized version).")
        parser.add_argument("--depth", type=int, default=None, help="Only modules down to this depth.")
        parser.add_argument("--all", action="store_true", help="Also modules whose nodes did not change.")
        json_argument(parser)

    def run(self) -> None:
        from optimum_hierarchy.cli.views import diff_data, render_diff

        query(
            self,
            lambda a: diff_data(retriever(a.before), retriever(a.after), depth=a.depth, everything=a.all),
            render_diff,
        )
