"""The file-level API: annotate ONNX files, again after an optimizer or after the fact, and what that returns.

``file.py`` annotates one file, the bytes an exporter is about to write, or a proto, as what a :class:`Mode`
names; ``hierarchy.py`` a file or directory (``hierarchy annotate``) and the files ONNX Runtime rewrote
(``restore_if_annotated``); ``export_info.py`` and ``results.py`` are what every exporter shares with them.
Names are re-exported lazily (see :mod:`optimum_hierarchy.lazy`).
"""

from __future__ import annotations

from optimum_hierarchy.lazy import lazy_getattr

_LAZY = {
    "AnnotatedFile": "optimum_hierarchy.annotation.results",
    "HierarchyExportResult": "optimum_hierarchy.annotation.results",
    "Mode": "optimum_hierarchy.passes.attribute_nodes",
    "annotate_file": "optimum_hierarchy.annotation.file",
    "annotate_hierarchy": "optimum_hierarchy.annotation.hierarchy",
    "annotate_proto": "optimum_hierarchy.annotation.file",
    "make_export_info": "optimum_hierarchy.annotation.export_info",
    "restore_if_annotated": "optimum_hierarchy.annotation.hierarchy",
    "write_annotated": "optimum_hierarchy.annotation.file",
}

__all__ = [
    "AnnotatedFile",
    "HierarchyExportResult",
    "Mode",
    "annotate_file",
    "annotate_hierarchy",
    "annotate_proto",
    "make_export_info",
    "restore_if_annotated",
    "write_annotated",
]

__getattr__ = lazy_getattr(__name__, _LAZY)
