"""The ``optimum-cli hierarchy`` group (``cli/hierarchy.py``) and the extensions of Optimum's own commands."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest
from optimum.commands.base import BaseOptimumCLICommand
from support import run_cli

from optimum_hierarchy.cli import hierarchy, plugin

CLI = Path(hierarchy.__file__).parent


def _command_classes() -> dict[str, set[type]]:
    """Every command class defined in a module of ``cli/``, by module (read from the modules themselves)."""
    found: dict[str, set[type]] = {}
    for path in sorted(CLI.glob("*.py")):
        module = importlib.import_module(f"optimum_hierarchy.cli.{path.stem}")
        classes = {
            obj
            for _, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, BaseOptimumCLICommand) and obj.__module__ == module.__name__
        }
        if classes:
            found[path.stem] = classes
    return found


def test_every_command_class_is_registered_once() -> None:
    """A command module whose class is not in the group's list would never be reachable: registration is one line."""
    classes = _command_classes()
    assert len(classes) > 5  # the walk found the command modules
    registered = [info.subcommand_class for info in hierarchy.COMMANDS]
    assert len(registered) == len(set(registered)) and len({i.name for i in hierarchy.COMMANDS}) == len(registered)
    # Not subcommands of the group: the group itself, and `export onnx` in place of optimum-onnx's.
    others = {hierarchy.HierarchyCommand, plugin.MissingOnnxExportCommand}
    defined = set().union(*classes.values()) - others
    assert defined == set(registered)
    assert hierarchy.HierarchyCommand.SUBCOMMANDS == hierarchy.COMMANDS


def test_the_group_module_holds_only_the_group() -> None:
    tree = ast.parse((CLI / "hierarchy.py").read_text(encoding="utf-8"))
    assert [n.name for n in tree.body if isinstance(n, ast.ClassDef)] == ["HierarchyCommand"]
    assert not [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]


def test_each_optimum_command_class_is_extended_in_one_module() -> None:
    """``extend_command`` on a class of Optimum: each class named in exactly one module of ``cli/``."""
    extended: dict[str, list[str]] = {}
    for path in sorted(CLI.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "extend_command" and node.args:
                target = node.args[0]
                if isinstance(target, ast.Name):
                    extended.setdefault(target.id, []).append(path.name)
    assert extended, "no extend_command call found"
    assert extended == {
        "ONNXExportCommand": ["export_flag.py"],
        "ONNXRuntimeOptimizeCommand": ["onnxruntime_hook.py"],
        "ONNXRuntimeQuantizeCommand": ["quantize_flag.py"],
    }


@pytest.mark.optimum_onnx
def test_optimums_onnxruntime_commands_carry_one_extension_each() -> None:
    from optimum.commands.onnxruntime.optimize import ONNXRuntimeOptimizeCommand
    from optimum.commands.onnxruntime.quantize import ONNXRuntimeQuantizeCommand

    plugin.install_command_extensions()
    plugin.install_command_extensions()  # the plugin module imported twice: nothing more
    for command, key in (
        (ONNXRuntimeQuantizeCommand, "onnxruntime_quantize"),
        (ONNXRuntimeOptimizeCommand, "onnxruntime_optimize"),
    ):
        assert [name for name in vars(command) if name.startswith("_optimum_hierarchy_")] == [
            f"_optimum_hierarchy_{key}"
        ]


@pytest.mark.cli
def test_help_lists_every_registered_command() -> None:
    completed = run_cli("hierarchy", "--help")
    assert hierarchy.COMMANDS
    for info in hierarchy.COMMANDS:
        assert f"    {info.name} " in completed.stdout or f"    {info.name}\n" in completed.stdout, info.name
