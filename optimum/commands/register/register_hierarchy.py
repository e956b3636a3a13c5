"""optimum-cli plugin of optimum-hierarchy: adds ``--hierarchy`` to ``optimum-cli export onnx``.

Imported by ``optimum-cli`` at start-up: keep it import-light (no torch, no onnxruntime).
"""

from optimum_hierarchy.cli.export_flag import install_export_flag

install_export_flag()

REGISTER_COMMANDS: list = []
