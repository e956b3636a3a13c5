"""optimum-cli plugin of optimum-hierarchy.

Adds the ``optimum-cli hierarchy`` command group (always), and, when optimum-onnx (the ``onnx``
extra) is installed: ``--hierarchy`` on ``optimum-cli export onnx``, re-attribution after
``optimum-cli onnxruntime optimize|quantize`` of annotated models, and ``--exclude-modules`` /
``--include-modules`` on ``optimum-cli onnxruntime quantize``. Without it, ``optimum-cli export onnx``
says what to install, or to use ``optimum-cli hierarchy export``.
Imported by ``optimum-cli`` at start-up: keep it import-light (no torch, no onnxruntime), and never
let it fail: a plugin must not break its host.
"""

from optimum_hierarchy.cli.hierarchy import HierarchyCommand
from optimum_hierarchy.cli.plugin import commands_in_place_of_missing_ones, install_command_extensions

install_command_extensions()

REGISTER_COMMANDS = [HierarchyCommand, *commands_in_place_of_missing_ones()]
