"""``optimum-cli hierarchy precision``: which modules of a file are fp32, fp16, int8 or int4, as a table or a map.

Import-light: Optimum imports this at start-up through the plugin file; heavy imports are in ``run``.
"""

from __future__ import annotations

__all__ = ["PrecisionCommand", "precision_data"]

import json
import sys
from argparse import ArgumentParser
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optimum.commands.base import BaseOptimumCLICommand

from optimum_hierarchy.cli.common import json_argument, model_argument


class PrecisionCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        model_argument(parser, help_text="An annotated .onnx file (float, quantized or converted by module).")
        json_argument(parser)
        parser.add_argument(
            "--plot",
            type=Path,
            default=None,
            metavar="OUT.svg|OUT.png",
            help="Also draw the precision map (layers as rows, their submodules as cells); SVG or PNG by suffix.",
        )

    def run(self) -> None:
        from optimum_hierarchy.cli.output import or_exit
        from optimum_hierarchy.tools.precision import module_precisions

        a = self.args
        precisions = or_exit(lambda: module_precisions(a.model))
        if a.plot is not None:
            from optimum_hierarchy import plots
            from optimum_hierarchy.cli.output import console

            title = f"Precision by module: {a.model.name}"
            written = or_exit(lambda: plots.save(plots.precision_map_figure(precisions, title=title), a.plot))
            console(stderr=True).print(f"Precision map written to {written}", highlight=False)
        data = precision_data(a.model, precisions)
        if a.json:
            sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            return
        _render(data)


def precision_data(model: Path, precisions: Mapping[str, str]) -> dict[str, Any]:
    """What ``--json`` prints: each module's precision, and how many modules are in each."""
    return {"model": str(model), "modules": dict(precisions), "counts": dict(Counter(precisions.values()))}


def _render(data: Mapping[str, Any]) -> None:
    from rich.table import Table

    from optimum_hierarchy.cli.output import console as make_console

    table = Table(title=f"Precision of each module's weights in {Path(data['model']).name}")
    table.add_column("module", overflow="fold")
    table.add_column("precision")
    for module, precision in data["modules"].items():
        table.add_row(module or "(root)", precision)
    out = make_console()
    out.print(table)
    counts = ", ".join(f"{p} {n}" for p, n in sorted(data["counts"].items()))
    out.print(f"Modules by precision: {counts or 'none with weights'}.", highlight=False)
