"""What an export with hierarchy returns: the files it annotated and their attribution summaries."""

from __future__ import annotations

__all__ = ["AnnotatedFile", "HierarchyExportResult"]

import dataclasses
from pathlib import Path

from optimum_hierarchy.schema import AttributionSummary


@dataclasses.dataclass(frozen=True)
class AnnotatedFile:
    path: Path
    root: str
    """Path in the full model of the module this file holds (``""``: the whole model)."""
    summary: AttributionSummary
    rules: str | None


@dataclasses.dataclass(frozen=True)
class HierarchyExportResult:
    """Where an export with hierarchy wrote its files, and how their nodes were attributed."""

    output: Path
    files: tuple[AnnotatedFile, ...]

    @property
    def nodes(self) -> int:
        return sum(f.summary.nodes for f in self.files)

    @property
    def attributed(self) -> int:
        return sum(f.summary.attributed for f in self.files)

    @property
    def by_source(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for f in self.files:
            for source, n in f.summary.by_source.items():
                totals[source] = totals.get(source, 0) + n
        return dict(sorted(totals.items()))
