"""Extensions of Optimum's own commands, installed only where those commands exist.

``optimum-cli export onnx`` and ``optimum-cli onnxruntime optimize|quantize`` come with optimum-onnx
(the ``onnx`` extra). Without it they do not exist and there is nothing to extend; the
``optimum-cli hierarchy`` commands work either way. An optimum-onnx that fails to import is
reported once, as a warning, and ``optimum-cli`` goes on without the extensions.
"""

from __future__ import annotations

__all__ = ["commands_in_place_of_missing_ones", "install_command_extensions"]

import importlib.util
import logging
import sys
from argparse import REMAINDER, ArgumentParser
from collections.abc import Callable
from typing import Any

from optimum.commands.base import BaseOptimumCLICommand, CommandInfo

logger = logging.getLogger(__name__)


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _extensions() -> list[tuple[str, Callable[[], None]]]:
    from optimum_hierarchy.cli.export_flag import install_export_flag
    from optimum_hierarchy.cli.onnxruntime_hook import install_optimize_hook
    from optimum_hierarchy.cli.quantize_flag import install_quantize_flag

    return [
        ("optimum.commands.export.onnx", install_export_flag),
        ("optimum.commands.onnxruntime.optimize", install_optimize_hook),
        ("optimum.commands.onnxruntime.quantize", install_quantize_flag),
    ]


def install_command_extensions() -> list[str]:
    """Extend the Optimum commands that are installed; returns the modules of the commands extended."""
    installed = []
    for module, install in _extensions():
        if not _exists(module):
            continue
        try:
            install()
        except ImportError as e:  # an optimum-onnx of another shape: its commands still work, without ours
            logger.warning("optimum-hierarchy: cannot extend %s (%s); its hierarchy options are off.", module, e)
            continue
        installed.append(module)
    return installed


class MissingOnnxExportCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    """``optimum-cli export onnx`` where optimum-onnx is not installed: says what to install or run instead."""

    COMMAND = CommandInfo(name="onnx", help='(needs optimum-onnx: pip install "optimum-hierarchy[onnx]")')

    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        parser.add_argument("arguments", nargs=REMAINDER, help="The arguments of optimum-onnx's export command.")
        parse_known_args = parser.parse_known_args

        def take_everything(args: Any = None, namespace: Any = None) -> tuple[Any, list[str]]:
            # Whatever options follow (--model, --task, ...): this command only says what to install.
            result, rest = parse_known_args([], namespace)
            result.arguments = [*(args or []), *rest]
            return result, []

        parser.parse_known_args = take_everything  # type: ignore[method-assign]

    def run(self) -> None:
        from optimum_hierarchy.cli.output import print_error

        print_error(
            "`optimum-cli export onnx` comes with optimum-onnx, which is not installed. Install it with "
            'pip install "optimum-hierarchy[onnx]" (optimum-onnx 0.1 requires optimum 2.1 and transformers < 4.58), '
            "or export with torch's dynamo exporter and the hierarchy: "
            "optimum-cli hierarchy export --model DIR --task TASK OUT/"
        )
        sys.exit(1)


def commands_in_place_of_missing_ones() -> list[Any]:
    """Commands to register where Optimum's are missing: ``export onnx`` without optimum-onnx."""
    if _exists("optimum.commands.export.onnx"):
        return []
    try:
        from optimum.commands.export.base import ExportCommand
    except ImportError:
        return []
    return [(MissingOnnxExportCommand, ExportCommand)]
