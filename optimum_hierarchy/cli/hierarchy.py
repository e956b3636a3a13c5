"""``optimum-cli hierarchy ...`` commands, and the hierarchy kept through ``optimum-cli onnxruntime optimize|quantize``.

Import-light: Optimum imports this at start-up through the plugin file; heavy imports are in ``run``.
"""

from __future__ import annotations

__all__ = ["AnnotateCommand", "HierarchyCommand", "install_onnxruntime_hooks"]

import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from optimum.commands.base import BaseOptimumCLICommand, CommandInfo

_INSTALLED = "_optimum_hierarchy_installed"


class AnnotateCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        parser.add_argument(
            "path",
            type=Path,
            help="An .onnx file, or a directory whose .onnx files (searched recursively) are annotated.",
        )
        parser.add_argument(
            "--config",
            type=Path,
            default=None,
            help=(
                "For files that carry no hierarchy: the model's config.json (or its directory), whose module tree "
                "is built on the meta device (no weights). Default: the config.json beside each file; without one, "
                "the tree is rebuilt from the graph's names."
            ),
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Fail, leaving the files as they were, if any node cannot be attributed.",
        )

    def run(self) -> None:
        from optimum_hierarchy.cli.output import print_annotated_files, print_error
        from optimum_hierarchy.errors import HierarchyError
        from optimum_hierarchy.restore import restore_hierarchy

        try:
            files = restore_hierarchy(self.args.path, config=self.args.config, strict=self.args.strict)
        except HierarchyError as e:
            print_error(str(e))
            sys.exit(1)
        base = self.args.path if self.args.path.is_dir() else None
        print_annotated_files(files, f"Module hierarchy written to {self.args.path}", base=base)


class HierarchyCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    COMMAND = CommandInfo(name="hierarchy", help="Module hierarchy of ONNX models (optimum-hierarchy).")
    SUBCOMMANDS = (
        CommandInfo(
            name="annotate",
            help=(
                "Write the module hierarchy into ONNX files: re-attribute an annotated model after optimization or "
                "quantization, or annotate an export that carries none."
            ),
            subcommand_class=AnnotateCommand,
        ),
    )


def install_onnxruntime_hooks() -> None:
    """After ``optimum-cli onnxruntime optimize|quantize``, re-attribute the output files of annotated inputs."""
    from optimum.commands.onnxruntime.optimize import ONNXRuntimeOptimizeCommand
    from optimum.commands.onnxruntime.quantize import ONNXRuntimeQuantizeCommand

    for command in (ONNXRuntimeOptimizeCommand, ONNXRuntimeQuantizeCommand):
        if getattr(command, _INSTALLED, False):
            continue
        command.run = _with_hierarchy(command.run)
        setattr(command, _INSTALLED, True)


def _with_hierarchy(original_run: Any) -> Any:
    def run(self: Any) -> Any:
        result = original_run(self)
        output = Path(self.args.output)
        annotated = [p for p in sorted(output.rglob("*.onnx")) if _has_hierarchy(p)]
        if not annotated:
            return result
        from optimum_hierarchy.cli.output import print_annotated_files, print_error
        from optimum_hierarchy.errors import HierarchyError
        from optimum_hierarchy.restore import restore_hierarchy

        try:
            files = [f for p in annotated for f in restore_hierarchy(p)]
        except HierarchyError as e:
            print_error(f"{e} The model files are written; rerun `optimum-cli hierarchy annotate {output}`.")
            sys.exit(1)
        print_annotated_files(files, f"Module hierarchy re-attributed in {output}", base=output)
        return result

    return run


def _has_hierarchy(path: Path) -> bool:
    """Whether an ONNX file carries hierarchy metadata (a cheap check on the parsed model's metadata)."""
    from optimum_hierarchy.annotate import load_model_proto
    from optimum_hierarchy.errors import HierarchyError
    from optimum_hierarchy.schema import SCHEMA_VERSION_KEY

    try:
        proto = load_model_proto(path)
    except HierarchyError:
        return False
    return any(p.key == SCHEMA_VERSION_KEY for p in proto.metadata_props)
