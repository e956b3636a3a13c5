"""``optimum-cli hierarchy annotate``: write the module hierarchy into ONNX files, after an optimizer or after the fact.

Import-light: Optimum imports this at start-up through the plugin file; heavy imports are in ``run``.
"""

from __future__ import annotations

__all__ = ["AnnotateCommand"]

import sys
from argparse import ArgumentParser
from pathlib import Path

from optimum.commands.base import BaseOptimumCLICommand


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
        from optimum_hierarchy.annotation.hierarchy import annotate_hierarchy
        from optimum_hierarchy.cli.output import print_annotated_files, print_error
        from optimum_hierarchy.errors import HierarchyError

        try:
            files = annotate_hierarchy(
                self.args.path, config=self.args.config, strict=self.args.strict, scope_names=self.args.scope_names
            )
        except HierarchyError as e:
            print_error(str(e))
            sys.exit(1)
        base = self.args.path if self.args.path.is_dir() else None
        print_annotated_files(files, f"Module hierarchy written to {self.args.path}", base=base)
