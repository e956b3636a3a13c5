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
around it. A group is a connected component of "one waits for the other", taken both ways (a node
that only shapes constants does not wait for its producers, but they wait for it), so it is the same
whichever of its nodes comes first; every node's evidence is read before any group is placed, and
no group neighbours another, so neither the order of the nodes nor that of the groups matters.
What is left inside a subgraph body inherits the node owning the body (``subgraph``), level by
level: only from owners placed before that step. A node none of this reaches stays unattributed.
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
        """A node of an ``If`` / ``Loop`` / ``Scan`` body goes where the node owning the body is.

        Only owners placed before this step count (not one placed by it, a level up), whatever the node order.
        """
        owner = self.around.owner
        inherited = [(i, self.modules[owner[i]]) for i in pending if i in owner and owner[i] in self.modules]
        for i, path in inherited:
            self.assign(i, path, AttributionSource.SUBGRAPH)

    def evidence(self, i: int) -> Evidence:
        around, root, modules = self.around, self.root, self.modules
        node = around.sites[i].node
        params = [o for o in map(self.view.owner_of_name, self.view.table.inputs[i]) if o is not None]
        ev = Evidence(known=list(params), unknown=[], from_params=_lca(params) if params else None)
        ev.root_witness = root in params
        # In the body of a node at the root. That node waits for its body's nodes, so it is placed before this
        # one only by direct evidence (or with it, in one group: see _settle_groups), whatever the node order.
        body_owner = around.owner.get(i)
        if body_owner is not None and modules.get(body_owner) == root:
            ev.root_witness = True
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
    """It reads a graph input or a parameter of the root, a neighbour was placed at the root by direct evidence (or
    is a consumer it only shapes constants for), or the node owning its body is at the root."""


def _settle_groups(
    pending: list[int],
    evidence: Callable[[int], Evidence],
    place: Callable[[int, str, AttributionSource, bool], None],
    served: Callable[[int], list[int]],
) -> bool:
    """Attribute each connected group of unknown nodes to the LCA of everything around it.

    The groups are the connected components of the pending nodes where one waits for the other, either way round,
    so a group does not depend on which of its nodes is met first. Every node's evidence is read before any group
    is placed; a pending neighbour of a group's node is in that group, so placing one group changes nothing around
    another. Each node's evidence is read once.
    """
    found = {i: evidence(i) for i in pending}
    links: dict[int, list[int]] = {i: [] for i in pending}
    for i, ev in found.items():
        for j in ev.unknown:
            if j in links:
                links[i].append(j)
                links[j].append(i)
    seen: set[int] = set()
    progress = False
    for start in pending:
        if start in seen:
            continue
        seen.add(start)
        group = [start]
        for i in group:  # grows while it is read: breadth first
            for j in links[i]:
                if j not in seen:
                    seen.add(j)
                    group.append(j)
        known = [path for i in group for path in found[i].known]
        if not known:
            continue
        path = _lca(known)
        witnessed = _witnessed(group, found, served)
        for i in sorted(group):  # each node needs its own witness for the root
            place(i, path, AttributionSource.CONTEXT, i in witnessed)
        progress = True
    return progress


def _witnessed(group: list[int], found: Mapping[int, Evidence], served: Callable[[int], list[int]]) -> set[int]:
    """The group's nodes witnessed for the root: by their own evidence, or serving one that is (constants for a
    consumer, a body's nodes for the node owning it), transitively within the group."""
    members = set(group)
    served_by: dict[int, list[int]] = {}
    for i in group:
        for j in served(i):
            if j in members:
                served_by.setdefault(j, []).append(i)
    witnessed = {i for i in group if found[i].root_witness}
    stack = list(witnessed)
    while stack:
        for i in served_by.get(stack.pop(), []):
            if i not in witnessed:
                witnessed.add(i)
                stack.append(i)
    return witnessed


def _lca(paths: list[str]) -> str:
    found = ModuleTree.lowest_common_ancestor(paths)
    assert found is not None, "_lca needs at least one path"
    return found
