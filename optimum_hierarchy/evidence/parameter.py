"""Evidence from parameter names: a node whose output is a parameter (an ``Identity`` aliasing a deduplicated one)."""

from __future__ import annotations

__all__ = ["ParameterAlias"]

from optimum_hierarchy.evidence.base import Found, GraphView, Missing
from optimum_hierarchy.schema import AttributionSource, ModuleTree


class ParameterAlias:
    """The lowest common ancestor of the modules owning the parameters or buffers the node outputs."""

    name = "parameter-alias"

    def locate(self, view: GraphView, i: int) -> Found | Missing:
        owners = [o for o in map(view.owner_of_name, view.table.outputs[i]) if o is not None]
        if not owners:
            return Missing("it outputs no parameter")
        found = ModuleTree.lowest_common_ancestor(owners)
        assert found is not None
        return Found(found, AttributionSource.PARAMETER)
