"""``--exclude-modules`` / ``--include-modules`` on ``optimum-cli onnxruntime quantize``.

The command builds its ``QuantizationConfig`` inside ``run`` and quantizes every ``*.onnx`` file of
the input directory with it, while node names differ from file to file. So the plugin extends the
original ``ONNXRuntimeQuantizeCommand`` class: its parser gains a "Quantize by module" argument
group, and with one of the flags its ``run`` resolves the globs in each file first (an error leaves
nothing written), then runs the original ``run`` while ``ORTQuantizer.quantize`` is patched to pass
each file its own node lists. Without the flags, the original ``run`` runs untouched. The output
files are re-attributed by the hook of :func:`optimum_hierarchy.cli.hierarchy.install_onnxruntime_hooks`.
"""

from __future__ import annotations

__all__ = ["add_quantize_arguments", "install_quantize_flag"]

import contextlib
import sys
from argparse import ArgumentParser
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def add_quantize_arguments(parser: ArgumentParser) -> None:
    group = parser.add_argument_group("Quantize by module (optimum-hierarchy)")
    group.add_argument(
        "--exclude-modules",
        nargs="+",
        metavar="GLOB",
        default=None,
        help=(
            "Keep these modules float: module paths as `optimum-cli hierarchy tree FILE` prints them, '*' one path "
            "segment, '**' any number (e.g. 'encoder.layer.11.*' lm_head). Fused nodes that replaced part of an "
            "excluded module stay float too. The model files must carry hierarchy (exported with --hierarchy, or "
            "`optimum-cli hierarchy annotate DIR`)."
        ),
    )
    group.add_argument(
        "--include-modules",
        nargs="+",
        metavar="GLOB",
        default=None,
        help="Quantize only nodes inside these modules (same globs); with --exclude-modules, minus the excluded ones.",
    )


def install_quantize_flag() -> None:
    """Add the module flags to Optimum's ``onnxruntime quantize`` command (idempotent, import-light)."""
    from optimum.commands.onnxruntime.quantize import ONNXRuntimeQuantizeCommand

    from optimum_hierarchy.cli.extend import extend_command

    def run(self: Any, original_run: Any) -> Any:
        if not (getattr(self.args, "exclude_modules", None) or getattr(self.args, "include_modules", None)):
            return original_run(self)
        return _run_by_module(self, original_run)

    extend_command(ONNXRuntimeQuantizeCommand, "quantize_flag", run, add_quantize_arguments)


@contextlib.contextmanager
def _replaced(owner: Any, name: str, value: Any) -> Iterator[None]:
    saved = owner.__dict__[name]
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


def _run_by_module(command: Any, original_run: Any) -> Any:
    from optimum.onnxruntime.quantization import ORTQuantizer

    from optimum_hierarchy.cli.output import print_error
    from optimum_hierarchy.errors import HierarchyError
    from optimum_hierarchy.tools.quantize import ModuleQuantizationResult, nodes_for_modules, quantize_by_module

    args = command.args
    exclude = tuple(args.exclude_modules or ())
    include = tuple(args.include_modules or ())
    files = sorted(Path(args.onnx_model).glob("*.onnx"))  # what the command quantizes
    try:
        selections = {
            f.resolve(): nodes_for_modules(f, exclude_modules=exclude, include_modules=include, missing_ok=True)
            for f in files
        }
        for glob in (*exclude, *include):
            if selections and not any(s.matched[glob] for s in selections.values()):
                names = ", ".join(f.name for f in files)
                raise HierarchyError(
                    f"module glob {glob!r} matches no module of {names} in {args.onnx_model} ('*' is one path "
                    f"segment, '**' any number). List the modules with `optimum-cli hierarchy tree {files[0]}`."
                )
    except HierarchyError as e:
        print_error(str(e))
        sys.exit(1)

    results: list[ModuleQuantizationResult] = []

    def quantize(  # noqa: PLR0917  # the signature of ORTQuantizer.quantize
        self: Any,
        quantization_config: Any,
        save_dir: Any,
        file_suffix: str | None = "quantized",
        calibration_tensors_range: Any = None,
        use_external_data_format: bool = False,
        preprocessor: Any = None,
    ) -> Path:
        selection = selections.get(Path(self.onnx_model_path).resolve())
        if selection is None:  # not one of the files listed above: resolve it now
            selection = nodes_for_modules(self.onnx_model_path, exclude_modules=exclude, include_modules=include)
        # restore=False: the onnxruntime hook re-attributes every output file after the command.
        result = quantize_by_module(
            self,
            quantization_config,
            save_dir,
            file_suffix=file_suffix,
            calibration_tensors_range=calibration_tensors_range,
            use_external_data_format=use_external_data_format,
            preprocessor=preprocessor,
            selection=selection,
            restore=False,
        )
        results.append(result)
        return result.save_dir

    try:
        with _replaced(ORTQuantizer, "quantize", quantize):
            outcome = original_run(command)
    except HierarchyError as e:
        print_error(str(e))
        sys.exit(1)
    _print_results(results)
    return outcome


def _print_results(results: list[Any]) -> None:
    from rich.console import Console

    console = Console()
    console.print("Quantized by module:", style="bold", highlight=False)
    for r in results:
        console.print(f"  {r.model.name}: {r.selection.describe()}", highlight=False, soft_wrap=True)
    if any(r.types_inferred for r in results):
        console.print(
            "Note: tensor types were inferred first (ONNX Runtime's symbolic shape inference) in graphs with "
            "ONNX Runtime contrib operators: the quantizer needs them there.",
            highlight=False,
        )
