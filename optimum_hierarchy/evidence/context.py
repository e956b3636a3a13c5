"""Inference from neighbours, for the nodes no direct source placed: ``context`` and ``subgraph``.

A node's **context** is the lowest common ancestor (LCA) of the modules around it: its consumers,
the owners of the parameters it reads, the nodes of its ``If`` / ``Loop`` / ``Scan`` bodies, and,
for a node that computes on data (rather than only shaping constants and weights for its
consumers), the producers of its inputs, a graph input counting as the exported module (the root).
The LCA contains everything the node touches: it may be coarser than the true module, never finer.

An LCA that is the root says little: the root contains every node, so a root reached only by
spreading from neighbours is no evidence. A node whose context is the root is placed there only
when there is a witness: it reads a graph input itself (the exported module's own tensors), a
neighbour was placed at the root by direct evidence (a root-scoped ``/Shape``, dynamo metadata
naming the root; not by context), it only shapes constants for a consumer at the root, or it
is in the body of a node at the root.
Otherwise it is **refused**: left unattributed with
:data:`ONLY_THE_ROOT`. For its neighbours' evidence a refused node still counts as "somewhere in
the root", so nothing next to it can be placed finer than the truth allows.

Evidence is used once every neighbour is attributed; where unattributed nodes only neighbour each
other (chains of fused nodes after optimization), each connected group gets the LCA of everything
around it. What is left inside a subgraph body inherits the node owning the body (``subgraph``).
A node none of this reaches stays unattributed.
"""

from __future__ import annotations

__all__ = ["NO_NEIGHBOUR_EVIDENCE", "ONLY_THE_ROOT", "infer_from_context"]

import dataclasses
from collections.abc import Callable, Mapping

import onnx_ir as ir

from optimum_hierarchy.evidence.base import GraphView
from optimum_hierarchy.schema import DIRECT_SOURCES, AttributionSource, ModuleTree

NO_NEIGHBOUR_EVIDENCE = "no attributed neighbour (consumer, producer, parameter or subgraph)"
ONLY_THE_ROOT = (
    "only the root module contains everything around it, and nothing places it there: it reads no graph "
    "input and no neighbour is at the root by evidence of its own"
)

Assign = Callable[[int, str, AttributionSource], None]


def infer_from_context(
    view: GraphView,
    modules: dict[int, str],
    sources: dict[int, str],
    assign: Assign,
    unplaced_before: Mapping[int, str] | None = None,
) -> dict[int, str]:
    """Place the nodes not in ``modules`` by context, then by subgraph; returns those left unplaced, with why.

    ``unplaced_before``: nodes kept from the previous annotation that it left unattributed, with their
    reason. They stay so, and count as refused for their neighbours, exactly as in that annotation:
    annotating the same graph twice gives the same result.
    """
    return _ContextPlacer(view, modules, sources, assign, unplaced_before or {}).run()


class _Neighbourhood:
    """Who is around each node: consumers, producers, the node owning its body, its bodies' nodes."""

    def __init__(self, view: GraphView) -> None:
        self.sites = sites = view.sites
        self.index = {id(s.node): i for i, s in enumerate(sites)}
        self.children: dict[int, list[int]] = {}
        self.owner: dict[int, int] = {}
        for i, site in enumerate(sites):
            if site.parent is not None and id(site.parent) in self.index:
                self.children.setdefault(self.index[id(site.parent)], []).append(i)
                self.owner[i] = self.index[id(site.parent)]
        self.computes = self._computes()
        self.consumers_of = [self._consumers(site.node) for site in sites]
        self.main_graph = sites[0].node.graph if sites else None

    def _computes(self) -> dict[int, bool]:
        """Whether each node computes on data (reaches a graph input), rather than only shaping constants."""
        computes: dict[int, bool] = {}
        for i, site in enumerate(self.sites):
            flag = False
            for value in site.node.inputs:
                if value is None:
                    continue
                producer = value.producer()
                if producer is None:
                    flag = value.is_graph_input()
                else:
                    j = self.index.get(id(producer))
                    flag = j is not None and computes.get(j, True)
                if flag:
                    break
            computes[i] = flag
        return computes

    def _consumers(self, node: ir.Node) -> list[int]:
        out = []
        for value in node.outputs:
            for use in value.uses():
                j = self.index.get(id(use[0]))
                if j is not None:
                    out.append(j)
        return out

    def served(self, i: int) -> list[int]:
        """Nodes whose place at the root carries over to node i: the consumers it only shapes constants
        for, and the node owning the body it is in."""
        out = [] if self.computes[i] else list(self.consumers_of[i])
        if i in self.owner:
            out.append(self.owner[i])
        return out


class _ContextPlacer:
    """One run of :func:`infer_from_context`: sweeps by context, then groups, then subgraph owners."""

    def __init__(
        self,
        view: GraphView,
        modules: dict[int, str],
        sources: dict[int, str],
        assign: Assign,
        unplaced_before: Mapping[int, str],
    ) -> None:
        self.view, self.modules, self.sources, self.assign = view, modules, sources, assign
        self.around = _Neighbourhood(view)
        self.root = view.root
        self.unplaced_before = unplaced_before
        self.refused: set[int] = set(unplaced_before)

    def run(self) -> dict[int, str]:
        pending = [i for i in range(len(self.around.sites)) if i not in self.modules and i not in self.refused]
        while pending:
            still = self._sweep(pending)
            if len(still) < len(pending):
                pending = still
                continue
            if _settle_groups(pending, self.evidence, self.place, self.around.served):
                pending = [i for i in pending if i not in self.modules and i not in self.refused]
                continue
            self._inherit_from_owners(pending)
            remaining = [i for i in pending if i not in self.modules]
            if len(remaining) == len(pending):
                break
            pending = remaining
        left = {i: NO_NEIGHBOUR_EVIDENCE for i in pending}
        left.update((i, self.unplaced_before.get(i, ONLY_THE_ROOT)) for i in self.refused)
        return dict(sorted(left.items()))

    def _sweep(self, pending: list[int]) -> list[int]:
        """Place each node whose neighbours are all known; returns the others, in order."""
        still = []
        for i in reversed(pending):  # backwards: chains of constants settle in one sweep
            ev = self.evidence(i)
            if ev.known and not ev.unknown:
                path = _lca(ev.known)
                # "parameter" when the parameters it reads alone give the answer.
                source = AttributionSource.PARAMETER if path == ev.from_params else AttributionSource.CONTEXT
                self.place(i, path, source, ev.root_witness)
            else:
                still.append(i)
        still.reverse()
        return still

    def _inherit_from_owners(self, pending: list[int]) -> None:
        """A node of an ``If`` / ``Loop`` / ``Scan`` body goes where the node owning the body is."""
        for i in pending:
            parent = self.around.sites[i].parent
            j = self.around.index.get(id(parent)) if parent is not None else None
            if j is not None and j in self.modules:
                self.assign(i, self.modules[j], AttributionSource.SUBGRAPH)

    def evidence(self, i: int) -> Evidence:
        around, root, modules = self.around, self.root, self.modules
        node = around.sites[i].node
        params = [o for o in map(self.view.owner_of_name, self.view.table.inputs[i]) if o is not None]
        ev = Evidence(known=list(params), unknown=[], from_params=_lca(params) if params else None)
        ev.root_witness = root in params
        neighbours = around.consumers_of[i] + around.children.get(i, [])
        if around.computes[i]:
            for value in node.inputs:
                if value is None:
                    continue
                producer = value.producer()
                if producer is None:
                    if value.is_graph_input() and value.graph is around.main_graph:
                        ev.known.append(root)
                        ev.root_witness = True
                elif id(producer) in around.index:
                    neighbours.append(around.index[id(producer)])
        serves = set(around.served(i))
        for j in neighbours:
            if j in modules:
                ev.known.append(modules[j])
                # A node that only shapes constants for its consumers goes where they are, however they got there.
                at_root = modules[j] == root
                ev.root_witness = ev.root_witness or (at_root and (self.sources[j] in DIRECT_SOURCES or j in serves))
            elif j in self.refused:
                ev.known.append(root)  # somewhere in the root, no more is known
            else:
                ev.unknown.append(j)
        return ev

    def place(self, i: int, path: str, source: AttributionSource, witness: bool) -> None:
        if path == self.root and not witness:
            self.refused.add(i)
        else:
            self.assign(i, path, source)


@dataclasses.dataclass
class Evidence:
    """What is known around one node."""

    known: list[str]
    """Module paths of attributed neighbours and parameters (the root for graph inputs and refused neighbours)."""
    unknown: list[int]
    """Neighbours not placed yet."""
    from_params: str | None
    """LCA of the owners of the parameters it reads."""
    root_witness: bool = False
    """It reads a graph input, or a neighbour (or parameter owner) was placed at the root by direct evidence."""


def _settle_groups(
    pending: list[int],
    evidence: Callable[[int], Evidence],
    place: Callable[[int, str, AttributionSource, bool], None],
    served: Callable[[int], list[int]],
) -> bool:
    """Attribute each connected group of unknown nodes to the LCA of everything around it."""
    pending_set = set(pending)
    seen: set[int] = set()
    progress = False
    for start in pending:
        if start in seen:
            continue
        group, known, stack = [], [], [start]
        witnesses: dict[int, bool] = {}
        seen.add(start)
        while stack:
            i = stack.pop()
            group.append(i)
            ev = evidence(i)
            known += ev.known
            witnesses[i] = ev.root_witness
            for j in ev.unknown:
                if j in pending_set and j not in seen:
                    seen.add(j)
                    stack.append(j)
        changed = True
        while changed:  # constants serving a witnessed node of the group go with it
            changed = False
            for i in group:
                if not witnesses[i] and any(witnesses.get(j, False) for j in served(i)):
                    witnesses[i] = changed = True
        if known:
            path = _lca(known)
            for i in group:  # each node needs its own witness for the root
                place(i, path, AttributionSource.CONTEXT, witnesses[i])
            progress = True
    return progress


def _lca(paths: list[str]) -> str:
    found = ModuleTree.lowest_common_ancestor(paths)
    assert found is not None, "_lca needs at least one path"
    return found
