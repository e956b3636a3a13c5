"""``--hierarchy`` on ``optimum-cli export onnx``.

Optimum builds every command's argparse parser from the command class after all plugin modules are
imported, and a second ``onnx`` command cannot sit beside the original one. So the plugin extends
the original ``ONNXExportCommand`` class: its parser gains a "Hierarchy" argument group, and its
``run`` wraps the original one in a hierarchy export session when ``--hierarchy`` is given.
Without the flag, the original ``run`` runs untouched.
"""

from __future__ import annotations

__all__ = ["add_hierarchy_arguments", "install_export_flag"]

import logging
import sys
from argparse import ArgumentParser
from typing import Any


def add_hierarchy_arguments(parser: ArgumentParser) -> None:
    native_dynamo = "--dynamo" in parser._option_string_actions  # optimum-onnx main has its own
    group = parser.add_argument_group("Hierarchy (optimum-hierarchy)")
    group.add_argument(
        "--hierarchy",
        action="store_true",
        help=(
            "Write the PyTorch module hierarchy into the exported ONNX files: every node gets the path of the "
            "module it came from (node metadata_props), and each file the module tree (model metadata_props)."
        ),
    )
    group.add_argument(
        "--hierarchy-strict",
        action="store_true",
        help="With --hierarchy: fail, leaving no model file behind, if any node cannot be attributed to a module.",
    )
    if not native_dynamo:
        group.add_argument(
            "--dynamo",
            action="store_true",
            help=(
                "With --hierarchy: export with torch's dynamo exporter (torch.onnx.export(dynamo=True), the flag of "
                "optimum-onnx's main branch) instead of TorchScript; onnxscript's optimizer runs after it, and the "
                "nodes it fuses are attributed to the common module of what they replaced."
            ),
        )
    parser.set_defaults(hierarchy_dynamo_flag=not native_dynamo)


def install_export_flag() -> None:
    """Add ``--hierarchy`` to Optimum's ``export onnx`` command (idempotent, import-light)."""
    from optimum.commands.export.onnx import ONNXExportCommand

    from optimum_hierarchy.cli.extend import extend_command

    def run(self: Any, original_run: Any) -> Any:
        if not getattr(self.args, "hierarchy", False):
            if getattr(self.args, "hierarchy_strict", False):
                self.parser.error("--hierarchy-strict only applies together with --hierarchy")
            if getattr(self.args, "hierarchy_dynamo_flag", False) and getattr(self.args, "dynamo", False):
                self.parser.error(
                    "--dynamo: this optimum-onnx has no dynamo export of its own; optimum-hierarchy provides it "
                    "together with --hierarchy"
                )
            return original_run(self)
        return _run_with_hierarchy(self, original_run)

    extend_command(ONNXExportCommand, "export_flag", run, add_hierarchy_arguments)


def _run_with_hierarchy(command: Any, original_run: Any) -> None:
    from optimum_hierarchy.cli.output import print_error, print_export_result
    from optimum_hierarchy.errors import HierarchyError
    from optimum_hierarchy.exporters.export import check_model_source, run_with_hierarchy

    args = command.args
    try:
        check_model_source(args.model)
        result = run_with_hierarchy(
            lambda _out: original_run(command),
            args.output,
            strict=args.hierarchy_strict,
            dynamo=bool(getattr(args, "dynamo", False)),
        )
    except HierarchyError as e:
        print_error(str(e))
        sys.exit(1)
    except _export_errors() as e:
        # What Optimum, transformers, torch and safetensors raise for an export they refuse: a task or an
        # architecture Optimum does not support, inputs it cannot generate, remote code not trusted, weights
        # missing or damaged, a full disk. The session has removed the model files it wrote; the message
        # is the actionable part.
        logging.getLogger(__name__).debug("export failed", exc_info=True)
        print_error(f"the export failed: {type(e).__name__}: {e}")
        sys.exit(1)
    print_export_result(result, optimized=args.optimize)


def _export_errors() -> tuple[type[Exception], ...]:
    from safetensors import SafetensorError

    return (ValueError, RuntimeError, KeyError, NotImplementedError, OSError, SafetensorError)
