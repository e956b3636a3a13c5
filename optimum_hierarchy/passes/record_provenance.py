"""Store the provenance of the graph just attributed, so that a later optimization can be re-attributed from it."""

from __future__ import annotations

__all__ = ["RecordProvenancePass"]

import onnx_ir as ir

from optimum_hierarchy import schema
from optimum_hierarchy.passes.attribute_nodes import attribution_of
from optimum_hierarchy.provenance import encode_provenance, snapshot


class RecordProvenancePass(ir.passes.InPlacePass):
    """Write :func:`~optimum_hierarchy.provenance.snapshot` of the attribution into the model's metadata."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        found = attribution_of(model)
        encoded = encode_provenance(snapshot(found.table, found.modules, found.sources, found.fused))
        modified = schema.update_props(model.metadata_props, {schema.PROVENANCE_KEY: encoded})
        return ir.passes.PassResult(model, modified=modified)
