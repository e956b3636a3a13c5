"""Re-attribution of an optimized or quantized graph from the provenance of the graph it came from.

Definitions (``G0``: the graph as last annotated, stored as provenance; ``G1``: the graph now):

* **Kept node**: a ``G1`` node with the name and op type of a ``G0`` node (where several ``G0``
  nodes share the name, or it is empty, the one that also has the same output tensors; several
  with the same outputs, inputs and placement, as in the two branches of a merged decoder, are
  one answer). It keeps
  that node's module, source and source modules. ONNX Runtime keeps the names of the nodes it does
  not fuse; the same graph annotated again is kept whole, so annotating twice changes nothing.
* **Counterpart** of a ``G1`` tensor: the ``G0`` tensor of the same name, or, for a tensor a kept
  node reads or writes under a new name, the ``G0`` tensor in the same input or output slot.
* **Region**: a connected group of the other (new) ``G1`` nodes, joined by tensors without a
  counterpart. A fused node (``Attention``, ``SkipLayerNormalization``) is usually a region of its
  own: it writes the output tensor of the subgraph it replaced. A quantized ``MatMul``
  (``DynamicQuantizeLinear`` -> ``MatMulInteger`` -> ``Cast`` -> ``Mul``) or a chain of fusions
  that renamed the tensors between them is one region of several nodes.
* **Replaced nodes** of a region: the ``G0`` nodes that are gone from ``G1`` and lie on a path, in
  ``G0``, from the counterparts of the region's inputs (activations or parameters) to the
  counterparts of its outputs, passing only through tensors that have no counterpart in ``G1``
  (a tensor that is still there is a boundary, not something the region replaced). A node that two
  regions both reach (one attention-mask computation feeding every layer's fused ``Attention``) is
  shared: it counts for neither, unless a region replaced nothing else.
* A region's node is attributed to the **lowest common ancestor** of the modules of the replaced
  nodes (for a replaced node that was itself a fusion, of the modules it stood for), and records
  that set of modules as its ``sources``: source ``fusion``. Inside a region of several nodes, a
  per-architecture rule (``fused_nodes`` in ``configs/*.json``: source ``rule``) or the scope in
  the node's own name (a quantizer names ``.../query/MatMul_quant`` after the node it replaced:
  source ``name``) may narrow a node to a module inside that ancestor; nothing can move it
  outside.

A new node whose region replaced nothing (a ``Cast`` or ``Gather`` an optimizer inserted) is left to
the generic evidence of :class:`~optimum_hierarchy.passes.attribute_nodes.AttributeNodesPass`: its
name, then the modules around it. So is a region whose analysis would exceed a work budget linear in
the size of the graphs (see ``_WORK_LIMIT``; only crafted graphs come near it).
"""

from __future__ import annotations

__all__ = ["Placement", "kept_nodes", "reattribute"]

import collections
import dataclasses
from collections.abc import Callable, Mapping, Sequence

from optimum_hierarchy.modules import common_ancestor, within
from optimum_hierarchy.provenance import NodeTable, Provenance, ProvenanceNode
from optimum_hierarchy.schema import AttributionSource


@dataclasses.dataclass(frozen=True)
class Placement:
    module: str
    source: str
    """An :class:`AttributionSource` value (kept nodes keep the one they had)."""
    sources: tuple[str, ...] = ()


def reattribute(
    table: NodeTable,
    provenance: Provenance,
    narrow: Callable[[int], tuple[str, AttributionSource] | None],
    kept: Mapping[int, int] | None = None,
) -> dict[int, Placement]:
    """Place the nodes of ``G1`` (``table``) from the provenance of ``G0``.

    ``narrow(i)`` returns the module a rule or the node's name gives for node ``i`` (checked here to
    lie inside the region's answer), or ``None``. Nodes missing from the result are left to the
    generic evidence. ``kept``: :func:`kept_nodes` of the same graphs, where the caller has it.
    """
    g0 = provenance.nodes
    kept = kept_nodes(table, provenance) if kept is None else kept
    placements: dict[int, Placement] = {}
    for i, k in kept.items():
        old = g0[k]
        if old.module is not None:
            placements[i] = Placement(old.module, old.source, old.sources)
    counterpart = _counterparts(table, g0, kept)
    regions, consumers = _regions(table, kept, counterpart)
    placements.update(
        _place_regions(
            table, provenance, kept=kept, counterpart=counterpart, regions=regions, consumers=consumers, narrow=narrow
        )
    )
    return placements


def kept_nodes(table: NodeTable, provenance: Provenance) -> dict[int, int]:
    """Each kept node of ``G1`` (those ``G0`` left unattributed included) -> its ``G0`` node."""
    g0 = provenance.nodes
    count = collections.Counter(n.name for n in g0 if n.name)
    g0_by_name = {n.name: k for k, n in enumerate(g0) if n.name and count[n.name] == 1}
    # Nodes whose name is empty or not unique (an optimizer's unnamed Cast) are told apart by their outputs.
    # Several with one signature are told apart only if they differ: the two branches of a merged decoder
    # copy the nodes of two exports of one model, same names, tensors and modules; any of them is the answer.
    same: dict[tuple[str, str, tuple[str, ...]], list[int]] = collections.defaultdict(list)
    for k, n in enumerate(g0):
        if n.name not in g0_by_name:
            same[(n.name, n.op_type, n.outputs)].append(k)
    g0_by_signature = {
        signature: ks[0]
        for signature, ks in same.items()
        if len({(g0[k].module, g0[k].source, g0[k].sources, g0[k].inputs) for k in ks}) == 1
    }
    kept: dict[int, int] = {}
    for i, name in enumerate(table.names):
        match = g0_by_name.get(name)
        if match is None:
            match = g0_by_signature.get((name, table.op_types[i], tuple(table.outputs[i])))
        if match is not None and g0[match].op_type == table.op_types[i]:
            kept[i] = match
    return kept


def _counterparts(table: NodeTable, g0: Sequence[ProvenanceNode], kept: Mapping[int, int]) -> dict[str, str]:
    """Each ``G1`` tensor with a counterpart -> that ``G0`` tensor."""
    g0_tensors: set[str] = set()
    for n in g0:
        g0_tensors.update(t for t in (*n.outputs, *n.inputs) if t)
    counterpart: dict[str, str] = {}
    for i in range(len(table.names)):
        for t in (*table.inputs[i], *table.outputs[i]):
            if t and t in g0_tensors:
                counterpart[t] = t
    for i, k in kept.items():
        pairs = list(zip(table.outputs[i], g0[k].outputs, strict=False))
        if len(table.inputs[i]) == len(g0[k].inputs):
            pairs += zip(table.inputs[i], g0[k].inputs, strict=True)
        for new_name, old_name in pairs:
            if new_name and old_name and new_name not in counterpart:
                counterpart[new_name] = old_name
    return counterpart


def _regions(
    table: NodeTable, kept: Mapping[int, int], counterpart: Mapping[str, str]
) -> tuple[list[list[int]], dict[str, list[int]]]:
    """The regions (connected new nodes, joined by tensors without a counterpart), and each tensor's readers."""
    inputs, outputs, size = table.inputs, table.outputs, len(table.names)
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = collections.defaultdict(list)
    for i in range(size):
        for t in outputs[i]:
            if t:
                producer.setdefault(t, i)
        for t in inputs[i]:
            if t:
                consumers[t].append(i)
    region_of: dict[int, int] = {}
    regions: list[list[int]] = []
    linked_seen: set[str] = set()  # each linking tensor is followed once: a tensor read by many nodes stays linear
    for start in range(size):
        if start in kept or start in region_of:
            continue
        region_of[start] = len(regions)
        members, stack = [], [start]
        while stack:
            i = stack.pop()
            members.append(i)
            for t in (*inputs[i], *outputs[i]):
                if not t or t in counterpart or t in linked_seen:
                    continue
                linked_seen.add(t)
                for j in (producer.get(t), *consumers.get(t, ())):
                    if j is not None and j not in kept and j not in region_of:
                        region_of[j] = len(regions)
                        stack.append(j)
        regions.append(sorted(members))
    return regions, consumers


def _place_regions(
    table: NodeTable,
    provenance: Provenance,
    *,
    kept: Mapping[int, int],
    counterpart: Mapping[str, str],
    regions: list[list[int]],
    consumers: Mapping[str, list[int]],
    narrow: Callable[[int], tuple[str, AttributionSource] | None],
) -> dict[int, Placement]:
    """The placement of each region's nodes: the LCA of what its outputs replaced, narrowed where a rule says."""
    g0 = provenance.nodes
    # Everything below depends on a node only through its region and what it reaches, so it is
    # computed once per distinct (region, reached outputs). The work is bounded (``_WORK_LIMIT``).
    budget = _Budget(_WORK_LIMIT + _WORK_PER_NODE * (len(g0) + len(table.names)))
    cones = _Cones(g0, set(kept.values()), set(counterpart.values()), budget)
    reaches: dict[int, frozenset[str]] = {}
    replaced: dict[tuple[int, frozenset[str]], set[int]] = {}
    placed_regions: list[int] = []
    for r, members in enumerate(regions):
        try:
            region_reaches = _reached_outputs(members, table.outputs, consumers, counterpart, budget)
            distinct = set(region_reaches.values())
            b_in = {counterpart[t] for i in members for t in table.inputs[i] if t in counterpart}
            region_cone: set[int] = set()
            for targets in distinct:
                region_cone |= cones.of(targets)
            flowed = _flowed(region_cone, b_in, provenance, budget)
            for targets in distinct:
                replaced[(r, targets)] = cones.of(targets) & flowed
        except _OverBudgetError:
            continue  # left to the generic evidence, like a region that replaced nothing
        reaches.update(region_reaches)
        placed_regions.append(r)

    # A node claimed by two created nodes that reach disjoint outputs (one mask computation feeding
    # two layers' Attention) is shared and counts for neither of them.
    claimed_by: dict[int, set[frozenset[str]]] = collections.defaultdict(set)
    for (_, targets), found in replaced.items():
        for k in found:
            claimed_by[k].add(targets)
    placements: dict[int, Placement] = {}
    for r in placed_regions:
        members = regions[r]
        distinct = {reaches[i] for i in members}
        try:
            budget.spend(sum(len(claimed_by[k]) for targets in distinct for k in replaced[(r, targets)]))
        except _OverBudgetError:
            continue
        answers = {targets: _answer(g0, replaced[(r, targets)], targets, claimed_by) for targets in distinct}
        for i in members:
            answer = answers[reaches[i]]
            if answer is None:
                continue
            base, all_sources = answer
            narrowed = narrow(i) if len(members) > 1 else None
            if narrowed is not None and narrowed[0] != base and within(narrowed[0], base):
                path, source = narrowed
                inside = tuple(m for m in all_sources if within(m, path)) or (path,)
                placements[i] = Placement(path, source.value, inside)
            else:
                placements[i] = Placement(base, AttributionSource.FUSION.value, all_sources)
    return placements


def _answer(
    g0: Sequence[ProvenanceNode],
    found: set[int],
    targets: frozenset[str],
    claimed_by: Mapping[int, set[frozenset[str]]],
) -> tuple[str, tuple[str, ...]] | None:
    """The LCA of the modules of the replaced nodes that are this output set's own, and those modules."""
    own = {k for k in found if not any(other.isdisjoint(targets) for other in claimed_by[k])} or found
    modules: set[str] = set()
    for k in own:
        old = g0[k]
        if old.sources:
            modules.update(old.sources)
        elif old.module is not None:
            modules.add(old.module)
    base = common_ancestor(modules)
    return None if base is None else (base, tuple(sorted(modules)))


class _Cones:
    """The ``G0`` nodes behind a set of output counterparts, back to surviving tensors; each set computed once."""

    def __init__(self, g0: Sequence[ProvenanceNode], kept_g0: set[int], surviving: set[str], budget: _Budget) -> None:
        self.g0, self.kept_g0, self.surviving, self.budget = g0, kept_g0, surviving, budget
        self.producer: dict[str, int] = {}
        for k, n in enumerate(g0):
            for t in n.outputs:
                if t:
                    self.producer.setdefault(t, k)
        self._cones: dict[frozenset[str], set[int]] = {}

    def of(self, targets: frozenset[str]) -> set[int]:
        if targets not in self._cones:
            cone: set[int] = set()
            stack = list(targets)
            seen = set(stack)
            while stack:
                k = self.producer.get(stack.pop(), -1)
                if k < 0 or k in self.kept_g0 or k in cone:
                    continue
                cone.add(k)
                self.budget.spend(1 + len(self.g0[k].inputs))
                for u in self.g0[k].inputs:
                    if u and u not in self.surviving and u not in seen:
                        seen.add(u)
                        stack.append(u)
            self._cones[targets] = cone
        return self._cones[targets]


_WORK_LIMIT = 1_000_000
_WORK_PER_NODE = 100
"""Steps (set elements added or compared) re-attribution may take beyond reading the graphs: linear in
their size. Real optimized or quantized graphs take a few per node (1,600 for the tiny BERT after O2);
only a crafted graph (a long chain of new nodes that each also write a tensor of the old graph) comes
near, and the regions left when the budget is spent are placed by the generic evidence instead, as if
they had replaced nothing: coarser at worst, never a hang."""


class _OverBudgetError(Exception):
    """The work budget of one re-attribution is spent."""


class _Budget:
    def __init__(self, steps: int) -> None:
        self.left = steps

    def spend(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise _OverBudgetError


def _reached_outputs(
    members: list[int],
    outputs: Sequence[Sequence[str]],
    consumers: Mapping[str, list[int]],
    counterpart: Mapping[str, str],
    budget: _Budget,
) -> dict[int, frozenset[str]]:
    """For each region member: the counterparts of the region outputs it reaches through the region.

    A member reaches what it writes to a tensor with a counterpart, and what the members reading its
    other outputs reach: propagated backwards to a fixed point (each set only grows, cycles included).
    """
    member_set = set(members)
    reached: dict[int, set[str]] = {i: set() for i in members}
    readers_of: dict[int, list[int]] = collections.defaultdict(list)  # c -> the members whose outputs c reads
    for j in members:
        for t in outputs[j]:
            if not t:
                continue
            if t in counterpart:
                reached[j].add(counterpart[t])
                continue
            for c in consumers.get(t, ()):
                if c in member_set and c != j:
                    readers_of[c].append(j)
    budget.spend(len(members))
    work = [i for i in members if reached[i]]
    while work:
        c = work.pop()
        for j in readers_of.get(c, ()):
            budget.spend(1)
            if not reached[c] <= reached[j]:
                budget.spend(len(reached[c]))
                reached[j] |= reached[c]
                work.append(j)
    interned: dict[frozenset[str], frozenset[str]] = {}
    return {i: interned.setdefault(frozenset(s), frozenset(s)) for i, s in reached.items()}


def _flowed(cone: set[int], start: set[str], provenance: Provenance, budget: _Budget) -> set[int]:
    """The nodes of ``cone`` (in ``G0``) that the tensors ``start`` reach, forward through ``cone``."""
    g0 = provenance.nodes
    budget.spend(len(cone))
    readers: dict[str, list[int]] = collections.defaultdict(list)
    for k in cone:
        for u in g0[k].inputs:
            if u:
                readers[u].append(k)
    flowed: set[int] = set()
    reached = set(start)
    stack = list(start)
    while stack:
        for k in readers.get(stack.pop(), ()):
            if k in flowed:
                continue
            flowed.add(k)
            for t in g0[k].outputs:
                if t and t not in reached:
                    reached.add(t)
                    stack.append(t)
    return flowed
