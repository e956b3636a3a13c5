"""Evidence from the TorchScript exporter's node names: ``/encoder/layer.0/attention/self/query/MatMul``."""

from __future__ import annotations

__all__ = ["TorchScriptScope"]

from optimum_hierarchy.evidence.base import Found, GraphView, Missing
from optimum_hierarchy.schema import AttributionSource
from optimum_hierarchy.scope import scope_segments


class TorchScriptScope:
    """The scope in the node's name, resolved against the tree (:class:`~optimum_hierarchy.scope.ScopeResolver`).

    ``label`` is ``scope`` on a fresh TorchScript export and ``name`` for a file annotated after the
    fact, where a name is only a name.
    """

    name = "torchscript-scope"

    def __init__(self, label: AttributionSource = AttributionSource.SCOPE) -> None:
        self.label = label

    def locate(self, view: GraphView, i: int) -> Found | Missing:
        node_name = view.table.names[i]
        path = view.resolver.resolve(node_name)
        if path is not None:
            return Found(path, self.label)
        if scope_segments(node_name) is None:
            return Missing("no TorchScript scope in its name")
        # On a fresh export the scope is the exporter's record of the module call: one that names no module
        # of the tree (or two) contradicts the tree, and is said so (a warning, and the reason if it stays
        # unattributed), not silently replaced by the neighbours' module.
        return Missing(
            f"the scope of its name {node_name!r} matches no module of the tree (or more than one)",
            rejected=self.label is AttributionSource.SCOPE,
        )
