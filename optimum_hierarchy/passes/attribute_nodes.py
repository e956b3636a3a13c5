"""Attribute every node of an exported ONNX model to the PyTorch module it came from."""

from __future__ import annotations

__all__ = ["AttributeNodesPass", "SUMMARY_META_KEY"]

import collections
import dataclasses
import logging
from collections.abc import Iterator

import onnx_ir as ir

from optimum_hierarchy import schema
from optimum_hierarchy.errors import AttributionError
from optimum_hierarchy.schema import (
    AttributionSource,
    AttributionSummary,
    ExportInfo,
    HierarchyMetadata,
    ModuleTree,
    UnattributedNode,
)
from optimum_hierarchy.scope import ScopeResolver

logger = logging.getLogger(__name__)

SUMMARY_META_KEY = "optimum_hierarchy.summary"
"""Key in ``ir.Model.meta`` (scratch state, never saved) under which the pass leaves its summary."""

_NO_EVIDENCE = "no scope in its name, no parameter among its inputs or outputs, and no attributed neighbour"


@dataclasses.dataclass
class _Site:
    """A node and where it lives."""

    node: ir.Node
    graph_name: str
    parent: ir.Node | None
    """The node whose subgraph attribute holds this node (``If``, ``Loop``, ``Scan``), if any."""


def _walk(graph: ir.Graph, parent: ir.Node | None = None) -> Iterator[_Site]:
    for node in graph:
        yield _Site(node, graph.name or "", parent)
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                yield from _walk(attr.as_graph(), node)
            elif attr.type == ir.AttributeType.GRAPHS:
                for sub in attr.as_graphs():
                    yield from _walk(sub, node)


class AttributeNodesPass(ir.passes.InPlacePass):
    """Write the module path of every node (subgraphs included) and the module tree into the model.

    Evidence, in order of trust:

    1. ``scope``: the TorchScript scope in the node name, resolved against the module tree.
    2. ``parameter``: the parameters or buffers the node outputs (an ``Identity`` aliasing a
       deduplicated initializer is named after the parameter it stands for) or reads; several
       owners give their lowest common ancestor.
    3. ``context``: the lowest common ancestor of the modules of the nodes consuming its outputs,
       once all of them are attributed; failing that, of the nodes producing its inputs.
    4. ``subgraph``: a node inside an ``If`` / ``Loop`` / ``Scan`` body with no other evidence
       inherits the module of the node that owns the body.

    A node with none of these is left unattributed, with a reason; it is counted, logged, and with
    ``strict=True`` the pass raises :class:`AttributionError` instead. The pass recomputes
    everything from the graph on each run, so running it twice changes nothing the second time.
    """

    def __init__(self, tree: ModuleTree, export: ExportInfo | None = None, *, strict: bool = False) -> None:
        super().__init__()
        self.tree = tree
        self.export = export if export is not None else ExportInfo()
        self.strict = strict
        if self.export.root not in tree:
            raise ValueError(f"export root {self.export.root!r} is not a module of the tree")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        sites = list(_walk(model.graph))
        modules, sources, reasons = self._attribute(sites)

        unattributed = tuple(
            UnattributedNode(node=s.node.name or "", op_type=s.node.op_type, graph=s.graph_name, reason=reasons[i])
            for i, s in enumerate(sites)
            if i not in modules
        )
        summary = AttributionSummary(
            nodes=len(sites),
            by_source=dict(collections.Counter(src.value for src in sources.values())),
            unattributed=unattributed,
        )
        if unattributed:
            shown = ", ".join(f"{u.node or '<unnamed>'} ({u.op_type})" for u in unattributed[:5])
            message = f"{len(unattributed)} of {len(sites)} nodes could not be attributed to a module: {shown}"
            if self.strict:
                raise AttributionError(message + f"; reason: {_NO_EVIDENCE}.", unattributed)
            logger.warning("%s; they carry %r = %r and a reason.", message, schema.NODE_SOURCE_KEY, "unattributed")

        modified = False
        for i, site in enumerate(sites):
            if i in modules:
                wanted = {
                    schema.NODE_MODULE_KEY: modules[i],
                    schema.NODE_SOURCE_KEY: sources[i].value,
                    schema.NAMESPACE_KEY: schema.namespace_of(modules[i]),
                }
                stale = (schema.NODE_REASON_KEY,)
            else:
                wanted = {
                    schema.NODE_SOURCE_KEY: AttributionSource.UNATTRIBUTED.value,
                    schema.NODE_REASON_KEY: reasons[i],
                }
                stale = (schema.NODE_MODULE_KEY, schema.NAMESPACE_KEY)
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
        for key, value in schema.encode_model_metadata(meta).items():
            if model.metadata_props.get(key) != value:
                model.metadata_props[key] = value
                modified = True
        model.meta[SUMMARY_META_KEY] = summary
        return ir.passes.PassResult(model, modified=modified)

    def _attribute(
        self, sites: list[_Site]
    ) -> tuple[dict[int, str], dict[int, AttributionSource], dict[int, str]]:
        tree = self.tree
        root = self.export.root
        resolver = ScopeResolver(tree, root)
        index = {id(s.node): i for i, s in enumerate(sites)}
        modules: dict[int, str] = {}
        sources: dict[int, AttributionSource] = {}
        reasons: dict[int, str] = {}

        def assign(i: int, path: str, source: AttributionSource) -> None:
            modules[i] = path
            sources[i] = source

        def owner(value: ir.Value | None) -> str | None:
            if value is None or not value.name:
                return None
            full = f"{root}.{value.name}" if root else value.name
            return tree.owner_of_tensor(full)

        # 1. scope, 2. parameters.
        for i, site in enumerate(sites):
            node = site.node
            path = resolver.resolve(node.name or "")
            if path is not None:
                assign(i, path, AttributionSource.SCOPE)
                continue
            owners = [o for o in map(owner, node.outputs) if o is not None]
            if not owners:
                owners = [o for o in map(owner, node.inputs) if o is not None]
            if owners:
                lca = ModuleTree.lowest_common_ancestor(owners)
                assert lca is not None
                assign(i, lca, AttributionSource.PARAMETER)

        def consumers(i: int) -> list[int]:
            out = []
            for value in sites[i].node.outputs:
                for use in value.uses():
                    j = index.get(id(use[0]))
                    if j is not None:
                        out.append(j)
            return out

        def producers(i: int) -> list[int]:
            out = []
            for value in sites[i].node.inputs:
                if value is None:
                    continue
                producer = value.producer()
                if producer is not None and id(producer) in index:
                    out.append(index[id(producer)])
            return out

        # 3. context: first only where every consumer is known, repeated to a fixed point (walking
        # backwards settles chains of unscoped nodes in one sweep); then partial evidence.
        pending = [i for i in range(len(sites)) if i not in modules]
        for require_all in (True, False):
            changed = True
            while changed and pending:
                changed = False
                still = []
                for i in reversed(pending):
                    evidence = self._context(consumers(i), modules, require_all)
                    if evidence is None and (require_all is False or not consumers(i)):
                        evidence = self._context(producers(i), modules, require_all)
                    if evidence is not None:
                        assign(i, evidence, AttributionSource.CONTEXT)
                        changed = True
                    else:
                        still.append(i)
                pending = list(reversed(still))

        # 4. subgraph bodies inherit their owner's module.
        changed = True
        while changed and pending:
            changed = False
            still = []
            for i in pending:
                parent = sites[i].parent
                j = index.get(id(parent)) if parent is not None else None
                if j is not None and j in modules:
                    assign(i, modules[j], AttributionSource.SUBGRAPH)
                    changed = True
                else:
                    still.append(i)
            pending = still

        for i in pending:
            reasons[i] = _NO_EVIDENCE
        return modules, sources, reasons

    @staticmethod
    def _context(neighbours: list[int], modules: dict[int, str], require_all: bool) -> str | None:
        known = [modules[j] for j in neighbours if j in modules]
        if not known or (require_all and len(known) != len(neighbours)):
            return None
        return ModuleTree.lowest_common_ancestor(known)
