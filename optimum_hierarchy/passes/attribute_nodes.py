"""Attribute every node of an exported ONNX model to the PyTorch module it came from."""

from __future__ import annotations

__all__ = ["SUMMARY_META_KEY", "AttributeNodesPass"]

import collections
import logging
from collections.abc import Sequence

import onnx_ir as ir

from optimum_hierarchy import schema
from optimum_hierarchy.errors import AttributionError
from optimum_hierarchy.evidence.base import Found, GraphView
from optimum_hierarchy.evidence.context import infer_from_context
from optimum_hierarchy.evidence.dynamo_metadata import module_scopes
from optimum_hierarchy.evidence.rules import FusedNodeRules
from optimum_hierarchy.evidence.sources import direct_sources
from optimum_hierarchy.evidence.torchscript_scope import TorchScriptScope
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
from optimum_hierarchy.scope import ScopeResolver, ScopeSpeller, producer_name_of_output, scope_segments
from optimum_hierarchy.walk import Site, iter_ir_sites

logger = logging.getLogger(__name__)

_UNPLACED_BEFORE = "left unattributed by the annotation this graph was optimized from, and kept since"

SUMMARY_META_KEY = "optimum_hierarchy.summary"
"""Key in ``ir.Model.meta`` (scratch state, never saved) under which the pass leaves its summary."""


class AttributeNodesPass(ir.passes.InPlacePass):
    """Write the module path of every node (subgraphs included) and the module tree into the model.

    With ``provenance`` (the graph as it was last annotated, read from the model's metadata), the
    nodes are first placed from it: kept nodes keep their module, nodes an optimizer or quantizer
    created get the lowest common ancestor of the modules of the nodes they replaced (see
    :mod:`optimum_hierarchy.passes.reattribute`). ``fused_rules`` are the per-architecture rules
    for created nodes. ``after_the_fact=True`` is for a file nobody annotated at export: evidence
    from names is labelled ``name`` rather than ``scope``.

    The remaining nodes are placed by the evidence sources of :mod:`optimum_hierarchy.evidence`, in
    order of trust (the first that answers wins):

    1. ``metadata``: the deepest module path in the node's ``pkg.torch.onnx.name_scopes``, written
       by torch's dynamo exporter.
    2. ``scope``: the TorchScript scope in the node name, resolved against the module tree.
    3. ``parameter``: the parameters or buffers the node outputs (an ``Identity`` aliasing a
       deduplicated initializer is named after the parameter it stands for).
    4. ``context``: the lowest common ancestor (LCA) of the modules around the node: its
       consumers, the parameters it reads, its ``If`` / ``Loop`` / ``Scan`` bodies, and for a node
       that computes on data the producers of its inputs (a graph input: the root). It may be
       coarser than the true module, not finer. The root is only accepted with a witness (the node
       reads a graph input, a neighbour is at the root by direct evidence, or it only shapes
       constants for a consumer at the root): a root reached by spreading along the data is no
       evidence, and the node stays unattributed.
    5. ``subgraph``: a node inside an ``If`` / ``Loop`` / ``Scan`` body with no other evidence
       inherits the module of the node that owns the body.

    Except on a fresh export, between 3 and 4 come the ``fused_rules`` (source ``rule``) and the
    scopes in the names of the node's output tensors, with the owners of the parameters it reads
    (source ``name``): ONNX Runtime's fused nodes keep the output tensor names of what they
    replaced; and a node's dynamo metadata is only believed when its module holds the parameters the
    node reads (onnxscript's rewriter gives a fused node the first matched node's metadata).

    After attribution the pass stores the new graph's provenance, so that a later optimization can
    be re-attributed in turn; on a fresh export it also stores each module's output tensors
    (:func:`~optimum_hierarchy.provenance.module_outputs`), which later runs keep as they are.
    With ``scope_names=True``, attributed nodes whose names carry no scope (``Attention_0``,
    ``SkipLayerNorm_AddBias_0``) are renamed after their module's scope as the file spells it
    (:class:`~optimum_hierarchy.scope.ScopeSpeller`): ``/encoder/layer.0/attention/self/Attention_0``,
    the scope of the exporter's own names (of the module's kept nodes, its submodules', or the tensors
    the fused subgraph produced), else torch's rule from the module tree, so that tools grouping nodes
    by ``/`` in their names put them with the exporter's nodes. A dynamo export's names carry no
    scope (``node_MatMul_12``): its nodes take the scopes torch's TorchScript exporter would have
    written, from their ``pkg.torch.onnx.name_scopes`` call stacks where present. A name already
    taken gets a ``_N`` suffix; the renamed graph is what the stored provenance describes.

    A node with none of these is left unattributed, with a reason (and the evidence refused, if
    any); it is counted, logged, and with
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
                raise AttributionError(message + f"; reason: {unattributed[0].reason}.", unattributed)
            logger.warning("%s; they carry %r = %r and a reason.", message, schema.NODE_SOURCE_KEY, "unattributed")

        modified = self.scope_names and _rename_to_scopes(sites, attributor.table, modules, attributor.view.resolver)
        for i, site in enumerate(sites):
            if i in modules:
                replaced = fused[i] if i in fused and fused[i] != (modules[i],) else ()
                record = schema.NodeRecord(module=modules[i], source=sources[i], sources=replaced)
            else:
                record = schema.NodeRecord(source=AttributionSource.UNATTRIBUTED.value, reason=reasons[i])
            if schema.write_node(site.node, record):
                modified = True

        meta = HierarchyMetadata(tree=self.tree, export=self.export, summary=summary)
        encoded = schema.encode_model_metadata(meta)
        encoded[schema.PROVENANCE_KEY] = encode_provenance(snapshot(attributor.table, modules, sources, fused))
        if fresh:
            # The graph as exported: its module outputs are recorded once and kept through optimization.
            main = [s.parent is None for s in sites]
            outputs = module_outputs(attributor.table, modules, main, [v.name or "" for v in model.graph.outputs])
            encoded[schema.MODULE_OUTPUTS_KEY] = encode_module_outputs(outputs)
        if schema.update_props(model.metadata_props, encoded):
            modified = True
        model.meta[SUMMARY_META_KEY] = summary
        return ir.passes.PassResult(model, modified=modified)


class _Attributor:
    """The evidence of :mod:`optimum_hierarchy.evidence` applied, in order, to one model's nodes."""

    def __init__(
        self, tree: ModuleTree, root: str, sites: list[Site], fused_rules: Sequence[FusedNodeRule] = ()
    ) -> None:
        self.tree = tree
        self.sites = sites
        self.fused_rules = fused_rules
        self.table = NodeTable(
            names=[s.node.name or "" for s in sites],
            op_types=[s.node.op_type for s in sites],
            inputs=[[(v.name or "") if v is not None else "" for v in s.node.inputs] for s in sites],
            outputs=[[v.name or "" for v in s.node.outputs] for s in sites],
        )
        self.view = GraphView(tree, root, sites, self.table)
        self._narrowing = (FusedNodeRules(fused_rules), TorchScriptScope(AttributionSource.NAME))
        self.modules: dict[int, str] = {}
        self.sources: dict[int, str] = {}
        self.fused: dict[int, tuple[str, ...]] = {}
        self.kept_unplaced: set[int] = set()
        """Nodes the last annotation left unattributed and no optimizer touched since."""

    def seed(self, provenance: Provenance) -> None:
        """Place what the provenance of the previously annotated graph proves."""
        kept: set[int] = set()
        placements = reattribute(self.table, provenance, self.narrow, kept_out=kept)
        self.kept_unplaced = kept - placements.keys()
        for i, placement in placements.items():
            if self._valid(placement):
                self._assign(i, placement.module, placement.source)
                if placement.sources:
                    self.fused[i] = placement.sources

    def _valid(self, placement: Placement) -> bool:
        return placement.module in self.tree and all(m in self.tree for m in placement.sources)

    def narrow(self, i: int) -> tuple[str, AttributionSource] | None:
        """For a node inside a group of created nodes: a rule's answer, else its own name's scope."""
        for source in self._narrowing:
            found = source.locate(self.view, i)
            if isinstance(found, Found):
                return found.module, found.source
        return None

    def run(self, *, fresh: bool = True) -> tuple[dict[int, str], dict[int, str], dict[int, str]]:
        """``fresh``: the graph is what an exporter just wrote; its scopes and metadata are trusted as such."""
        sources = direct_sources(fresh=fresh, fused_rules=self.fused_rules)
        rejected: dict[int, str] = {}
        for i in range(len(self.sites)):
            if i in self.modules or i in self.kept_unplaced:
                continue
            for source in sources:
                found = source.locate(self.view, i)
                if isinstance(found, Found):
                    self._assign(i, found.module, found.source)
                    break
                if found.rejected:
                    rejected.setdefault(i, found.reason)
        if rejected:
            shown = "; ".join(f"{self.table.names[i] or '<unnamed>'}: {why}" for i, why in list(rejected.items())[:3])
            logger.warning(
                "%d nodes carry exporter metadata that was refused as evidence (%s); they are placed from their "
                "neighbours or left unattributed.",
                len(rejected),
                shown,
            )
        before: dict[int, str] = {}
        for i in self.kept_unplaced:
            reason = schema.decode_node(self.sites[i].node.metadata_props, strict=False).reason
            before[i] = _UNPLACED_BEFORE if reason is None else reason
        left = infer_from_context(self.view, self.modules, self.sources, self._assign, before)
        # The reason names refused evidence and what the neighbours gave; the other sources' "nothing here"
        # depends on which ran (fresh export or not), and a reason must not change when a file is annotated again.
        why_left = {i: f"{rejected[i]}; {why}" if i in rejected else why for i, why in left.items()}
        return self.modules, self.sources, why_left

    def _assign(self, i: int, path: str, source: AttributionSource | str) -> None:
        self.modules[i] = path
        self.sources[i] = source.value if isinstance(source, AttributionSource) else source


def _rename_to_scopes(sites: list[Site], table: NodeTable, modules: dict[int, str], resolver: ScopeResolver) -> bool:
    """Prefix unscoped names of attributed nodes with their module's scope as the file spells it; True on a change."""
    speller = ScopeSpeller(resolver)
    for i, site in enumerate(sites):
        speller.observe_name(table.names[i])
        for output in table.outputs[i]:  # a fused node keeps the exporter's names of what it replaced
            speller.observe_name(producer_name_of_output(output) or "")
        try:
            stack = module_scopes(site.node.metadata_props)
        except ValueError:
            stack = None  # unreadable: no evidence of a spelling (attribution said so already)
        if stack:
            speller.observe_call_stack(stack)
    taken = set(table.names)
    changed = False
    for i, site in enumerate(sites):
        name = table.names[i]
        if i not in modules or scope_segments(name) is not None:
            continue
        stem = name or site.node.op_type
        segments = speller.spell(modules[i])
        prefix = f"/{'/'.join(segments)}/" if segments else "/"
        new, n = prefix + stem, 0
        while new in taken:
            n += 1
            new = f"{prefix}{stem}_{n}"
        taken.add(new)
        site.node.name = new
        table.names[i] = new  # type: ignore[index]  # the table's lists are this pass's own
        changed = True
    return changed
