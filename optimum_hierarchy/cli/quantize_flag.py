"""``--exclude-modules`` / ``--include-modules`` on ``optimum-cli onnxruntime quantize``, and its outputs re-attributed.

The command builds its ``QuantizationConfig`` inside ``run`` and quantizes every ``*.onnx`` file of
the input directory with it, while node names differ from file to file. So the plugin extends the
original ``ONNXRuntimeQuantizeCommand`` class, once and only here: its parser gains a "Quantize by
module" argument group, and its ``run`` is the original one (inside
:func:`optimum_hierarchy.tools.quantize.quantizing_by_module` when one of the flags is given, which
resolves the globs in each file first, so an error leaves nothing written, and gives each file its
own node lists), then :func:`optimum_hierarchy.cli.onnxruntime_hook.reattribute_outputs` on the
output directory. This module parses and prints.
"""

from __future__ import annotations

__all__ = ["add_quantize_arguments", "install_quantize_flag"]

import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any


def add_quantize_arguments(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("Quantize by module (optimum-hierarchy)")
    group.add_argument(
        "--exclude-modules",
        nargs="+",
        metavar="GLOB",
        default=None,
        help=(
            "Keep these modules float: module paths as `optimum-cli hierarchy tree FILE` prints them, '*' one path "
            "segment, '**' any number (e.g. 'encoder.layer.11.*' lm_head). Fused nodes that replaced part of an "
            "excluded module stay float too. The model files must carry hierarchy (exported with --hierarchy, or "
            "`optimum-cli hierarchy annotate DIR`)."
        ),
    )
    group.add_argument(
        "--include-modules",
        nargs="+",
        metavar="GLOB",
        default=None,
        help="Quantize only nodes inside these modules (same globs); with --exclude-modules, minus the excluded ones.",
    )


def install_quantize_flag() -> None:
    """Extend Optimum's ``onnxruntime quantize`` command: the module flags, then re-attribution (idempotent)."""
    from optimum.commands.onnxruntime.quantize import ONNXRuntimeQuantizeCommand

    from optimum_hierarchy.cli.extend import extend_command

    extend_command(ONNXRuntimeQuantizeCommand, "onnxruntime_quantize", _run, add_quantize_arguments)


def _run(command: Any, original_run: Any) -> Any:
    from optimum_hierarchy.cli.onnxruntime_hook import reattribute_outputs

    args = command.args
    if not (getattr(args, "exclude_modules", None) or getattr(args, "include_modules", None)):
        outcome = original_run(command)
        reattribute_outputs(Path(args.output))
        return outcome
    from optimum_hierarchy.cli.output import print_error
    from optimum_hierarchy.errors import HierarchyError
    from optimum_hierarchy.tools.quantize import quantizing_by_module

    try:
        # restore=False: every output file is re-attributed below, after the command.
        with quantizing_by_module(
            args.onnx_model,
            exclude_modules=tuple(args.exclude_modules or ()),
            include_modules=tuple(args.include_modules or ()),
            restore=False,
        ) as results:
            outcome = original_run(command)
    except HierarchyError as e:
        print_error(str(e))
        sys.exit(1)
    reattribute_outputs(Path(args.output))
    _print_results(results)
    return outcome


def _print_results(results: list[Any]) -> None:
    from optimum_hierarchy.cli.output import console as make_console

    console = make_console()
    console.print("Quantized by module:", style="bold", highlight=False)
    for r in results:
        console.print(f"  {r.model.name}: {r.selection.describe()}", highlight=False, soft_wrap=True)
    if any(r.types_inferred for r in results):
        console.print(
            "Note: tensor types were inferred first (ONNX Runtime's symbolic shape inference) in graphs with "
            "ONNX Runtime contrib operators: the quantizer needs them there.",
            highlight=False,
        )
