"""Extensions of Optimum's own commands, installed only where those commands exist.

``optimum-cli export onnx`` and ``optimum-cli onnxruntime optimize|quantize`` come with optimum-onnx
(the ``onnx`` extra). Without it they do not exist and there is nothing to extend; the
``optimum-cli hierarchy`` commands work either way. An optimum-onnx that fails to import is
reported once, as a warning, and ``optimum-cli`` goes on without the extensions.
"""

from __future__ import annotations

__all__ = ["install_command_extensions"]

import importlib.util
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _extensions() -> list[tuple[str, Callable[[], None]]]:
    from optimum_hierarchy.cli.export_flag import install_export_flag
    from optimum_hierarchy.cli.hierarchy import install_onnxruntime_hooks
    from optimum_hierarchy.cli.quantize_flag import install_quantize_flag

    return [
        ("optimum.commands.export.onnx", install_export_flag),
        ("optimum.commands.onnxruntime.optimize", install_onnxruntime_hooks),
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
