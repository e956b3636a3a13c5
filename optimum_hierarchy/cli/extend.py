"""Extending an existing Optimum command class: more arguments, and a ``run`` that wraps the original.

Optimum builds every command's argparse parser from the command class after all plugin modules are
imported, and a second command cannot take an existing name; so the plugin extends the original
classes. Import-light: nothing heavy is imported here.
"""

from __future__ import annotations

__all__ = ["extend_command"]

from argparse import ArgumentParser
from collections.abc import Callable
from typing import Any


def extend_command(
    command: type,
    key: str,
    run: Callable[[Any, Callable[[Any], Any]], Any],
    add_arguments: Callable[[ArgumentParser], None] | None = None,
) -> None:
    """Make ``command.run`` call ``run(self, original_run)`` and its parser gain ``add_arguments``.

    ``key`` names this extension: installing it twice (the plugin module imported twice) does nothing.
    """
    marker = f"_optimum_hierarchy_{key}"
    if getattr(command, marker, False):
        return
    original_run = command.run  # type: ignore[attr-defined]

    def wrapped_run(self: Any) -> Any:
        return run(self, original_run)

    if add_arguments is not None:
        original_parse_args = command.parse_args  # type: ignore[attr-defined]

        def parse_args(parser: ArgumentParser) -> Any:
            result = original_parse_args(parser)
            add_arguments(parser)
            return result

        command.parse_args = staticmethod(parse_args)  # type: ignore[attr-defined]
    command.run = wrapped_run  # type: ignore[attr-defined]
    setattr(command, marker, True)
