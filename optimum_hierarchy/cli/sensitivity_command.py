"""``optimum-cli hierarchy sensitivity``: which modules can be converted, ranked by the error each alone adds.

Import-light: Optimum imports this at start-up through the plugin file; heavy imports are in ``run``.
"""

from __future__ import annotations

__all__ = ["SensitivityCommand"]

import json
import logging
import sys
from argparse import ArgumentParser, Namespace
from pathlib import Path
from typing import Any

from optimum.commands.base import BaseOptimumCLICommand

from optimum_hierarchy.cli.common import (
    calibration_arguments,
    calibration_feeds,
    json_argument,
    model_argument,
    model_explorer_argument,
)
from optimum_hierarchy.tools.choices import GRANULARITIES, OUTPUT_METRICS, SENSITIVITY_EXPLORER_VALUES

_NAMES = {"int4": "int4 (MatMulNBits)", "int8": "dynamic int8", "fp16": "float16"}


class SensitivityCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        model_argument(parser, help_text="An annotated .onnx file (float32).")
        precision = parser.add_mutually_exclusive_group(required=True)
        precision.add_argument(
            "--int4", action="store_const", dest="precision", const="int4", help="int4 weight-only (MatMulNBits)."
        )
        precision.add_argument(
            "--int8",
            action="store_const",
            dest="precision",
            const="int8",
            help="ONNX Runtime's dynamic int8 quantization of the MatMul weights.",
        )
        precision.add_argument(
            "--fp16",
            action="store_const",
            dest="precision",
            const="fp16",
            help="float16 (ONNX Runtime's converter, Casts at the module's boundary).",
        )
        parser.add_argument(
            "--granularity",
            choices=GRANULARITIES,
            default="linear",
            help="linear: each module a MatMul or Gemm weight belongs to (each nn.Linear); block: each repeated block.",
        )
        parser.add_argument(
            "--metric",
            choices=OUTPUT_METRICS,
            default="rel_l2",
            help="What ranks the modules, at the model's outputs (kl and top1: of the output named logits).",
        )
        parser.add_argument(
            "--block-size",
            type=int,
            default=None,
            help="int4 only: MatMulNBits block size (default 128; smaller: less error).",
        )
        calibration_arguments(parser, "generated, as profile")
        parser.add_argument("--seed", type=int, default=0, help="Seed of the generated inputs.")
        parser.add_argument("--top", type=int, default=None, help="Show only the N most sensitive modules.")
        json_argument(parser)
        model_explorer_argument(parser, "each node of a measured module with its sensitivity")
        parser.add_argument(
            "--model-explorer-metric",
            choices=SENSITIVITY_EXPLORER_VALUES,
            default="error",
            help="What --model-explorer writes: error (the ranked metric at the outputs, default) or a local error.",
        )
        parser.add_argument(
            "--plot",
            type=Path,
            default=None,
            metavar="OUT.svg|OUT.png",
            help="Also draw the ranking (the --top most sensitive, 20 by default) as bars; SVG or PNG by suffix.",
        )

    def run(self) -> None:
        from optimum_hierarchy.cli.output import or_exit, report_node_data
        from optimum_hierarchy.tools.explorer import check_node_data_path
        from optimum_hierarchy.tools.inputs import parse_shapes
        from optimum_hierarchy.tools.sensitivity import module_sensitivity, sensitivity_node_data

        a = self.args
        for name in (
            "onnxruntime.quantization",
            "onnxruntime.quantization.matmul_nbits_quantizer",
            "optimum_hierarchy",
        ):
            logging.getLogger(name).setLevel(logging.WARNING)  # the one quantization's progress is not the report
        logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic's advice through the root logger
        if a.model_explorer is not None:
            or_exit(lambda: check_node_data_path(a.model_explorer, a.model))
        if a.plot is not None:
            from optimum_hierarchy import plots

            or_exit(lambda: plots.check_path(a.plot))
        feeds = or_exit(lambda: _feeds(a))
        report = or_exit(
            lambda: module_sensitivity(
                a.model,
                precision=a.precision,
                granularity=a.granularity,
                metric=a.metric,
                block_size=128 if a.block_size is None else a.block_size,
                feeds=feeds,
                shapes=parse_shapes(a.shape),
                seed=a.seed,
            )
        )
        if a.model_explorer is not None:
            explorer = a.model_explorer
            or_exit(lambda: report_node_data(sensitivity_node_data(report, a.model_explorer_metric), explorer, a.model))
        if a.plot is not None:
            figure = plots.sensitivity_ranking_figure(report, top=a.top or 20)
            or_exit(lambda: plots.save(figure, a.plot))
        if a.json:
            sys.stdout.write(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
            return
        _render(report, a.top)


def _feeds(a: Namespace) -> dict[str, Any] | None:
    """The calibration inputs the arguments give, checked against the model; ``None``: generate them."""
    from optimum_hierarchy.errors import HierarchyError

    if a.block_size is not None and a.precision != "int4":
        raise HierarchyError(f"--block-size {a.block_size}: int4's block size; --{a.precision} has none. Drop it.")
    return calibration_feeds(a)


def _render(report: Any, top: int | None) -> None:
    from rich.table import Table

    from optimum_hierarchy.cli.output import console as make_console

    table = Table(
        title=f"{_NAMES[report.precision]} sensitivity of {report.model.name} by {report.granularity} "
        f"(only that module converted), ranked by {report.metric}"
    )
    table.add_column("#", justify="right")
    table.add_column("module", overflow="fold")
    table.add_column("weights", justify="right")
    for name in ("rel_l2", "cosine", "kl", "top1"):
        if any(name in m.metrics for m in report.modules):
            table.add_column(name, justify="right")
    table.add_column("local rel_l2", justify="right")
    shown = report.modules if top is None else report.modules[:top]
    for rank, m in enumerate(shown, 1):
        values = [_cell(k, m.metrics[k]) for k in ("rel_l2", "cosine", "kl", "top1") if k in m.metrics]
        local = _cell("rel_l2", m.local["rel_l2"]) if "rel_l2" in m.local else "-"
        table.add_row(str(rank), m.module or "(root)", f"{m.weights:,}", *values, local)
    console = make_console()
    console.print(table)
    everything = ", ".join(
        f"{k} {v:.3e}" for k, v in report.all_quantized.items() if k in ("rel_l2", "cosine", "kl", "top1")
    )
    console.print(f"Every candidate converted at once: {everything}.", highlight=False)
    console.print(
        "local rel_l2: at the module's own outputs against the float model's, only that module converted.",
        highlight=False,
    )
    for module, why in report.skipped.items():
        console.print(f"Not measured: {module}: {why}.", highlight=False)


def _cell(metric: str, value: float) -> str:
    return f"{value:.3e}" if metric in ("rel_l2", "kl") else f"{value:.6f}"
