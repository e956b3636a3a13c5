"""The re-attribution algorithm as first written: a direct transcription of its definition, quadratic
(cubic on long regions), kept as the oracle the linear rewrite in ``optimum_hierarchy.passes.reattribute``
is checked against (``test_fuzz.py``).

Copied from commit b2ed364 with one change, marked: an omitted optional input (``""``) is no tensor, so a
node does not "flow" because an earlier node had an omitted output.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from optimum_hierarchy.passes.reattribute import Placement
from optimum_hierarchy.provenance import NodeTable, Provenance
from optimum_hierarchy.schema import AttributionSource, ModuleTree


def _within(path: str, ancestor: str) -> bool:
    return not ancestor or path == ancestor or path.startswith(ancestor + ".")


def reference_reattribute(
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
    # Nodes whose name is empty or not unique (an optimizer's unnamed Cast) are told apart by their outputs.
    signatures = collections.Counter((n.name, n.op_type, n.outputs) for n in g0 if n.name not in g0_by_name)
    g0_by_signature = {
        (n.name, n.op_type, n.outputs): k
        for k, n in enumerate(g0)
        if n.name not in g0_by_name and signatures[(n.name, n.op_type, n.outputs)] == 1
    }
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
        if match is None:
            match = g0_by_signature.get((names[i], op_types[i], tuple(outputs[i])))
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
                if any(u and u in reached for u in g0[k].inputs):  # the one change: "" is no tensor
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
