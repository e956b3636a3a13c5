"""The hierarchy kept through ``optimum-cli onnxruntime optimize|quantize``: re-attribution of their outputs.

ONNX Runtime's optimizer and quantizer drop every node's metadata; the model metadata, and the
provenance stored in it, survive. So after either command, every output file whose input was
annotated is re-attributed (:func:`reattribute_outputs`). Each of Optimum's two classes is extended
once: ``ONNXRuntimeOptimizeCommand`` here (:func:`install_optimize_hook`), and
``ONNXRuntimeQuantizeCommand`` in :mod:`optimum_hierarchy.cli.quantize_flag`, whose one wrapper
adds the module flags and then calls :func:`reattribute_outputs`. Import-light: the commands come
with optimum-onnx and are imported only when installing.
"""

from __future__ import annotations

__all__ = ["install_optimize_hook", "reattribute_outputs"]

import sys
from pathlib import Path
from typing import Any


def install_optimize_hook() -> None:
    """After ``optimum-cli onnxruntime optimize``, re-attribute the output files of annotated inputs (idempotent)."""
    from optimum.commands.onnxruntime.optimize import ONNXRuntimeOptimizeCommand

    from optimum_hierarchy.cli.extend import extend_command

    def run(self: Any, original_run: Any) -> Any:
        result = original_run(self)
        reattribute_outputs(Path(self.args.output))
        return result

    extend_command(ONNXRuntimeOptimizeCommand, "onnxruntime_optimize", run)


def reattribute_outputs(output: Path) -> None:
    """Re-attribute the ``.onnx`` files under ``output`` that carry a hierarchy, and print them; others are left alone.

    On an error this package raises on purpose: the message (the files are written; rerun ``annotate``), exit 1.
    """
    candidates = sorted(output.rglob("*.onnx"))
    if not candidates:
        return
    from optimum_hierarchy.annotation.hierarchy import restore_if_annotated
    from optimum_hierarchy.cli.output import print_annotated_files, print_error
    from optimum_hierarchy.errors import HierarchyError, InvalidModelFileError

    def restore(path: Path) -> Any:
        try:
            return restore_if_annotated(path)
        except InvalidModelFileError:
            return None  # not a model we can read: none of ours, left alone

    try:
        files = [f for f in map(restore, candidates) if f is not None]
    except HierarchyError as e:
        print_error(f"{e} The model files are written; rerun `optimum-cli hierarchy annotate {output}`.")
        sys.exit(1)
    if files:
        print_annotated_files(files, f"Module hierarchy re-attributed in {output}", base=output)
