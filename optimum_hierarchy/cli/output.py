"""Terminal output of the CLI, with rich."""

from __future__ import annotations

__all__ = ["console", "or_exit", "print_annotated_files", "print_error", "print_export_result", "report_node_data"]

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from optimum_hierarchy.annotation.results import AnnotatedFile, HierarchyExportResult

if TYPE_CHECKING:
    from optimum_hierarchy.tools.explorer import NodeData

T = TypeVar("T")

PIPE_WIDTH = 4096
"""The width of a console whose stream is not a terminal: lines and tables do not wrap or truncate module paths,
so piped output keeps one row per line and every path whole, whatever ``COLUMNS`` says."""


def console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr); as wide as :data:`PIPE_WIDTH` when that stream is not a terminal.

    A terminal keeps its own width (or ``COLUMNS``, where set). Piped or redirected output is read by
    programs (``grep``, ``cut``, a log): a module path folded over two lines would not be found there, so
    ``COLUMNS`` (which shells export to their children) does not narrow it.
    """
    out = Console(stderr=stderr)
    if not out.is_terminal:
        out.width = PIPE_WIDTH
    return out


def or_exit(produce: Callable[[], T]) -> T:
    """``produce()``; on an error this package raises on purpose or an unreadable path: the message, exit 1."""
    from optimum_hierarchy.errors import HierarchyError

    try:
        return produce()
    except HierarchyError as e:
        print_error(str(e))
    except OSError as e:
        print_error(f"{e}. Check the paths and their permissions.")
    sys.exit(1)


def report_node_data(data: NodeData, output: Path, *models: Path) -> None:
    """Write Model Explorer's per-node data file and say so on stderr (stdout may be ``--json``)."""
    from optimum_hierarchy.tools.explorer import write_node_data

    write_node_data(data, output, *models)
    note = f"; not shown: {data.unplaced_note}" if data.unplaced else ""
    console(stderr=True).print(
        f"Model Explorer node data ({data.name}, {data.nodes} nodes) written to {output}{note}.",
        highlight=False,
        soft_wrap=True,
    )


def print_error(message: str) -> None:
    console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_export_result(result: HierarchyExportResult, *, optimized: str | None = None) -> None:
    print_annotated_files(result.files, f"Module hierarchy written to {result.output}", base=result.output)
    if optimized:
        out = console()
        out.print(
            f"Note: --optimize {optimized}: nodes ONNX Runtime created were re-attributed from the provenance "
            "stored at export (source 'fusion', or 'rule' where an architecture rule narrowed them).",
            highlight=False,
        )


def print_annotated_files(files: Sequence[AnnotatedFile], title: str, *, base: Path | None = None) -> None:
    """A table of files with their node counts and attribution, then the share by source."""
    out = console()
    table = Table(title=title)
    table.add_column("file")
    table.add_column("module root")
    table.add_column("nodes", justify="right")
    table.add_column("attributed", justify="right")
    table.add_column("rules")
    totals: dict[str, int] = {}
    nodes = attributed = 0
    for f in files:
        s = f.summary
        nodes += s.nodes
        attributed += s.attributed
        for source, n in s.by_source.items():
            totals[source] = totals.get(source, 0) + n
        name = str(f.path.relative_to(base)) if base is not None and f.path.is_relative_to(base) else str(f.path)
        table.add_row(
            name,
            f.root or "(whole model)",
            str(s.nodes),
            f"{s.attributed} ({100.0 * s.coverage:.1f}%)",
            f.rules or "none (generic)",
        )
    out.print(table)
    shares = ", ".join(f"{k} {100.0 * v / nodes:.1f}%" for k, v in sorted(totals.items())) if nodes else "-"
    out.print(f"Attributed {attributed}/{nodes} nodes. Share by source: {shares}", highlight=False)
    if any(f.rules is None for f in files):
        out.print(
            "Notice: no architecture rules for this model type; the generic attribution was used "
            "(see configs/ to add a rules file).",
            highlight=False,
        )
    for f in files:
        if f.summary.without_evidence:
            out.print(
                f"Notice: {f.path.name}: no node carries evidence of its own (no TorchScript scope, dynamo exporter "
                "metadata or parameter name); every module shown is inferred from neighbours. Re-export with "
                "--hierarchy, or give --config MODEL_DIR.",
                highlight=False,
            )
        for u in f.summary.unattributed:
            out.print(f"unattributed: {f.path.name}: {u.node} ({u.op_type}): {u.reason}", highlight=False)
