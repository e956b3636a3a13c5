"""Attribute every node of an exported ONNX model to the PyTorch module it came from."""

from __future__ import annotations

__all__ = ["SUMMARY_META_KEY", "AttributeNodesPass"]

import collections
import logging
from collections.abc import Sequence
from typing import Any

import onnx_ir as ir

from optimum_hierarchy import schema
from optimum_hierarchy.errors import AttributionError
from optimum_hierarchy.passes.reattribute import Placement, reattribute
from optimum_hierarchy.provenance import (
    NodeTable,
    Provenance,
    encode_module_outputs,
    encode_provenance,
    module_outputs,
    snapshot,
)
from optimum_hierarchy.rules import FusedNodeRule
from optimum_hierarchy.schema import (
    AttributionSource,
    AttributionSummary,
    ExportInfo,
    HierarchyMetadata,
    ModuleTree,
    UnattributedNode,
)
from optimum_hierarchy.scope import ScopeResolver, producer_name_of_output, scope_segments
from optimum_hierarchy.walk import Site, iter_ir_sites

logger = logging.getLogger(__name__)

SUMMARY_META_KEY = "optimum_hierarchy.summary"
"""Key in ``ir.Model.meta`` (scratch state, never saved) under which the pass leaves its summary."""

_NO_EVIDENCE = "no scope in its name, no parameter among its inputs or outputs, and no attributed neighbour"


class AttributeNodesPass(ir.passes.InPlacePass):
    """Write the module path of every node (subgraphs included) and the module tree into the model.

    With ``provenance`` (the graph as it was last annotated, read from the model's metadata), the
    nodes are first placed from it: kept nodes keep their module, nodes an optimizer or quantizer
    created get the lowest common ancestor of the modules of the nodes they replaced (see
    :mod:`optimum_hierarchy.passes.reattribute`). ``fused_rules`` are the per-architecture rules
    for created nodes. ``after_the_fact=True`` is for a file nobody annotated at export: evidence
    from names is labelled ``name`` rather than ``scope``.

    The remaining nodes are placed by this evidence, in order of trust:

    1. ``scope``: the TorchScript scope in the node name, resolved against the module tree.
    2. ``parameter``: the parameters or buffers the node outputs (an ``Identity`` aliasing a
       deduplicated initializer is named after the parameter it stands for).
    3. ``context``: the lowest common ancestor (LCA) of the modules around the node: its
       consumers, the parameters it reads, and for ``If`` / ``Loop`` / ``Scan`` the nodes of its
       bodies. A node that only shapes constants or weights (``Constant``, a ``Transpose`` of a
       weight) exists to serve its consumers, so that is all; a node that computes on data also
       counts the producers of its inputs (a graph input comes from the exported module). The
       result contains everything the node touches: it may be coarser than the true module, not
       finer. The source is ``parameter`` when the parameters alone give that answer. Evidence is
       used once every neighbour is attributed; where unattributed nodes only neighbour each other
       (chains of fused nodes after optimization), each connected group gets the LCA of
       everything around it.
    4. ``subgraph``: a node inside an ``If`` / ``Loop`` / ``Scan`` body with no other evidence
       inherits the module of the node that owns the body.

    Except on a fresh export, between 2 and 3 come the ``fused_rules`` (source ``rule``) and the
    scopes in the names of the node's output tensors, with the owners of the parameters it reads
    (source ``name``): ONNX Runtime's fused nodes keep the output tensor names of what they replaced.

    After attribution the pass stores the new graph's provenance, so that a later optimization can
    be re-attributed in turn; on a fresh export it also stores each module's output tensors
    (:func:`~optimum_hierarchy.provenance.module_outputs`), which later runs keep as they are.
    With ``scope_names=True``, attributed nodes whose names carry no scope (``Attention_0``,
    ``SkipLayerNorm_AddBias_0``) are renamed ``/encoder/layer/0/attention/self/Attention_0``, so
    that tools grouping nodes by ``/`` in their names (Netron, Model Explorer's fallback) group them
    too; the renamed graph is what the stored provenance describes.

    A node with none of these is left unattributed, with a reason; it is counted, logged, and with
    ``strict=True`` the pass raises :class:`AttributionError` instead. The pass recomputes
    everything from the graph on each run, so running it twice changes nothing the second time.
    """

    def __init__(
        self,
        tree: ModuleTree,
        export: ExportInfo | None = None,
        *,
        strict: bool = False,
        provenance: Provenance | None = None,
        fused_rules: Sequence[FusedNodeRule] = (),
        after_the_fact: bool = False,
        scope_names: bool = False,
    ) -> None:
        super().__init__()
        self.tree = tree
        self.export = export if export is not None else ExportInfo()
        self.strict = strict
        self.provenance = provenance
        self.fused_rules = tuple(fused_rules)
        self.after_the_fact = after_the_fact
        self.scope_names = scope_names
        if self.export.root not in tree:
            raise ValueError(f"export root {self.export.root!r} is not a module of the tree")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        sites = list(iter_ir_sites(model.graph))
        attributor = _Attributor(self.tree, self.export.root, sites, self.fused_rules)
        fresh = self.provenance is None and not self.after_the_fact
        if self.provenance is not None:
            attributor.seed(self.provenance)
        modules, sources, reasons = attributor.run(fresh=fresh)
        fused = attributor.fused

        unattributed = tuple(
            UnattributedNode(node=s.node.name or "", op_type=s.node.op_type, graph=s.graph_name, reason=reasons[i])
            for i, s in enumerate(sites)
            if i not in modules
        )
        summary = AttributionSummary(
            nodes=len(sites),
            by_source=dict(collections.Counter(sources.values())),
            unattributed=unattributed,
        )
        if unattributed:
            shown = ", ".join(f"{u.node or '<unnamed>'} ({u.op_type})" for u in unattributed[:5])
            message = f"{len(unattributed)} of {len(sites)} nodes could not be attributed to a module: {shown}"
            if self.strict:
                raise AttributionError(message + f"; reason: {_NO_EVIDENCE}.", unattributed)
            logger.warning("%s; they carry %r = %r and a reason.", message, schema.NODE_SOURCE_KEY, "unattributed")

        modified = self.scope_names and _rename_to_scopes(sites, attributor.table, modules)
        for i, site in enumerate(sites):
            if i in modules:
                wanted = {
                    schema.NODE_MODULE_KEY: modules[i],
                    schema.NODE_SOURCE_KEY: sources[i],
                    schema.NAMESPACE_KEY: schema.namespace_of(modules[i]),
                }
                stale: tuple[str, ...] = (schema.NODE_REASON_KEY, schema.NODE_SOURCES_KEY)
                if i in fused and fused[i] != (modules[i],):
                    wanted[schema.NODE_SOURCES_KEY] = schema.dumps_json(list(fused[i]))
                    stale = (schema.NODE_REASON_KEY,)
            else:
                wanted = {
                    schema.NODE_SOURCE_KEY: AttributionSource.UNATTRIBUTED.value,
                    schema.NODE_REASON_KEY: reasons[i],
                }
                stale = (schema.NODE_MODULE_KEY, schema.NAMESPACE_KEY, schema.NODE_SOURCES_KEY)
            props = site.node.metadata_props
            for key, value in wanted.items():
                if props.get(key) != value:
                    props[key] = value
                    modified = True
            for key in stale:
                if key in props:
                    del props[key]
                    modified = True

        meta = HierarchyMetadata(tree=self.tree, export=self.export, summary=summary)
        encoded = schema.encode_model_metadata(meta)
        encoded[schema.PROVENANCE_KEY] = encode_provenance(snapshot(attributor.table, modules, sources, fused))
        if fresh:
            # The graph as exported: its module outputs are recorded once and kept through optimization.
            main = [s.parent is None for s in sites]
            outputs = module_outputs(attributor.table, modules, main, [v.name or "" for v in model.graph.outputs])
            encoded[schema.MODULE_OUTPUTS_KEY] = encode_module_outputs(outputs)
        for key, value in encoded.items():
            if model.metadata_props.get(key) != value:
                model.metadata_props[key] = value
                modified = True
        model.meta[SUMMARY_META_KEY] = summary
        return ir.passes.PassResult(model, modified=modified)


class _Attributor:
    """The evidence rules of :class:`AttributeNodesPass` over one model's nodes."""

    def __init__(
        self, tree: ModuleTree, root: str, sites: list[Site], fused_rules: Sequence[FusedNodeRule] = ()
    ) -> None:
        self.tree = tree
        self.root = root
        self.sites = sites
        self.fused_rules = fused_rules
        self.resolver = ScopeResolver(tree, root)
        self.index = {id(s.node): i for i, s in enumerate(sites)}
        self.table = NodeTable(
            names=[s.node.name or "" for s in sites],
            op_types=[s.node.op_type for s in sites],
            inputs=[[(v.name or "") if v is not None else "" for v in s.node.inputs] for s in sites],
            outputs=[[v.name or "" for v in s.node.outputs] for s in sites],
        )
        self.modules: dict[int, str] = {}
        self.sources: dict[int, str] = {}
        self.fused: dict[int, tuple[str, ...]] = {}
        self.children: dict[int, list[int]] = collections.defaultdict(list)
        for i, site in enumerate(sites):
            if site.parent is not None and id(site.parent) in self.index:
                self.children[self.index[id(site.parent)]].append(i)

    def owner(self, value: ir.Value | None) -> str | None:
        if value is None or not value.name:
            return None
        return self.owner_of_name(value.name)

    def owner_of_name(self, name: str) -> str | None:
        full = f"{self.root}.{name}" if self.root else name
        return self.tree.owner_of_tensor(full)

    def seed(self, provenance: Provenance) -> None:
        """Place what the provenance of the previously annotated graph proves."""
        placements = reattribute(self.table, provenance, self.narrow)
        for i, placement in placements.items():
            if self._valid(placement):
                self._assign(i, placement.module, placement.source)
                if placement.sources:
                    self.fused[i] = placement.sources

    def _valid(self, placement: Placement) -> bool:
        return placement.module in self.tree and all(m in self.tree for m in placement.sources)

    def from_rules(self, i: int) -> str | None:
        for rule in self.fused_rules:
            if self.table.op_types[i] in rule.op_types:
                table = self.table
                path = rule.evaluate(
                    table.inputs[i], table.outputs[i], table.names[i], self.owner_of_name, self.resolver.resolve
                )
                if path is not None and path in self.tree:
                    return path
        return None

    def from_names(self, i: int) -> str | None:
        """LCA of the scopes in the output tensor names and the owners of the parameters read."""
        scopes = []
        for tensor in self.table.outputs[i]:
            node_name = producer_name_of_output(tensor)
            path = self.resolver.resolve(node_name) if node_name is not None else None
            if path is not None:
                scopes.append(path)
        if not scopes:
            return None
        owners = [o for o in map(self.owner_of_name, self.table.inputs[i]) if o is not None]
        return _lca(scopes + owners)

    def narrow(self, i: int) -> tuple[str, AttributionSource] | None:
        """For a node inside a group of created nodes: a rule's answer, else its own name's scope."""
        path = self.from_rules(i)
        if path is not None:
            return path, AttributionSource.RULE
        path = self.resolver.resolve(self.table.names[i])
        if path is not None:
            return path, AttributionSource.NAME
        return None

    def consumers(self, i: int) -> list[int]:
        out = []
        for value in self.sites[i].node.outputs:
            for use in value.uses():
                j = self.index.get(id(use[0]))
                if j is not None:
                    out.append(j)
        return out

    def run(self, *, fresh: bool = True) -> tuple[dict[int, str], dict[int, str], dict[int, str]]:
        """``fresh``: the graph is what the TorchScript exporter wrote, scopes are trusted as such."""
        resolver = self.resolver
        main_graph = self.sites[0].node.graph if self.sites else None
        # Which nodes compute on data (a graph input or another computing node's output) rather
        # than only shaping constants and weights for their consumers.
        computes: dict[int, bool] = {}
        for i, site in enumerate(self.sites):
            node = site.node
            flag = False
            for value in node.inputs:
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

        # 1. scope; 2. outputs that are parameters (an Identity standing for a deduplicated one).
        scope_source = AttributionSource.SCOPE if fresh else AttributionSource.NAME
        for i, site in enumerate(self.sites):
            if i in self.modules:
                continue
            path = resolver.resolve(site.node.name or "")
            if path is not None:
                self._assign(i, path, scope_source)
                continue
            aliases = [o for o in map(self.owner, site.node.outputs) if o is not None]
            if aliases:
                self._assign(i, _lca(aliases), AttributionSource.PARAMETER)
                continue
            if fresh:
                continue
            # Created by an optimizer: a per-architecture rule, else the names of its outputs.
            path = self.from_rules(i)
            if path is not None:
                self._assign(i, path, AttributionSource.RULE)
                continue
            path = self.from_names(i)
            if path is not None:
                self._assign(i, path, AttributionSource.NAME)

        # 3. context (see the class docstring). First where every neighbour is known; if that
        # stalls, over whole groups of connected unknown nodes, which is coarser but never finer.
        def evidence(i: int) -> tuple[list[str], list[int], str | None]:
            """(known module paths around node i, unattributed neighbours, LCA of its parameters)."""
            node = self.sites[i].node
            params = [o for o in map(self.owner, node.inputs) if o is not None]
            known = list(params)
            unknown: list[int] = []
            neighbours = self.consumers(i) + self.children.get(i, [])
            if computes[i]:
                for value in node.inputs:
                    if value is None:
                        continue
                    producer = value.producer()
                    if producer is None:
                        if value.is_graph_input() and value.graph is main_graph:
                            known.append(self.root)
                    elif id(producer) in self.index:
                        neighbours.append(self.index[id(producer)])
            for j in neighbours:
                if j in self.modules:
                    known.append(self.modules[j])
                else:
                    unknown.append(j)
            return known, unknown, (_lca(params) if params else None)

        pending = [i for i in range(len(self.sites)) if i not in self.modules]
        while pending:
            still = []
            for i in reversed(pending):  # backwards: chains of constants settle in one sweep
                known, unknown, from_params = evidence(i)
                if known and not unknown:
                    path = _lca(known)
                    # "parameter" when the parameters it reads alone give the answer.
                    source = AttributionSource.PARAMETER if path == from_params else AttributionSource.CONTEXT
                    self._assign(i, path, source)
                else:
                    still.append(i)
            still.reverse()
            if len(still) < len(pending):
                pending = still
                continue
            if self._settle_groups(pending, evidence):
                pending = [i for i in pending if i not in self.modules]
                continue
            # 4. what is left inside a subgraph body inherits the node that owns the body.
            for i in pending:
                parent = self.sites[i].parent
                j = self.index.get(id(parent)) if parent is not None else None
                if j is not None and j in self.modules:
                    self._assign(i, self.modules[j], AttributionSource.SUBGRAPH)
            remaining = [i for i in pending if i not in self.modules]
            if len(remaining) == len(pending):
                break
            pending = remaining

        reasons = {i: _NO_EVIDENCE for i in pending}
        return self.modules, self.sources, reasons

    def _assign(self, i: int, path: str, source: AttributionSource | str) -> None:
        self.modules[i] = path
        self.sources[i] = source.value if isinstance(source, AttributionSource) else source

    def _settle_groups(self, pending: list[int], evidence: Any) -> bool:
        """Attribute each connected group of unknown nodes to the LCA of everything around it."""
        pending_set = set(pending)
        seen: set[int] = set()
        progress = False
        for start in pending:
            if start in seen:
                continue
            group, known, stack = [], [], [start]
            seen.add(start)
            while stack:
                i = stack.pop()
                group.append(i)
                k, unknown, _ = evidence(i)
                known += k
                for j in unknown:
                    if j in pending_set and j not in seen:
                        seen.add(j)
                        stack.append(j)
            if known:
                path = _lca(known)
                for i in group:
                    self._assign(i, path, AttributionSource.CONTEXT)
                progress = True
        return progress


def _rename_to_scopes(sites: list[Site], table: NodeTable, modules: dict[int, str]) -> bool:
    """Prefix unscoped names of attributed nodes with their module's namespace; True if any changed."""
    taken = set(table.names)
    changed = False
    for i, site in enumerate(sites):
        name = table.names[i]
        if i not in modules or scope_segments(name) is not None:
            continue
        stem = name or site.node.op_type
        prefix = f"/{schema.namespace_of(modules[i])}/" if modules[i] else "/"
        new, n = prefix + stem, 0
        while new in taken:
            n += 1
            new = f"{prefix}{stem}_{n}"
        taken.add(new)
        site.node.name = new
        table.names[i] = new  # type: ignore[index]  # the table's lists are this pass's own
        changed = True
    return changed


def _lca(paths: list[str]) -> str:
    found = ModuleTree.lowest_common_ancestor(paths)
    assert found is not None, "_lca needs at least one path"
    return found
