"""Evidence from per-architecture rules (``configs/*.json``) for nodes an optimizer or quantizer created."""

from __future__ import annotations

__all__ = ["FusedNodeRules"]

from collections.abc import Sequence

from optimum_hierarchy.evidence.base import Found, GraphView, Missing
from optimum_hierarchy.rules import FusedNodeRule
from optimum_hierarchy.schema import AttributionSource


class FusedNodeRules:
    """The first rule for the node's op type whose module terms resolve (see :mod:`optimum_hierarchy.rules`)."""

    name = "fused-node-rules"

    def __init__(self, rules: Sequence[FusedNodeRule]) -> None:
        self.rules = tuple(rules)

    def locate(self, view: GraphView, i: int) -> Found | Missing:
        table = view.table
        op_type = table.op_types[i]
        matching = [rule for rule in self.rules if op_type in rule.op_types]
        for rule in matching:
            path = rule.evaluate(
                table.inputs[i], table.outputs[i], table.names[i], view.owner_of_name, view.resolver.resolve
            )
            if path is not None and path in view.tree:
                return Found(path, AttributionSource.RULE)
        if not matching:
            return Missing(f"no architecture rule for {op_type}")
        return Missing(f"no term of the {op_type} rules resolves for it")
