"""Terminal output of the CLI, with rich."""

from __future__ import annotations

__all__ = ["print_error", "print_export_result"]

from rich.console import Console
from rich.table import Table

from optimum_hierarchy.exporters.session import HierarchyExportResult


def print_error(message: str) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def print_export_result(result: HierarchyExportResult, *, optimized: str | None = None) -> None:
    console = Console()
    table = Table(title=f"Module hierarchy written to {result.output}")
    table.add_column("file")
    table.add_column("module root")
    table.add_column("nodes", justify="right")
    table.add_column("attributed", justify="right")
    table.add_column("rules")
    for f in result.files:
        s = f.summary
        table.add_row(
            str(f.path.relative_to(result.output)),
            f.root or "(whole model)",
            str(s.nodes),
            f"{s.attributed} ({100.0 * s.coverage:.1f}%)",
            f.rules or "none (generic)",
        )
    console.print(table)
    total = result.nodes
    shares = ", ".join(f"{k} {100.0 * v / total:.1f}%" for k, v in result.by_source.items()) if total else "-"
    console.print(f"Attributed {result.attributed}/{total} nodes. Share by source: {shares}", highlight=False)
    if any(f.rules is None for f in result.files):
        console.print(
            "Notice: no architecture rules for this model type; the generic attribution was used "
            "(see configs/ to add a rules file).",
            highlight=False,
        )
    if optimized:
        console.print(
            f"Note: --optimize {optimized} fused nodes carry no scope; they are placed from their graph "
            "context (source 'context').",
            highlight=False,
        )
    for f in result.files:
        for u in f.summary.unattributed:
            console.print(f"unattributed: {f.path.name}: {u.node} ({u.op_type}): {u.reason}", highlight=False)
