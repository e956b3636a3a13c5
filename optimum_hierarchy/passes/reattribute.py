"""Re-attribution of an optimized or quantized graph from the provenance of the graph it came from.

Definitions (``G0``: the graph as last annotated, stored as provenance; ``G1``: the graph now):

* **Kept node**: a ``G1`` node with the name and op type of a ``G0`` node. It keeps that node's
  module, source and source modules. ONNX Runtime keeps the names of the nodes it does not fuse.
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
name, then the modules around it.
"""

from __future__ import annotations

__all__ = ["Placement", "reattribute"]

import collections
import dataclasses
from collections.abc import Callable

from optimum_hierarchy.provenance import NodeTable, Provenance
from optimum_hierarchy.schema import AttributionSource, ModuleTree


@dataclasses.dataclass(frozen=True)
class Placement:
    module: str
    source: str
    """An :class:`AttributionSource` value (kept nodes keep the one they had)."""
    sources: tuple[str, ...] = ()


def _within(path: str, ancestor: str) -> bool:
    return not ancestor or path == ancestor or path.startswith(ancestor + ".")


def reattribute(
    table: NodeTable, provenance: Provenance, narrow: Callable[[int], tuple[str, AttributionSource] | None]
) -> dict[int, Placement]:
    """Place the nodes of ``G1`` (``table``) from the provenance of ``G0``.

    ``narrow(i)`` returns the module a rule or the node's name gives for node ``i`` (checked here to
    lie inside the region's answer), or ``None``. Nodes missing from the result are left to the
    generic evidence.
    """
    g0 = provenance.nodes
    names, op_types, inputs, outputs = table.names, table.op_types, table.inputs, table.outputs
    count = collections.Counter(n.name for n in g0 if n.name)
    g0_by_name = {n.name: k for k, n in enumerate(g0) if n.name and count[n.name] == 1}
    g0_producer: dict[str, int] = {}
    g0_tensors: set[str] = set()
    for k, n in enumerate(g0):
        for t in n.outputs:
            if t:
                g0_producer.setdefault(t, k)
                g0_tensors.add(t)
        g0_tensors.update(t for t in n.inputs if t)

    size = len(names)
    placements: dict[int, Placement] = {}
    kept: dict[int, int] = {}
    for i in range(size):
        match = g0_by_name.get(names[i])
        if match is not None and g0[match].op_type == op_types[i]:
            kept[i] = match
            old = g0[match]
            if old.module is not None:
                placements[i] = Placement(old.module, old.source, old.sources)

    counterpart: dict[str, str] = {}
    for i in range(size):
        for t in (*inputs[i], *outputs[i]):
            if t and t in g0_tensors:
                counterpart[t] = t
    for i, k in kept.items():
        pairs = list(zip(outputs[i], g0[k].outputs, strict=False))
        if len(inputs[i]) == len(g0[k].inputs):
            pairs += zip(inputs[i], g0[k].inputs, strict=True)
        for new_name, old_name in pairs:
            if new_name and old_name and new_name not in counterpart:
                counterpart[new_name] = old_name
    surviving = set(counterpart.values())
    kept_g0 = set(kept.values())

    # Regions: connected new nodes, joined by tensors without a counterpart.
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
    for start in range(size):
        if start in kept or start in region_of:
            continue
        region_of[start] = len(regions)
        members, stack = [], [start]
        while stack:
            i = stack.pop()
            members.append(i)
            linked = [t for t in (*inputs[i], *outputs[i]) if t and t not in counterpart]
            for t in linked:
                for j in (producer.get(t), *consumers.get(t, ())):
                    if j is not None and j not in kept and j not in region_of:
                        region_of[j] = len(regions)
                        stack.append(j)
        regions.append(sorted(members))

    # Per node: the region's outputs it reaches; the nodes it replaced are the cone behind them.
    cones: dict[frozenset[str], set[int]] = {}

    def cone_of(targets: frozenset[str]) -> set[int]:
        if targets not in cones:
            cone: set[int] = set()
            stack = list(targets)
            seen = set(stack)
            while stack:
                k = g0_producer.get(stack.pop(), -1)
                if k < 0 or k in kept_g0 or k in cone:
                    continue
                cone.add(k)
                for u in g0[k].inputs:
                    if u and u not in surviving and u not in seen:
                        seen.add(u)
                        stack.append(u)
            cones[targets] = cone
        return cones[targets]

    reaches: dict[int, frozenset[str]] = {}
    replaced: dict[int, set[int]] = {}
    for members in regions:
        member_set = set(members)
        b_in = {counterpart[t] for i in members for t in inputs[i] if t in counterpart}
        for i in members:
            targets: set[str] = set()
            stack, seen_nodes = [i], {i}
            while stack:
                j = stack.pop()
                for t in outputs[j]:
                    if not t:
                        continue
                    if t in counterpart:
                        targets.add(counterpart[t])
                        continue
                    for c in consumers.get(t, ()):
                        if c in member_set and c not in seen_nodes:
                            seen_nodes.add(c)
                            stack.append(c)
            reaches[i] = frozenset(targets)
        # The region's inputs flow forward through the cones of its members.
        region_cone: set[int] = set()
        for i in members:
            region_cone |= cone_of(reaches[i])
        reached = set(b_in)
        flowed: set[int] = set()
        changed = True
        while changed:
            changed = False
            for k in sorted(region_cone - flowed):
                if any(u in reached for u in g0[k].inputs):
                    flowed.add(k)
                    reached.update(g0[k].outputs)
                    changed = True
        for i in members:
            replaced[i] = cone_of(reaches[i]) & flowed

    # A node claimed by two created nodes that reach disjoint outputs (one mask computation feeding
    # two layers' Attention) is shared and counts for neither of them.
    claimants: dict[int, list[int]] = collections.defaultdict(list)
    for i, found in replaced.items():
        for k in found:
            claimants[k].append(i)
    for members in regions:
        modules_of: dict[int, set[str]] = {}
        for i in members:
            found = replaced[i]
            own = {k for k in found if all(reaches[j] & reaches[i] for j in claimants[k])} or found
            modules: set[str] = set()
            for k in own:
                old = g0[k]
                if old.sources:
                    modules.update(old.sources)
                elif old.module is not None:
                    modules.add(old.module)
            modules_of[i] = modules
        for i in members:
            modules = modules_of[i]
            if not modules:
                continue
            base = ModuleTree.lowest_common_ancestor(modules)
            assert base is not None
            all_sources = tuple(sorted(modules))
            narrowed = narrow(i) if len(members) > 1 else None
            if narrowed is not None and narrowed[0] != base and _within(narrowed[0], base):
                path, source = narrowed
                inside = tuple(m for m in all_sources if _within(m, path)) or (path,)
                placements[i] = Placement(path, source.value, inside)
            else:
                placements[i] = Placement(base, AttributionSource.FUSION.value, all_sources)
    return placements
