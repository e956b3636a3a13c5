"""Graph passes over onnx_ir models, one per file; ``annotate_graph.py`` composes them for a mode.

Re-exported lazily: this ``__init__`` imports none of its submodules, so importing one pass (or
:mod:`~optimum_hierarchy.passes.reattribute`) does not load the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optimum_hierarchy.lazy import lazy_getattr

_LAZY = {
    "AnnotateGraphPass": "optimum_hierarchy.passes.annotate_graph",
    "AttributeNodesPass": "optimum_hierarchy.passes.attribute_nodes",
    "Mode": "optimum_hierarchy.passes.attribute_nodes",
    "RecordModuleOutputsPass": "optimum_hierarchy.passes.record_module_outputs",
    "RecordProvenancePass": "optimum_hierarchy.passes.record_provenance",
    "RenameScopesPass": "optimum_hierarchy.passes.rename_scopes",
}

__all__ = [
    "AnnotateGraphPass",
    "AttributeNodesPass",
    "Mode",
    "RecordModuleOutputsPass",
    "RecordProvenancePass",
    "RenameScopesPass",
]

if TYPE_CHECKING:
    from optimum_hierarchy.passes.annotate_graph import AnnotateGraphPass
    from optimum_hierarchy.passes.attribute_nodes import AttributeNodesPass, Mode
    from optimum_hierarchy.passes.record_module_outputs import RecordModuleOutputsPass
    from optimum_hierarchy.passes.record_provenance import RecordProvenancePass
    from optimum_hierarchy.passes.rename_scopes import RenameScopesPass


__getattr__ = lazy_getattr(__name__, _LAZY)
