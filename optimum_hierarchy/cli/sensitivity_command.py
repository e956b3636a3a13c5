"""``optimum-cli hierarchy sensitivity``: which modules can be quantized, ranked by the error each alone adds.

Import-light: Optimum imports this at start-up through the plugin file; heavy imports are in ``run``.
"""

from __future__ import annotations

__all__ = ["SensitivityCommand"]

import json
import logging
import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from optimum.commands.base import BaseOptimumCLICommand

from optimum_hierarchy.cli.common import json_argument, model_argument, shape_argument

METRICS = ("rel_l2", "cosine", "max_abs", "kl", "top1")
"""optimum_hierarchy.tools.sensitivity.METRICS (not imported: this module is imported at optimum-cli start-up)."""


class SensitivityCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        model_argument(parser, help_text="An annotated .onnx file (float32).")
        parser.add_argument(
            "--int4",
            action="store_true",
            required=True,
            help="Measure int4 weight-only quantization (MatMulNBits), the one precision measured for now.",
        )
        parser.add_argument(
            "--granularity",
            choices=("linear", "block"),
            default="linear",
            help="linear: each module a quantized MatMul belongs to (each nn.Linear); block: each repeated block.",
        )
        parser.add_argument(
            "--metric",
            choices=METRICS,
            default="rel_l2",
            help="What ranks the modules, at the model's outputs (kl and top1: of the output named logits).",
        )
        parser.add_argument(
            "--block-size", type=int, default=128, help="MatMulNBits block size (default 128; smaller: less error)."
        )
        parser.add_argument(
            "--inputs", type=Path, default=None, help="An .npz of the graph inputs (default: generated, as profile)."
        )
        shape_argument(parser, "A dimension of the generated inputs (batch_size=1, sequence_length=128); repeatable.")
        parser.add_argument("--seed", type=int, default=0, help="Seed of the generated inputs.")
        parser.add_argument("--top", type=int, default=None, help="Show only the N most sensitive modules.")
        json_argument(parser)

    def run(self) -> None:
        from optimum_hierarchy.cli.error_command import _load_inputs
        from optimum_hierarchy.cli.output import or_exit
        from optimum_hierarchy.tools.inputs import parse_shapes
        from optimum_hierarchy.tools.sensitivity import module_sensitivity

        a = self.args
        for name in (
            "onnxruntime.quantization",
            "onnxruntime.quantization.matmul_nbits_quantizer",
            "optimum_hierarchy",
        ):
            logging.getLogger(name).setLevel(logging.WARNING)  # the one quantization's progress is not the report
        report = or_exit(
            lambda: module_sensitivity(
                a.model,
                granularity=a.granularity,
                metric=a.metric,
                block_size=a.block_size,
                feeds=_load_inputs(a.inputs) if a.inputs is not None else None,
                shapes=parse_shapes(a.shape),
                seed=a.seed,
            )
        )
        if a.json:
            sys.stdout.write(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
            return
        _render(report, a.top)


def _render(report: Any, top: int | None) -> None:
    from rich.table import Table

    from optimum_hierarchy.cli.output import console as make_console

    table = Table(
        title=f"int4 sensitivity of {report.model.name} by {report.granularity} (only that module in int4), "
        f"ranked by {report.metric}"
    )
    table.add_column("#", justify="right")
    table.add_column("module", overflow="fold")
    table.add_column("weights", justify="right")
    for name in ("rel_l2", "cosine", "kl", "top1"):
        if any(name in m.metrics for m in report.modules):
            table.add_column(name, justify="right")
    shown = report.modules if top is None else report.modules[:top]
    for rank, m in enumerate(shown, 1):
        values = [_cell(k, m.metrics[k]) for k in ("rel_l2", "cosine", "kl", "top1") if k in m.metrics]
        table.add_row(str(rank), m.module or "(root)", f"{m.weights:,}", *values)
    console = make_console()
    console.print(table)
    everything = ", ".join(
        f"{k} {v:.3e}" for k, v in report.all_quantized.items() if k in ("rel_l2", "cosine", "kl", "top1")
    )
    console.print(f"Every module in int4 at once: {everything}.", highlight=False)
    for module, why in report.skipped.items():
        console.print(f"Not measured: {module}: {why}.", highlight=False)


def _cell(metric: str, value: float) -> str:
    return f"{value:.3e}" if metric in ("rel_l2", "kl") else f"{value:.6f}"
