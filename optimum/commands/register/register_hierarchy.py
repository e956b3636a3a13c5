"""optimum-cli plugin of optimum-hierarchy.

Adds ``--hierarchy`` to ``optimum-cli export onnx``, the ``optimum-cli hierarchy`` command group,
re-attribution after ``optimum-cli onnxruntime optimize|quantize`` of annotated models, and
``--exclude-modules`` / ``--include-modules`` to ``optimum-cli onnxruntime quantize``.
Imported by ``optimum-cli`` at start-up: keep it import-light (no torch, no onnxruntime).
"""

from optimum_hierarchy.cli.export_flag import install_export_flag
from optimum_hierarchy.cli.hierarchy import HierarchyCommand, install_onnxruntime_hooks
from optimum_hierarchy.cli.quantize_flag import install_quantize_flag

install_export_flag()
install_onnxruntime_hooks()
install_quantize_flag()

REGISTER_COMMANDS = [HierarchyCommand]
