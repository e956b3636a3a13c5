"""Store each module's output tensors, once, on the graph as exported; later annotations keep them as they are."""

from __future__ import annotations

__all__ = ["RecordModuleOutputsPass"]

import onnx_ir as ir

from optimum_hierarchy import schema
from optimum_hierarchy.passes.attribute_nodes import attribution_of
from optimum_hierarchy.provenance import encode_module_outputs, module_outputs


class RecordModuleOutputsPass(ir.passes.InPlacePass):
    """Write :func:`~optimum_hierarchy.provenance.module_outputs` of the main graph into the model's metadata."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        found = attribution_of(model)
        main = [s.parent is None for s in found.sites]
        outputs = module_outputs(found.table, found.modules, main, [v.name or "" for v in model.graph.outputs])
        modified = schema.update_props(
            model.metadata_props, {schema.MODULE_OUTPUTS_KEY: encode_module_outputs(outputs)}
        )
        return ir.passes.PassResult(model, modified=modified)
