"""``--exclude-modules`` / ``--include-modules`` on ``optimum-cli onnxruntime quantize``.

The command builds its ``QuantizationConfig`` inside ``run`` and quantizes every ``*.onnx`` file of
the input directory with it, while node names differ from file to file. So the plugin extends the
original ``ONNXRuntimeQuantizeCommand`` class: its parser gains a "Quantize by module" argument
group, and with one of the flags its ``run`` is the original one inside
:func:`optimum_hierarchy.tools.quantize.quantizing_by_module` (which resolves the globs in each file
first, so an error leaves nothing written, and gives each file its own node lists). Without the
flags, the original ``run`` runs untouched. The output files are re-attributed by the hook of
:func:`optimum_hierarchy.cli.hierarchy.install_onnxruntime_hooks`. This module parses and prints.
"""

from __future__ import annotations

__all__ = ["add_quantize_arguments", "install_quantize_flag"]

import sys
from argparse import ArgumentParser
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
    """Add the module flags to Optimum's ``onnxruntime quantize`` command (idempotent, import-light)."""
    from optimum.commands.onnxruntime.quantize import ONNXRuntimeQuantizeCommand

    from optimum_hierarchy.cli.extend import extend_command

    def run(self: Any, original_run: Any) -> Any:
        if not (getattr(self.args, "exclude_modules", None) or getattr(self.args, "include_modules", None)):
            return original_run(self)
        return _run_by_module(self, original_run)

    extend_command(ONNXRuntimeQuantizeCommand, "quantize_flag", run, add_quantize_arguments)


def _run_by_module(command: Any, original_run: Any) -> Any:
    from optimum_hierarchy.cli.output import print_error
    from optimum_hierarchy.errors import HierarchyError
    from optimum_hierarchy.tools.quantize import quantizing_by_module

    args = command.args
    try:
        # restore=False: the onnxruntime hook re-attributes every output file after the command.
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
