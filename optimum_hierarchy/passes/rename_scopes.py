"""Rename attributed nodes whose names carry no scope after their module's scope, as the file spells it.

``Attention_0`` becomes ``/encoder/layer.0/attention/self/Attention_0``: the scope of the exporter's own
names (of the module's kept nodes, its submodules', or the tensors a fused subgraph produced), else
torch's rule from the module tree (:class:`~optimum_hierarchy.scope.ScopeSpeller`), so that tools
grouping nodes by ``/`` in their names put them with the exporter's nodes. A dynamo export's names
carry no scope (``node_MatMul_12``): its nodes take the scopes torch's TorchScript exporter would have
written, from their ``pkg.torch.onnx.name_scopes`` call stacks. A name already taken gets a ``_N``
suffix. Runs after :class:`~optimum_hierarchy.passes.attribute_nodes.AttributeNodesPass`, before the
provenance is recorded (it describes the renamed graph).
"""

from __future__ import annotations

__all__ = ["RenameScopesPass"]

import onnx_ir as ir

from optimum_hierarchy.evidence.dynamo_metadata import module_scopes
from optimum_hierarchy.passes.attribute_nodes import attribution_of
from optimum_hierarchy.provenance import NodeTable
from optimum_hierarchy.scope import ScopeResolver, ScopeSpeller, producer_name_of_output, scope_segments
from optimum_hierarchy.walk import Site


class RenameScopesPass(ir.passes.InPlacePass):
    """Prefix the unscoped names of attributed nodes with their module's scope (see the module docstring)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        found = attribution_of(model)
        modified = _rename_to_scopes(found.sites, found.table, found.modules, found.resolver)
        return ir.passes.PassResult(model, modified=modified)


def _rename_to_scopes(sites: list[Site], table: NodeTable, modules: dict[int, str], resolver: ScopeResolver) -> bool:
    """Prefix unscoped names of attributed nodes with their module's scope as the file spells it; True on a change."""
    speller = ScopeSpeller(resolver)
    for i, site in enumerate(sites):
        speller.observe_name(table.names[i])
        for output in table.outputs[i]:  # a fused node keeps the exporter's names of what it replaced
            speller.observe_name(producer_name_of_output(output) or "")
        try:
            stack = module_scopes(site.node.metadata_props)
        except ValueError:
            stack = None  # unreadable: no evidence of a spelling (attribution said so already)
        if stack:
            speller.observe_call_stack(stack)
    taken = set(table.names)
    changed = False
    for i, site in enumerate(sites):
        name = table.names[i]
        if i not in modules or scope_segments(name) is not None:
            continue
        stem = name or site.node.op_type
        segments = speller.spell(modules[i])
        prefix = f"/{'/'.join(segments)}/" if segments else "/"
        new, n = prefix + stem, 0
        while new in taken:
            n += 1
            new = f"{prefix}{stem}_{n}"
        taken.add(new)
        site.node.name = new
        table.names[i] = new  # type: ignore[index]  # the table's lists are this pass's own
        changed = True
    return changed
