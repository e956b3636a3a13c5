"""Precision by module: ``optimum-cli hierarchy quantize --int4`` (MatMulNBits) and ``convert --fp16``.

Import-light: Optimum imports this at start-up through the plugin file; heavy imports are in ``run``.
"""

from __future__ import annotations

__all__ = ["ConvertCommand", "QuantizeCommand"]

import json
import logging
import sys
from argparse import ArgumentParser
from pathlib import Path

from optimum.commands.base import BaseOptimumCLICommand

from optimum_hierarchy.cli.common import json_argument

_GLOB_HELP = "module paths as `optimum-cli hierarchy tree FILE` prints them, '*' one path segment, '**' any number"


class QuantizeCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        parser.add_argument("model", type=Path, help="An annotated .onnx file.")
        parser.add_argument("-o", "--output", type=Path, required=True, help="The .onnx file to write.")
        parser.add_argument(
            "--int4",
            action="store_true",
            help="int4 weight-only quantization of MatMul weights (ONNX Runtime's MatMulNBits); required.",
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
        json_argument(parser, instead_of="text")

    def run(self) -> None:
        from optimum_hierarchy.cli.output import console as make_console
        from optimum_hierarchy.cli.output import or_exit, print_error
        from optimum_hierarchy.tools.int4 import quantize_int4

        a = self.args
        if not a.int4:
            print_error("choose the quantization: --int4 (int4 weight-only, MatMulNBits).")
            sys.exit(1)
        # ONNX Runtime's quantizer logs every node it visits at INFO.
        logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
        logging.getLogger("optimum_hierarchy").setLevel(logging.WARNING)
        logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
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
        if a.json:
            sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            return
        console = make_console()
        console.print(f"Wrote {result.output}: {len(result.quantized)} MatMul weights in int4.", highlight=False)
        console.print(f"Selection: {result.selection.describe()}.", highlight=False)
        modules = sorted({m or "(unattributed)" for _, m in result.quantized})
        if modules:
            shown = ", ".join(modules[:8]) + (f", ... ({len(modules)} modules)" if len(modules) > 8 else "")
            console.print(f"Quantized modules: {shown}", highlight=False)
        console.print(f"Hierarchy: {result.summary.describe()}", highlight=False)


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
        json_argument(parser, instead_of="text")

    def run(self) -> None:
        from optimum_hierarchy.cli.output import console as make_console
        from optimum_hierarchy.cli.output import or_exit, print_error
        from optimum_hierarchy.tools.fp16 import convert_fp16

        a = self.args
        if not a.fp16:
            print_error("choose the conversion: --fp16.")
            sys.exit(1)
        logging.getLogger("optimum_hierarchy").setLevel(logging.WARNING)
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
