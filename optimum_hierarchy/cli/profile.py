"""``optimum-cli hierarchy profile``: node time by module, measured with ONNX Runtime's profiler.

Import-light: the hierarchy command imports this at start-up; heavy imports are in ``run``.
"""

from __future__ import annotations

__all__ = ["ProfileCommand", "render_profile"]

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from optimum.commands.base import BaseOptimumCLICommand

from optimum_hierarchy.cli.common import (
    json_argument,
    model_explorer_argument,
    optimization_level_argument,
    query,
    shape_argument,
)

_UNATTRIBUTED_ROWS = 20


class ProfileCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        parser.add_argument("model", type=Path, help="An annotated .onnx file, or a directory holding exactly one.")
        parser.add_argument("--runs", type=int, default=10, help="Measured runs; times are their mean (10).")
        parser.add_argument("--warmup", type=int, default=1, help="Runs before those, not measured (1).")
        parser.add_argument(
            "--depth",
            type=int,
            default=None,
            help="Count deeper modules in their ancestor at this depth (default: all levels).",
        )
        shape_argument(parser, "Size of a symbolic input dimension (batch_size=1, sequence_length=128); repeatable.")
        parser.add_argument(
            "--config",
            type=Path,
            default=None,
            help="The model's config.json (or its directory), for input sizes (default: the one beside the model).",
        )
        optimization_level_argument(
            parser, "ONNX Runtime's graph optimizations during the runs (default: all, as deployed)."
        )
        parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime's intra-op threads (its default).")
        json_argument(parser)
        model_explorer_argument(parser, "each node's ms per run")

    def run(self) -> None:
        from optimum_hierarchy.cli.output import report_node_data
        from optimum_hierarchy.tools.explorer import check_node_data_path, profile_node_data
        from optimum_hierarchy.tools.inputs import parse_shapes
        from optimum_hierarchy.tools.profile import aggregate_to_depth, profile_model

        def produce(a: Any) -> dict[str, Any]:
            if a.model_explorer is not None:
                check_node_data_path(a.model_explorer, a.model)
            profile = profile_model(
                a.model,
                runs=a.runs,
                warmup=a.warmup,
                shapes=parse_shapes(a.shape),
                config=a.config,
                optimization_level=a.optimization_level,
                intra_op_threads=a.threads,
            )
            if a.model_explorer is not None:
                report_node_data(profile_node_data(profile), a.model_explorer, profile.model)
            if a.depth is not None:
                profile = aggregate_to_depth(profile, a.depth)
            return profile.to_dict()

        query(self, produce, render_profile)


def _ms(us: int, runs: int) -> str:
    return f"{us / runs / 1000:.3f}"


def render_profile(data: dict[str, Any]) -> Any:
    """The ``--json`` data as a table of modules (indented by depth), then the unattributed events, if any."""
    from rich.console import Group
    from rich.table import Table

    runs = data["runs"]
    total = data["total_us"]
    title = (
        f"Node time by module: {Path(data['model']).name}, mean of {runs} run(s) after {data['warmup']} warm-up, "
        f"ONNX Runtime optimization level {data['optimization_level']}"
    )
    table = Table(title=title)
    table.add_column("module", overflow="fold")
    table.add_column("class")
    for column in ("subtree ms", "own ms", "% of total", "calls/run"):
        table.add_column(column, justify="right")
    for m in data["modules"]:
        name = m["path"].rpartition(".")[2] or "(root)"
        table.add_row(
            "  " * m["depth"] + name,
            m["class_name"].rpartition(".")[2],
            _ms(m["subtree_us"], runs),
            _ms(m["own_us"], runs),
            f"{100 * m['subtree_share']:.1f}",
            f"{m['subtree_calls'] / runs:g}",
        )
    parts: list[Any] = [table]
    share = 100 * data["attributed_us"] / total if total else 100.0
    summary = (
        f"Node time {_ms(total, runs)} ms per run ({data['node_events'] / runs:g} kernel events, {data['graph_nodes']} "
        f"nodes in the graph ONNX Runtime ran); wall time {_ms(data['run_us'], runs)} ms. "
        f"Attributed to modules: {share:.1f}%; unattributed: {data['unattributed_events']} events, "
        f"{_ms(data['unattributed_us'], runs)} ms per run."
    )
    parts.append(summary)
    if data["unattributed"]:
        lost = Table(title="Kernel events without a module")
        for column in ("node", "op type", "ms", "calls", "reason"):
            lost.add_column(column, justify="right" if column in {"ms", "calls"} else "left")
        for u in data["unattributed"][:_UNATTRIBUTED_ROWS]:
            lost.add_row(u["node"], u["op_type"], _ms(u["time_us"], runs), str(u["calls"]), u["reason"])
        if len(data["unattributed"]) > _UNATTRIBUTED_ROWS:
            lost.caption = f"{len(data['unattributed']) - _UNATTRIBUTED_ROWS} more in --json"
        parts.append(lost)
    return Group(*parts)
