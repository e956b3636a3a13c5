"""``optimum-cli hierarchy ...`` commands, and the hierarchy kept through ``optimum-cli onnxruntime optimize|quantize``.

Import-light: Optimum imports this at start-up through the plugin file; heavy imports are in ``run``.
"""

from __future__ import annotations

__all__ = [
    "AnnotateCommand",
    "DiffCommand",
    "HierarchyCommand",
    "NodesCommand",
    "ShowCommand",
    "StatsCommand",
    "TreeCommand",
    "ViewCommand",
    "install_onnxruntime_hooks",
]

import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from optimum.commands.base import BaseOptimumCLICommand, CommandInfo

from optimum_hierarchy.cli.common import json_argument, model_argument, query
from optimum_hierarchy.cli.error_command import ErrorCommand
from optimum_hierarchy.cli.export_command import ExportCommand
from optimum_hierarchy.cli.module_tools import CompareCommand, ExtractCommand
from optimum_hierarchy.cli.precision_command import PrecisionCommand
from optimum_hierarchy.cli.profile import ProfileCommand
from optimum_hierarchy.cli.quantize_command import ConvertCommand, QuantizeCommand
from optimum_hierarchy.cli.sensitivity_command import SensitivityCommand


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
        parser.add_argument(
            "--scope-names",
            action="store_true",
            help=(
                "Rename nodes whose names carry no scope (Attention_0) after their module's scope as the exporter "
                "spelled it (/encoder/layer.0/attention/self/Attention_0), for tools that group nodes by '/' in their "
                "names (scripts, profile viewers). Not needed for Netron (it groups no nodes) or Model Explorer "
                "(its ONNX adapter groups by the namespace metadata)."
            ),
        )

    def run(self) -> None:
        from optimum_hierarchy.cli.output import print_annotated_files, print_error
        from optimum_hierarchy.errors import HierarchyError
        from optimum_hierarchy.restore import annotate_hierarchy

        try:
            files = annotate_hierarchy(
                self.args.path, config=self.args.config, strict=self.args.strict, scope_names=self.args.scope_names
            )
        except HierarchyError as e:
            print_error(str(e))
            sys.exit(1)
        base = self.args.path if self.args.path.is_dir() else None
        print_annotated_files(files, f"Module hierarchy written to {self.args.path}", base=base)


def _retriever(path: Path) -> Any:
    from optimum_hierarchy.retriever import HierarchyRetriever

    return HierarchyRetriever(path)


class TreeCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        model_argument(parser)
        parser.add_argument("--module", default="", help="Start at this module (default: the root).")
        parser.add_argument("--depth", type=int, default=None, help="Levels to show below the start (default: all).")
        json_argument(parser)

    def run(self) -> None:
        from optimum_hierarchy.cli.views import render_tree, tree_data

        query(self, lambda a: tree_data(_retriever(a.model), a.module, a.depth), render_tree)


class NodesCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        model_argument(parser)
        parser.add_argument(
            "module",
            help="A module path or glob: '*' is one path segment, '**' any number (encoder.layer.*.attention).",
        )
        parser.add_argument("--own", action="store_true", help="Only nodes attributed to the module itself.")
        parser.add_argument(
            "--spanning",
            action="store_true",
            help="Also fused nodes attributed above the module that replaced some of its nodes.",
        )
        json_argument(parser)

    def run(self) -> None:
        from optimum_hierarchy.cli.views import nodes_data, render_nodes

        query(self, lambda a: nodes_data(_retriever(a.model), a.module, own=a.own, spanning=a.spanning), render_nodes)


class StatsCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        model_argument(parser)
        parser.add_argument("--by", choices=["module", "op"], default="module", help="Group by module or op type.")
        parser.add_argument(
            "--depth", type=int, default=1, help="With --by module: group nodes under modules at this depth (1)."
        )
        json_argument(parser)

    def run(self) -> None:
        from optimum_hierarchy.cli.views import render_stats, stats_data

        query(self, lambda a: stats_data(_retriever(a.model), by=a.by, depth=a.depth), render_stats)


class ShowCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        model_argument(parser)
        parser.add_argument("node", help="A node name (/encoder/layer.0/attention/self/query/MatMul, Attention_0).")
        json_argument(parser)

    def run(self) -> None:
        from optimum_hierarchy.cli.views import render_show, show_data

        query(self, lambda a: show_data(_retriever(a.model), a.node), render_show)


class DiffCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        model_argument(parser, "before", "The first annotated .onnx file (e.g. the plain export).")
        model_argument(parser, "after", "The second one (e.g. its optimized or quantized version).")
        parser.add_argument("--depth", type=int, default=None, help="Only modules down to this depth.")
        parser.add_argument("--all", action="store_true", help="Also modules whose nodes did not change.")
        json_argument(parser)

    def run(self) -> None:
        from optimum_hierarchy.cli.views import diff_data, render_diff

        query(
            self,
            lambda a: diff_data(_retriever(a.before), _retriever(a.after), depth=a.depth, everything=a.all),
            render_diff,
        )


class ViewCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        model_argument(parser)
        parser.add_argument(
            "-o", "--output", type=Path, default=None, help="The HTML file to write (default: MODEL with .html)."
        )
        parser.add_argument(
            "--profile",
            type=Path,
            default=None,
            help=(
                "What `optimum-cli hierarchy profile MODEL --json` wrote for this model: the tree shows each "
                "module's time per run (its subtree)."
            ),
        )
        parser.add_argument(
            "--error",
            type=Path,
            default=None,
            help=(
                "What `optimum-cli hierarchy error REFERENCE CANDIDATE --json` wrote for this model: the tree shows "
                "each module's local and accumulated relative L2 error."
            ),
        )

    def run(self) -> None:
        from optimum_hierarchy.errors import HierarchyError
        from optimum_hierarchy.html import write_html

        def produce(a: Any) -> str:
            output = a.output if a.output is not None else a.model.with_suffix(".html")
            if output.is_dir():
                output = output / (a.model.stem + ".html")
            if not output.parent.is_dir():
                raise HierarchyError(f"{output.parent}: no such directory for the HTML file.")
            page = write_html(_retriever(a.model), output, title=a.model.name, profile=a.profile, error=a.error)
            return str(page)

        query(self, produce, lambda path: f"Wrote {path}")


class HierarchyCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    COMMAND = CommandInfo(name="hierarchy", help="Module hierarchy of ONNX models (optimum-hierarchy).")
    SUBCOMMANDS = (
        CommandInfo(
            name="export",
            help=(
                "Export a saved Transformers model with torch's dynamo exporter and the hierarchy "
                "(model.onnx + config.json; no optimum-onnx needed)."
            ),
            subcommand_class=ExportCommand,
        ),
        CommandInfo(
            name="annotate",
            help=(
                "Write the module hierarchy into ONNX files: re-attribute an annotated model after optimization or "
                "quantization, or annotate an export that carries none."
            ),
            subcommand_class=AnnotateCommand,
        ),
        CommandInfo(name="tree", help="The module tree with node and parameter counts.", subcommand_class=TreeCommand),
        CommandInfo(
            name="nodes", help="The nodes of a module or of the modules a glob matches.", subcommand_class=NodesCommand
        ),
        CommandInfo(
            name="stats", help="Node and parameter counts by module or by op type.", subcommand_class=StatsCommand
        ),
        CommandInfo(name="show", help="Where one node comes from.", subcommand_class=ShowCommand),
        CommandInfo(name="diff", help="Node counts by module in two annotated models.", subcommand_class=DiffCommand),
        CommandInfo(name="view", help="Write a self-contained interactive HTML view.", subcommand_class=ViewCommand),
        CommandInfo(
            name="profile",
            help="Time per module: run the model in ONNX Runtime with its profiler, add up kernel time by module.",
            subcommand_class=ProfileCommand,
        ),
        CommandInfo(
            name="extract",
            help="Write one module as a standalone ONNX model (its boundary tensors as inputs and outputs).",
            subcommand_class=ExtractCommand,
        ),
        CommandInfo(
            name="quantize",
            help="int4 weight-only quantization by module (MatMulNBits), keeping the hierarchy.",
            subcommand_class=QuantizeCommand,
        ),
        CommandInfo(
            name="convert",
            help="float16 with chosen modules kept in float32, keeping the hierarchy.",
            subcommand_class=ConvertCommand,
        ),
        CommandInfo(
            name="sensitivity",
            help="Which modules can be quantized: the output error with only that module in int4, ranked.",
            subcommand_class=SensitivityCommand,
        ),
        CommandInfo(
            name="precision",
            help="Which modules are fp32, fp16, int8 or int4: a table, --json, or a map (--plot).",
            subcommand_class=PrecisionCommand,
        ),
        CommandInfo(
            name="error",
            help="Per-module error between two ONNX files of one model: accumulated, and local (the culprit).",
            subcommand_class=ErrorCommand,
        ),
        CommandInfo(
            name="compare",
            help="Compare with the PyTorch model module by module; name the first module that diverges.",
            subcommand_class=CompareCommand,
        ),
    )


def install_onnxruntime_hooks() -> None:
    """After ``optimum-cli onnxruntime optimize|quantize``, re-attribute the output files of annotated inputs."""
    from optimum.commands.onnxruntime.optimize import ONNXRuntimeOptimizeCommand
    from optimum.commands.onnxruntime.quantize import ONNXRuntimeQuantizeCommand

    from optimum_hierarchy.cli.extend import extend_command

    for command in (ONNXRuntimeOptimizeCommand, ONNXRuntimeQuantizeCommand):
        extend_command(command, "onnxruntime_hook", _with_hierarchy)


def _with_hierarchy(self: Any, original_run: Any) -> Any:
    """The ``onnxruntime optimize|quantize`` run, then re-attribution of annotated outputs."""
    result = original_run(self)
    output = Path(self.args.output)
    candidates = sorted(output.rglob("*.onnx"))
    if not candidates:
        return result
    from optimum_hierarchy.cli.output import print_annotated_files, print_error
    from optimum_hierarchy.errors import HierarchyError, InvalidModelFileError
    from optimum_hierarchy.restore import restore_if_annotated

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
    return result
