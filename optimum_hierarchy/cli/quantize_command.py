"""Precision by module: ``optimum-cli hierarchy quantize --int4|--int8`` and ``convert --fp16``, by globs or a plan.

With ``--max-error`` the modules to keep float are chosen (:mod:`optimum_hierarchy.tools.plan`);
``--plan FILE`` replays a plan.

Import-light: Optimum imports this at start-up through the plugin file; heavy imports are in ``run``.
"""

from __future__ import annotations

__all__ = ["ConvertCommand", "QuantizeCommand"]

import json
import logging
import sys
from argparse import ArgumentParser, Namespace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optimum.commands.base import BaseOptimumCLICommand

from optimum_hierarchy.cli.common import calibration_arguments, calibration_feeds, json_argument
from optimum_hierarchy.tools.choices import GRANULARITIES, OUTPUT_METRICS

if TYPE_CHECKING:
    import numpy as np

    from optimum_hierarchy.tools.plan import PlanResult

_GLOB_HELP = "module paths as `optimum-cli hierarchy tree FILE` prints them, '*' one path segment, '**' any number"


class QuantizeCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        parser.add_argument("model", type=Path, help="An annotated .onnx file.")
        parser.add_argument("-o", "--output", type=Path, required=True, help="The .onnx file to write.")
        kind = parser.add_mutually_exclusive_group()
        kind.add_argument(
            "--int4",
            action="store_true",
            help="int4 weight-only quantization of MatMul weights (ONNX Runtime's MatMulNBits).",
        )
        kind.add_argument(
            "--int8",
            action="store_true",
            help="int8 dynamic quantization of MatMul weights (ONNX Runtime's quantize_dynamic, MatMulInteger).",
        )
        parser.add_argument(
            "--block-size",
            type=int,
            default=128,
            help=(
                "Weights per int4 block and scale: 16, 32, 64, 128 (default) or 256; a smaller block lowers the "
                "error and makes the file larger (one scale per block)."
            ),
        )
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--symmetric", dest="symmetric", action="store_true", default=True, help="Symmetric blocks (default)."
        )
        group.add_argument(
            "--asymmetric", dest="symmetric", action="store_false", help="Asymmetric blocks (a zero point each)."
        )
        parser.add_argument(
            "--accuracy-level",
            type=int,
            default=None,
            choices=[0, 1, 2, 3, 4],
            help="MatMulNBits accuracy level (the compute type of its kernel; default: ONNX Runtime's).",
        )
        parser.add_argument(
            "--exclude-modules", nargs="+", metavar="GLOB", default=(), help=f"Keep these modules float: {_GLOB_HELP}."
        )
        parser.add_argument(
            "--include-modules",
            nargs="+",
            metavar="GLOB",
            default=(),
            help="Quantize only inside these modules (with --exclude-modules: minus the excluded ones).",
        )
        parser.add_argument(
            "--per-channel", action="store_true", help="int8: one scale per output channel (default: per tensor)."
        )
        _plan_arguments(parser, "quantized")
        json_argument(parser, instead_of="text")

    def run(self) -> None:
        from optimum_hierarchy.cli.output import or_exit, print_error
        from optimum_hierarchy.tools.int4 import quantize_int4

        a = self.args
        _quiet()
        precision = "int4" if a.int4 else "int8" if a.int8 else None
        if a.plan is not None or a.max_error is not None:
            globs = a.exclude_modules or a.include_modules
            _run_plan(
                a,
                precision,
                "--int4 or --int8",
                allowed=("int4", "int8"),
                conflicts="--exclude-modules/--include-modules" if globs else "",
            )
            return
        if precision is None:
            print_error("choose the quantization: --int4 (int4 weight-only, MatMulNBits) or --int8 (dynamic int8).")
            sys.exit(1)
        if precision == "int8":
            _run_int8(a)
            return
        result = or_exit(
            lambda: quantize_int4(
                a.model,
                a.output,
                block_size=a.block_size,
                symmetric=a.symmetric,
                accuracy_level=a.accuracy_level,
                exclude_modules=a.exclude_modules,
                include_modules=a.include_modules,
            )
        )
        _print_quantized(result, "int4", as_json=a.json)


class ConvertCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        parser.add_argument("model", type=Path, help="An annotated .onnx file.")
        parser.add_argument("-o", "--output", type=Path, required=True, help="The .onnx file to write.")
        parser.add_argument(
            "--fp16", action="store_true", help="Convert to float16 (ONNX Runtime's float16 converter); required."
        )
        parser.add_argument(
            "--keep-fp32-modules",
            nargs="+",
            metavar="GLOB",
            default=(),
            help=f"Modules that keep computing in float32, their weights too: {_GLOB_HELP}.",
        )
        parser.add_argument(
            "--keep-io-types", action="store_true", help="Keep the graph's float inputs and outputs in float32."
        )
        _plan_arguments(parser, "converted")
        json_argument(parser, instead_of="text")

    def run(self) -> None:
        from optimum_hierarchy.cli.output import console as make_console
        from optimum_hierarchy.cli.output import or_exit, print_error
        from optimum_hierarchy.tools.fp16 import convert_fp16

        a = self.args
        _quiet()
        if a.plan is not None or a.max_error is not None:
            conflicts = "--keep-fp32-modules" if a.keep_fp32_modules else ""
            _run_plan(a, "fp16" if a.fp16 else None, "--fp16", allowed=("fp16",), conflicts=conflicts)
            return
        if not a.fp16:
            print_error("choose the conversion: --fp16.")
            sys.exit(1)
        result = or_exit(
            lambda: convert_fp16(
                a.model, a.output, keep_fp32_modules=a.keep_fp32_modules, keep_io_types=a.keep_io_types
            )
        )
        kept = {k: list(v) for k, v in result.selection.matched.items()} if result.selection is not None else {}
        data = {
            "output": str(result.output),
            "external_data": result.external_data,
            "kept_fp32_modules": kept,
            "initializers": result.initializers,
            "casts_added": result.casts_added,
            "attributed": result.summary.attributed,
            "nodes": result.summary.nodes,
        }
        if a.json:
            sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            return
        console = make_console()
        console.print(
            f"Wrote {result.output}: initializers {result.initializers}, {result.casts_added} Cast nodes added.",
            highlight=False,
        )
        if result.selection is not None:
            modules = sorted({m for paths in result.selection.matched.values() for m in paths})
            console.print(
                f"Kept in float32: {', '.join(modules)} ({result.selection.float_nodes} nodes).", highlight=False
            )
        console.print(f"Hierarchy: {result.summary.describe()}", highlight=False)


def _plan_arguments(parser: ArgumentParser, done: str) -> None:
    """``--max-error``, ``--metric``, ``--plan``, ``--plan-out`` and the calibration inputs."""
    parser.add_argument(
        "--max-error",
        type=float,
        default=None,
        metavar="X",
        help=(
            f"Choose the modules to keep in float32: the fewest found such that the model {done} stays within X of "
            "the float model on the calibration inputs (measured, then verified on the file written)."
        ),
    )
    parser.add_argument(
        "--metric",
        choices=OUTPUT_METRICS,
        default="rel_l2",
        help="The error --max-error bounds: rel_l2 (default), 1 - cosine, max_abs; kl and 1 - top1 of logits.",
    )
    parser.add_argument(
        "--granularity",
        choices=GRANULARITIES,
        default="linear",
        help="--max-error: the candidates to keep, each nn.Linear (default) or each repeated block.",
    )
    parser.add_argument(
        "--plan", type=Path, default=None, metavar="FILE", help="Replay a plan (its JSON, or a file that stores one)."
    )
    parser.add_argument(
        "--plan-out",
        type=Path,
        default=None,
        metavar="FILE",
        help="Where to write the plan's JSON (default: <output stem>.plan.json beside the output).",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="OUT.svg|OUT.png",
        help="--max-error or --plan: also draw the error against file size of the plans tried (SVG or PNG).",
    )
    calibration_arguments(parser, "generated inputs, see --shape")


def _quiet() -> None:
    # ONNX Runtime's quantizers log every node they visit at INFO, and warn on the root logger.
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    logging.getLogger("optimum_hierarchy").setLevel(logging.WARNING)
    logging.getLogger().setLevel(logging.ERROR)


def _feeds(a: Namespace) -> dict[str, np.ndarray]:
    """The calibration inputs the arguments give (as ``hierarchy sensitivity`` reads them), or generated ones."""
    from optimum_hierarchy.tools.inputs import generate_inputs, parse_shapes

    feeds = calibration_feeds(a)
    return generate_inputs(a.model, shapes=parse_shapes(a.shape)) if feeds is None else feeds


_COMMAND = {"int4": "quantize", "int8": "quantize", "fp16": "convert"}


def _run_plan(a: Namespace, precision: str | None, flags: str, *, allowed: tuple[str, ...], conflicts: str) -> None:
    """``--max-error`` (make a plan) or ``--plan`` (replay one)."""
    from optimum_hierarchy.cli.output import or_exit, print_error
    from optimum_hierarchy.tools.plan import plan_precision, read_plan, replay_plan

    def fail(message: str) -> None:
        print_error(message)
        sys.exit(1)

    if a.plan is not None and a.max_error is not None:
        fail("--max-error and --plan: a plan already says which modules to keep; give one of them.")
    if conflicts:
        fail(f"{conflicts} with {'--plan' if a.plan is not None else '--max-error'}: the plan decides what is kept.")
    if a.plot is not None:
        from optimum_hierarchy import plots

        or_exit(lambda: plots.check_path(a.plot))
    if a.plan is not None:
        plan = or_exit(lambda: read_plan(a.plan))
        if precision is not None and precision != plan.precision:
            fail(f"{a.plan}: the plan is for {plan.precision}, not {precision}.")
        if plan.precision not in allowed:
            fail(
                f"{a.plan}: the plan is for {plan.precision}; replay it with "
                f"`optimum-cli hierarchy {_COMMAND[plan.precision]}`."
            )
        result = or_exit(lambda: replay_plan(a.model, a.output, plan, feeds=_feeds(a), plan_out=a.plan_out))
    else:
        if precision is None:
            fail(f"--max-error: choose the precision, {flags}.")
        options: dict[str, Any] = {}
        if precision == "int4":
            options = {"block_size": a.block_size, "symmetric": a.symmetric}
        elif precision == "int8":
            options = {"per_channel": a.per_channel}
        else:
            options = {"keep_io_types": a.keep_io_types}
        result = or_exit(
            lambda: plan_precision(
                a.model,
                a.output,
                precision=str(precision),
                max_error=a.max_error,
                metric=a.metric,
                granularity=a.granularity,
                feeds=_feeds(a),
                plan_out=a.plan_out,
                **options,
            )
        )
    if a.plot is not None:
        _plot_plan(result, a.plot)
    _print_plan(result, as_json=a.json)


def _plot_plan(result: PlanResult, path: Path) -> None:
    """The plans tried (error against size), the budget, and the file written circled."""
    from optimum_hierarchy import plots
    from optimum_hierarchy.cli.output import or_exit

    plan = result.plan
    tried = [*plan.tried, (plan.size_bytes, result.error, "written")]
    figure = plots.plan_curve_figure(tried, budget=plan.budget, chosen=len(tried) - 1, metric=plan.metric)
    or_exit(lambda: plots.save(figure, path))


def plan_data(result: PlanResult) -> dict[str, Any]:
    """What ``--json`` prints for a plan made or replayed."""
    return {
        "output": str(result.output),
        "plan_file": str(result.plan_file),
        "replayed": result.replayed,
        "error": result.error,
        "within_budget": result.within_budget,
        "plan": result.plan.to_json(),
    }


def _print_plan(result: PlanResult, *, as_json: bool) -> None:
    from optimum_hierarchy.cli.output import console as make_console

    if as_json:
        sys.stdout.write(json.dumps(plan_data(result), indent=2, sort_keys=True) + "\n")
        return
    plan = result.plan
    console = make_console()
    verb = "Replayed" if result.replayed else "Planned"
    kept = ", ".join(plan.kept) if plan.kept else "none"
    console.print(
        f"{verb} {plan.precision} for {result.output} ({len(plan.candidates)} candidates): kept in float32: {kept} "
        f"({plan.kept_weights} weights; {plan.quantized_weights} quantized).",
        highlight=False,
    )
    verdict = "within the plan's budget" if result.within_budget else "OVER the plan's budget"
    console.print(
        f"Measured on the written file: {plan.metric} {result.error:.6g}, {verdict} {plan.budget:g}.", highlight=False
    )
    if not result.replayed:
        console.print(f"Plans tried: {len(plan.tried)}; size {plan.size_bytes} bytes.", highlight=False)
    console.print(f"Plan: {result.plan_file}", highlight=False)


def _run_int8(a: Namespace) -> None:
    from optimum_hierarchy.cli.output import or_exit
    from optimum_hierarchy.tools.int8 import quantize_int8

    result = or_exit(
        lambda: quantize_int8(
            a.model,
            a.output,
            per_channel=a.per_channel,
            exclude_modules=a.exclude_modules,
            include_modules=a.include_modules,
        )
    )
    _print_quantized(result, "int8", as_json=a.json)


def _print_quantized(result: Any, precision: str, *, as_json: bool) -> None:
    """What ``quantize --int4|--int8`` prints: JSON, or the file, the selection and the modules quantized."""
    from optimum_hierarchy.cli.output import console as make_console

    data = {
        "output": str(result.output),
        "external_data": result.external_data,
        "selection": {
            "exclude_modules": list(result.selection.exclude_modules),
            "include_modules": list(result.selection.include_modules),
            "matched": {k: list(v) for k, v in result.selection.matched.items()},
            "kept_float_nodes": result.selection.float_nodes,
        },
        "quantized": [{"node": n, "module": m} for n, m in result.quantized],
        "attributed": result.summary.attributed,
        "nodes": result.summary.nodes,
    }
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return
    console = make_console()
    console.print(f"Wrote {result.output}: {len(result.quantized)} MatMul weights in {precision}.", highlight=False)
    console.print(f"Selection: {result.selection.describe()}.", highlight=False)
    modules = sorted({m or "(unattributed)" for _, m in result.quantized})
    if modules:
        shown = ", ".join(modules[:8]) + (f", ... ({len(modules)} modules)" if len(modules) > 8 else "")
        console.print(f"Quantized modules: {shown}", highlight=False)
    console.print(f"Hierarchy: {result.summary.describe()}", highlight=False)
