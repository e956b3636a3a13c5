"""optimum-hierarchy: the PyTorch module hierarchy, kept in ONNX models exported with Hugging Face Optimum.

Importing the package is cheap; the heavy modules (torch, optimum's exporter, onnxruntime) load on
first use of the names below. ``export_with_hierarchy``, ``export_model_with_hierarchy`` and
``hierarchy_onnx_config`` need the ``onnx`` extra (optimum-onnx) and say so when it is missing;
``HierarchyOnnxExporter`` and ``export_generation_with_hierarchy`` need transformers' own exporter
(``transformers.exporters``, transformers >= 5.23) and say so when it is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optimum_hierarchy.lazy import lazy_getattr

__version__ = "0.3.0"

_LAZY = {
    "AttributeNodesPass": "optimum_hierarchy.passes.attribute_nodes",
    "AttributionSource": "optimum_hierarchy.schema",
    "AttributionSummary": "optimum_hierarchy.schema",
    "ExportInfo": "optimum_hierarchy.schema",
    "HierarchyExportResult": "optimum_hierarchy.annotation.results",
    "HierarchyOnnxExporter": "optimum_hierarchy.exporters.transformers_exporter",
    "HierarchyMetadata": "optimum_hierarchy.schema",
    "HierarchyPreservingExporter": "optimum_hierarchy.exporters.pytorch",
    "HierarchyRetriever": "optimum_hierarchy.retriever",
    "ModuleInfo": "optimum_hierarchy.modules",
    "ModuleTree": "optimum_hierarchy.modules",
    "annotate_file": "optimum_hierarchy.annotation.file",
    "annotate_hierarchy": "optimum_hierarchy.annotation.hierarchy",
    "capture_module_tree": "optimum_hierarchy.trees.live_model",
    "export_model_with_hierarchy": "optimum_hierarchy.exporters.export",
    "export_generation_with_hierarchy": "optimum_hierarchy.exporters.generation_export",
    "export_task_with_hierarchy": "optimum_hierarchy.exporters.task_export",
    "export_with_hierarchy": "optimum_hierarchy.exporters.export",
    "hierarchy_onnx_config": "optimum_hierarchy.exporters.onnx_config",
    "read_export_hierarchy": "optimum_hierarchy.read",
    "read_hierarchy": "optimum_hierarchy.read",
}

__all__ = [
    "AttributeNodesPass",
    "AttributionSource",
    "AttributionSummary",
    "ExportInfo",
    "HierarchyExportResult",
    "HierarchyMetadata",
    "HierarchyOnnxExporter",
    "HierarchyPreservingExporter",
    "HierarchyRetriever",
    "ModuleInfo",
    "ModuleTree",
    "__version__",
    "annotate_file",
    "annotate_hierarchy",
    "capture_module_tree",
    "export_generation_with_hierarchy",
    "export_model_with_hierarchy",
    "export_task_with_hierarchy",
    "export_with_hierarchy",
    "hierarchy_onnx_config",
    "read_export_hierarchy",
    "read_hierarchy",
]

if TYPE_CHECKING:
    from optimum_hierarchy.annotation.file import annotate_file
    from optimum_hierarchy.annotation.hierarchy import annotate_hierarchy
    from optimum_hierarchy.annotation.results import HierarchyExportResult
    from optimum_hierarchy.exporters.export import export_model_with_hierarchy, export_with_hierarchy
    from optimum_hierarchy.exporters.generation_export import export_generation_with_hierarchy
    from optimum_hierarchy.exporters.onnx_config import hierarchy_onnx_config
    from optimum_hierarchy.exporters.pytorch import HierarchyPreservingExporter
    from optimum_hierarchy.exporters.task_export import export_task_with_hierarchy
    from optimum_hierarchy.exporters.transformers_exporter import HierarchyOnnxExporter
    from optimum_hierarchy.modules import ModuleInfo, ModuleTree
    from optimum_hierarchy.passes.attribute_nodes import AttributeNodesPass
    from optimum_hierarchy.read import read_export_hierarchy, read_hierarchy
    from optimum_hierarchy.schema import AttributionSource, AttributionSummary, ExportInfo, HierarchyMetadata
    from optimum_hierarchy.trees.live_model import capture_module_tree


__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)
