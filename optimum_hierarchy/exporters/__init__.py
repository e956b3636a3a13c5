"""Export through Optimum with the module hierarchy.

Re-exported lazily: this ``__init__`` imports none of its submodules, so importing one of them
(``exporters.results`` for its result types, say) does not load the others, and no submodule is in
an import cycle with it. ``export_with_hierarchy`` and ``export_model_with_hierarchy`` need the
``onnx`` extra (optimum-onnx) and say so when it is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optimum_hierarchy.lazy import lazy_getattr

_LAZY = {
    "AnnotatedFile": "optimum_hierarchy.annotation.results",
    "HierarchyExportResult": "optimum_hierarchy.annotation.results",
    "export_model_with_hierarchy": "optimum_hierarchy.exporters.export",
    "export_with_hierarchy": "optimum_hierarchy.exporters.export",
    "hierarchy_export_session": "optimum_hierarchy.exporters.session",
}

__all__ = [
    "AnnotatedFile",
    "HierarchyExportResult",
    "export_model_with_hierarchy",
    "export_with_hierarchy",
    "hierarchy_export_session",
]

if TYPE_CHECKING:
    from optimum_hierarchy.annotation.results import AnnotatedFile, HierarchyExportResult
    from optimum_hierarchy.exporters.export import export_model_with_hierarchy, export_with_hierarchy
    from optimum_hierarchy.exporters.session import hierarchy_export_session


__getattr__ = lazy_getattr(__name__, _LAZY)
