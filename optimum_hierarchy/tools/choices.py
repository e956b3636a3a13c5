"""The names the module tools accept, written once: the CLI offers them as choices at ``optimum-cli`` start-up.

Imports nothing, so a command module can read it without loading numpy, onnx or onnxruntime.
"""

from __future__ import annotations

__all__ = ["ERROR_METRICS", "GRANULARITIES", "OPTIMIZATION_LEVELS", "OUTPUT_METRICS", "SENSITIVITY_EXPLORER_VALUES"]

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
"""ONNX Runtime's graph optimization levels, by the names of ``GraphOptimizationLevel.ORT_ENABLE_*``."""

ERROR_METRICS = ("local_rel_l2", "local_max_abs", "accumulated_rel_l2", "accumulated_max_abs")
"""The values Model Explorer's error overlay (``tools.explorer.error_node_data``) can show (lower is better)."""

OUTPUT_METRICS = ("rel_l2", "cosine", "max_abs", "kl", "top1")
"""What ``sensitivity`` ranks by and ``--max-error`` bounds, at the model's outputs: ``kl`` and ``top1`` need an
output named ``logits`` (``tools.sensitivity.check_metric``)."""

GRANULARITIES = ("linear", "block")
"""The candidates of ``sensitivity`` and ``--max-error``: each ``nn.Linear``, or each repeated block."""

SENSITIVITY_EXPLORER_VALUES = ("error", "local_rel_l2", "local_max_abs")
"""What ``sensitivity --model-explorer`` can show (``tools.sensitivity.sensitivity_node_data``)."""
