"""The names the module tools accept, written once: the CLI offers them as choices at ``optimum-cli`` start-up.

Imports nothing, so a command module can read it without loading numpy, onnx or onnxruntime.
"""

from __future__ import annotations

__all__ = ["ERROR_METRICS", "OPTIMIZATION_LEVELS"]

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
"""ONNX Runtime's graph optimization levels, by the names of ``GraphOptimizationLevel.ORT_ENABLE_*``."""

ERROR_METRICS = ("local_rel_l2", "local_max_abs", "accumulated_rel_l2", "accumulated_max_abs")
"""The values Model Explorer's error overlay (``tools.explorer.error_node_data``) can show (lower is better)."""
