"""The annotation of a graph: the single-purpose passes, composed in their order for a mode."""

from __future__ import annotations

__all__ = ["AnnotateGraphPass"]

import onnx_ir as ir

from optimum_hierarchy.passes.attribute_nodes import AttributeNodesPass, Mode
from optimum_hierarchy.passes.record_module_outputs import RecordModuleOutputsPass
from optimum_hierarchy.passes.record_provenance import RecordProvenancePass
from optimum_hierarchy.passes.rename_scopes import RenameScopesPass


class AnnotateGraphPass(ir.passes.InPlacePass):
    """``attribute``, then the renaming (``scope_names``), the provenance, and on an export the module outputs.

    The parts run in order like ``ir.passes.Sequential``, which is not used because it wraps every error
    in a ``PassError``: a strict run raises :class:`~optimum_hierarchy.errors.AttributionError` itself.
    """

    def __init__(self, attribute: AttributeNodesPass, *, scope_names: bool = False) -> None:
        super().__init__()
        self.passes: tuple[ir.passes.PassBase, ...] = (
            attribute,
            *((RenameScopesPass(),) if scope_names else ()),
            RecordProvenancePass(),
            *((RecordModuleOutputsPass(),) if attribute.mode is Mode.EXPORT else ()),
        )

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for part in self.passes:
            modified = part(model).modified or modified
        return ir.passes.PassResult(model, modified=modified)
