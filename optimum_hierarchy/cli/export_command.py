"""``optimum-cli hierarchy export``: torch's dynamo exporter with the hierarchy, without optimum-onnx.

Import-light: Optimum imports this at start-up through the plugin file; heavy imports are in ``run``.
"""

from __future__ import annotations

__all__ = ["ExportCommand"]

import logging
import sys
from argparse import ArgumentParser
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from optimum.commands.base import BaseOptimumCLICommand

if TYPE_CHECKING:
    from optimum_hierarchy.annotation.results import HierarchyExportResult

_R = TypeVar("_R", bound="HierarchyExportResult")

_TASKS = ("auto", "feature-extraction", "text-classification", "image-classification", "text-generation")
_GENERATIVE = (  # kept equal to exporters.generation_export.GENERATIVE_TASKS by a test (that module is heavy)
    "text-generation-with-past",
    "text2text-generation-with-past",
    "automatic-speech-recognition-with-past",
    "image-text-to-text",
)


class ExportCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        parser.add_argument(
            "--model",
            required=True,
            help="The directory of a saved Transformers model (save_pretrained), or a model id of the hub.",
        )
        parser.add_argument(
            "--task",
            default="auto",
            help=(
                f"One of {', '.join(_TASKS)} (or a synonym Optimum knows, e.g. sequence-classification): "
                "torch's dynamo exporter, one model.onnx; auto: the task of the architecture in config.json. "
                f"Or a generative task, {', '.join(_GENERATIVE)}: transformers' own exporter "
                "(transformers.exporters), one file per component (prefill/decode with the KV cache, or a "
                "multimodal model's parts) and export.json, loadable with ExportedModel.from_pretrained."
            ),
        )
        parser.add_argument(
            "output", type=Path, help="The directory to write the ONNX file(s), config.json (and export.json) into."
        )
        parser.add_argument(
            "--ort-fusions",
            choices=("cpu", "cuda", "webgpu", "dml"),
            default=None,
            help=(
                "Generative tasks: fuse into ONNX Runtime's own ops for that execution provider "
                "(GroupQueryAttention, SkipSimplifiedLayerNormalization, ...), as OnnxConfig(ort_fusions=...)."
            ),
        )
        parser.add_argument(
            "--new-tokens",
            type=int,
            default=5,
            help="Generative tasks: validate that this many greedy tokens equal PyTorch's generate (5).",
        )
        parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: torch's).")
        parser.add_argument(
            "--batch-size", type=int, default=2, help="Batch size of the export's dummy inputs (the axis is dynamic)."
        )
        parser.add_argument(
            "--sequence-length",
            type=int,
            default=16,
            help="Sequence length of the export's dummy text inputs, or of a generative task's prompt (dynamic axis).",
        )
        parser.add_argument(
            "--no-optimize",
            action="store_true",
            help="Skip onnxscript's optimizer (what torch.onnx.export(optimize=True) runs after the export).",
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Fail, writing nothing, if any node cannot be attributed to a module.",
        )
        parser.add_argument(
            "--atol",
            type=float,
            default=1e-4,
            help="Validation: the largest absolute difference allowed between ONNX Runtime and PyTorch (1e-4).",
        )
        parser.add_argument(
            "--no-validation",
            action="store_true",
            help="Skip the validation (ONNX Runtime against PyTorch at another batch size and sequence length).",
        )

    def run(self) -> None:
        from optimum_hierarchy.cli.output import console as make_console
        from optimum_hierarchy.cli.output import print_error
        from optimum_hierarchy.exporters.task_export import OutputMismatchError, export_task_with_hierarchy

        a = self.args
        logging.getLogger("optimum_hierarchy").setLevel(logging.WARNING)
        if a.task in _GENERATIVE:
            self._run_generative()
            return
        if a.ort_fusions is not None:
            print_error(f"--ort-fusions is for the generative tasks ({', '.join(_GENERATIVE)}), not --task {a.task}.")
            sys.exit(1)
        result = _exported_or_exit(
            lambda: export_task_with_hierarchy(
                a.model,
                a.output,
                task=a.task,
                opset=a.opset,
                batch_size=a.batch_size,
                sequence_length=a.sequence_length,
                optimize=not a.no_optimize,
                strict=a.strict,
                validate=not a.no_validation,
                atol=a.atol,
            ),
            OutputMismatchError,
        )
        console = make_console()
        console.print(f"Task: {result.task}; exported with torch's dynamo exporter.", highlight=False)
        if result.static_axes:
            console.print(
                f"Static axes (the model fixes them): {', '.join(result.static_axes)}.",
                highlight=False,
            )
        if result.validation is not None:
            console.print(f"Validation: {result.validation.describe()}.", highlight=False)

    def _run_generative(self) -> None:
        from optimum_hierarchy.cli.output import console as make_console
        from optimum_hierarchy.exporters.generation_export import (
            GenerationMismatchError,
            export_generation_with_hierarchy,
        )

        a = self.args
        result = _exported_or_exit(
            lambda: export_generation_with_hierarchy(
                a.model,
                a.output,
                task=a.task,
                ort_fusions=a.ort_fusions,
                opset=a.opset,
                sequence_length=a.sequence_length,
                optimize=not a.no_optimize,
                strict=a.strict,
                validate=not a.no_validation,
                new_tokens=a.new_tokens,
            ),
            GenerationMismatchError,
        )
        console = make_console()
        fused = f", ort_fusions={result.ort_fusions}" if result.ort_fusions else ""
        console.print(
            f"Task: {result.task}; exported with transformers' exporter{fused}: components "
            f"{', '.join(result.components)} (ExportedModel.from_pretrained loads the directory).",
            highlight=False,
        )
        if result.generation is not None:
            console.print(f"Validation: {result.generation.describe()}.", highlight=False)
        elif result.skipped_validation:
            console.print(f"Validation skipped: {result.skipped_validation}.", highlight=False)


def _exported_or_exit(export: Callable[[], _R], mismatch: type[Exception]) -> _R:
    """Run ``export`` and print its result; on a :class:`HierarchyError` print it and exit 1 (for ``mismatch``,
    a validation failure whose files are written, print the result first)."""
    from optimum_hierarchy.cli.output import print_error, print_export_result
    from optimum_hierarchy.errors import HierarchyError

    try:
        result = export()
    except HierarchyError as e:
        if isinstance(e, mismatch):  # both mismatch errors carry the result
            print_export_result(getattr(e, "result"))  # noqa: B009
        print_error(str(e))
        sys.exit(1)
    print_export_result(result)
    return result
