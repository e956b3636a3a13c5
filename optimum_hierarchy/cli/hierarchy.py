"""The ``optimum-cli hierarchy`` command group: which subcommands it has, in the order ``--help`` lists them.

Each command lives in a module of its own (``*_command.py``, or a small family such as the query
commands in ``query_command.py``). A new command is one new module and one line in :data:`COMMANDS`.
Import-light: Optimum imports this at start-up through the plugin file; every command module imports
its heavy code in ``run``.
"""

from __future__ import annotations

__all__ = ["COMMANDS", "HierarchyCommand"]

from optimum.commands.base import BaseOptimumCLICommand, CommandInfo

from optimum_hierarchy.cli.annotate_command import AnnotateCommand
from optimum_hierarchy.cli.error_command import ErrorCommand
from optimum_hierarchy.cli.export_command import ExportCommand
from optimum_hierarchy.cli.module_tools import CompareCommand, ExtractCommand
from optimum_hierarchy.cli.precision_command import PrecisionCommand
from optimum_hierarchy.cli.profile import ProfileCommand
from optimum_hierarchy.cli.quantize_command import ConvertCommand, QuantizeCommand
from optimum_hierarchy.cli.query_command import DiffCommand, NodesCommand, ShowCommand, StatsCommand, TreeCommand
from optimum_hierarchy.cli.sensitivity_command import SensitivityCommand
from optimum_hierarchy.cli.view_command import ViewCommand

COMMANDS: tuple[CommandInfo, ...] = (
    CommandInfo(
        name="export",
        help=(
            "Export a saved Transformers model with the hierarchy, without optimum-onnx: torch's dynamo exporter "
            "(model.onnx + config.json), or transformers' own exporter for the generative tasks."
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
    CommandInfo(name="stats", help="Node and parameter counts by module or by op type.", subcommand_class=StatsCommand),
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
        help="Which modules can be quantized: the output error with only that module in int4, int8 or fp16, ranked.",
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
"""The subcommands of ``optimum-cli hierarchy``, in the order ``--help`` lists them."""


class HierarchyCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    COMMAND = CommandInfo(name="hierarchy", help="Module hierarchy of ONNX models (optimum-hierarchy).")
    SUBCOMMANDS = COMMANDS
