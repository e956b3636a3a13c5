"""Evidence from output tensor names: ONNX Runtime's fused nodes keep those of the subgraph they replaced."""

from __future__ import annotations

__all__ = ["OutputNames"]

from optimum_hierarchy.evidence.base import Found, GraphView, Missing
from optimum_hierarchy.schema import AttributionSource, ModuleTree
from optimum_hierarchy.scope import producer_name_of_output


class OutputNames:
    """LCA of the TorchScript scopes in the output tensor names (``/a/b/MatMul_output_0``) and of the
    owners of the parameters the node reads."""

    name = "output-names"

    def locate(self, view: GraphView, i: int) -> Found | Missing:
        scopes = []
        for tensor in view.table.outputs[i]:
            node_name = producer_name_of_output(tensor)
            path = view.resolver.resolve(node_name) if node_name is not None else None
            if path is not None:
                scopes.append(path)
        if not scopes:
            return Missing("no scope in the names of its outputs")
        owners = [o for o in map(view.owner_of_name, view.table.inputs[i]) if o is not None]
        found = ModuleTree.lowest_common_ancestor(scopes + owners)
        assert found is not None
        return Found(found, AttributionSource.NAME)
