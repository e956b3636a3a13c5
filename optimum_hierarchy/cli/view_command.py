"""``optimum-cli hierarchy view``: write the self-contained interactive HTML view of an annotated file.

Import-light: Optimum imports this at start-up through the plugin file; heavy imports are in ``run``.
"""

from __future__ import annotations

__all__ = ["ViewCommand"]

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from optimum.commands.base import BaseOptimumCLICommand

from optimum_hierarchy.cli.common import model_argument, query
from optimum_hierarchy.cli.query_command import retriever


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
                "each module's local and accumulated relative L2 error, and the page draws the error per layer."
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
            page = write_html(retriever(a.model), output, title=a.model.name, profile=a.profile, error=a.error)
            return str(page)

        query(self, produce, lambda path: f"Wrote {path}")
