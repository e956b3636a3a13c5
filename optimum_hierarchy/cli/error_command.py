"""``optimum-cli hierarchy error``: per-module error between two ONNX files of one model.

Import-light: Optimum imports this at start-up through the plugin file; heavy imports are in ``run``.
"""

from __future__ import annotations

__all__ = ["ErrorCommand"]

import json
import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from optimum.commands.base import BaseOptimumCLICommand

from optimum_hierarchy.cli.common import json_argument, model_explorer_argument, shape_argument
from optimum_hierarchy.tools.choices import ERROR_METRICS


class ErrorCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        parser.add_argument("reference", type=Path, help="The reference .onnx file (e.g. the float32 export).")
        parser.add_argument("candidate", type=Path, help="The file to measure (int4, int8, fp16, optimized ...).")
        parser.add_argument("--depth", type=int, default=None, help="Only modules down to this depth (root: 0).")
        parser.add_argument(
            "--inputs", type=Path, default=None, help="An .npz of the graph inputs (default: generated, as profile)."
        )
        shape_argument(parser, "A dimension of the generated inputs (batch_size=1, sequence_length=128); repeatable.")
        parser.add_argument("--seed", type=int, default=0, help="Seed of the generated inputs.")
        json_argument(parser)
        model_explorer_argument(parser, "each node of the candidate with its module's error")
        parser.add_argument(
            "--model-explorer-metric",
            choices=ERROR_METRICS,
            default="local_rel_l2",
            help="The error written by --model-explorer (default: local_rel_l2, which points at the culprit).",
        )

    def run(self) -> None:
        from optimum_hierarchy.cli.output import or_exit, report_node_data
        from optimum_hierarchy.tools.error import module_errors
        from optimum_hierarchy.tools.explorer import check_node_data_path, error_node_data
        from optimum_hierarchy.tools.inputs import parse_shapes

        a = self.args
        if a.model_explorer is not None:
            or_exit(lambda: check_node_data_path(a.model_explorer, a.reference, a.candidate))
        report = or_exit(
            lambda: module_errors(
                a.reference,
                a.candidate,
                depth=a.depth,
                feeds=_load_inputs(a.inputs) if a.inputs is not None else None,
                shapes=parse_shapes(a.shape),
                seed=a.seed,
            )
        )
        if a.model_explorer is not None:
            explorer = a.model_explorer
            or_exit(
                lambda: report_node_data(
                    error_node_data(report, a.model_explorer_metric), explorer, a.reference, a.candidate
                )
            )
        if a.json:
            sys.stdout.write(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
            return
        _render(report)


def _load_inputs(path: Path) -> dict[str, Any]:
    import numpy as np

    from optimum_hierarchy.errors import HierarchyError

    if not path.is_file():
        raise HierarchyError(f"--inputs {path}: no such file; give an .npz with one array per graph input.")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError) as e:
        raise HierarchyError(f"--inputs {path}: not a readable .npz ({e}).") from e


def _render(report: Any) -> None:
    from rich.table import Table

    from optimum_hierarchy.cli.output import console as make_console

    table = Table(title=f"Error of {report.candidate.name} against {report.reference.name}, by module")
    table.add_column("module", overflow="fold")
    table.add_column("accumulated rel L2", justify="right")
    table.add_column("accumulated cos", justify="right")
    table.add_column("local max abs", justify="right")
    table.add_column("local rel L2", justify="right")
    noted = 0
    for row in report.modules:
        acc, loc = row.accumulated, row.local
        table.add_row(
            (row.module or "(root)") + (" *" if row.reason else ""),
            f"{acc.rel_l2:.2e}" if acc else "-",
            f"{acc.cosine:.6f}" if acc else "-",
            f"{loc.max_abs:.2e}" if loc else "-",
            f"{loc.rel_l2:.2e}" if loc else "-",
        )
        noted += bool(row.reason)
    console = make_console()
    console.print(table)
    if noted:
        console.print(f"* {noted} modules not (fully) compared; --json gives each reason.", highlight=False)
