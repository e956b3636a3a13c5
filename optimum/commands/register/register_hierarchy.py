"""optimum-cli plugin of optimum-hierarchy.

Adds ``--hierarchy`` to ``optimum-cli export onnx``, the ``optimum-cli hierarchy`` command group, and
re-attribution after ``optimum-cli onnxruntime optimize|quantize`` of annotated models.
Imported by ``optimum-cli`` at start-up: keep it import-light (no torch, no onnxruntime).
"""

from optimum_hierarchy.cli.export_flag import install_export_flag
from optimum_hierarchy.cli.hierarchy import HierarchyCommand, install_onnxruntime_hooks

install_export_flag()
install_onnxruntime_hooks()

REGISTER_COMMANDS = [HierarchyCommand]
