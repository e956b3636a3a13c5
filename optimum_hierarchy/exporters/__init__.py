"""Export through Optimum with the module hierarchy."""

from __future__ import annotations

from optimum_hierarchy.exporters.export import export_model_with_hierarchy, export_with_hierarchy
from optimum_hierarchy.exporters.session import AnnotatedFile, HierarchyExportResult, hierarchy_export_session

__all__ = [
    "AnnotatedFile",
    "HierarchyExportResult",
    "export_model_with_hierarchy",
    "export_with_hierarchy",
    "hierarchy_export_session",
]
