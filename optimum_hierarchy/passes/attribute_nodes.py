"""Attribute every node of an ONNX model to the PyTorch module it came from, in one of three modes."""

from __future__ import annotations

__all__ = ["ATTRIBUTION_META_KEY", "SUMMARY_META_KEY", "AttributeNodesPass", "Attribution", "Mode", "attribution_of"]

import collections
import dataclasses
import enum
import logging
from collections.abc import Sequence

import onnx_ir as ir

from optimum_hierarchy import schema
from optimum_hierarchy.errors import AttributionError
from optimum_hierarchy.evidence.base import Found, GraphView
from optimum_hierarchy.evidence.context import infer_from_context
from optimum_hierarchy.evidence.rules import FusedNodeRules
from optimum_hierarchy.evidence.sources import direct_sources
from optimum_hierarchy.evidence.torchscript_scope import TorchScriptScope
from optimum_hierarchy.passes.reattribute import Placement, kept_nodes, reattribute
from optimum_hierarchy.provenance import NodeTable, Provenance
from optimum_hierarchy.rules import FusedNodeRule
from optimum_hierarchy.schema import (
    AttributionSource,
    AttributionSummary,
    ExportInfo,
    HierarchyMetadata,
    ModuleTree,
    UnattributedNode,
)
from optimum_hierarchy.scope import ScopeResolver
from optimum_hierarchy.walk import Site, iter_ir_sites

logger = logging.getLogger(__name__)

_UNPLACED_BEFORE = "left unattributed by the annotation this graph was optimized from, and kept since"

SUMMARY_META_KEY = "optimum_hierarchy.summary"
"""Key in ``ir.Model.meta`` (scratch state, never saved) under which the pass leaves its summary."""


class Mode(enum.Enum):
    """What the graph is, which decides how far its own names and metadata are trusted."""

    EXPORT = "export"
    """What an exporter just wrote: its scopes and dynamo metadata are trusted as such."""
    AFTER_OPTIMIZER = "after_optimizer"
    """Optimized or quantized since its last annotation: placed from that annotation's provenance first."""
    AFTER_THE_FACT = "after_the_fact"
    """Nobody annotated it at export: evidence from names is labelled ``name``, not ``scope``."""


ATTRIBUTION_META_KEY = "optimum_hierarchy.attribution"
"""Key in ``ir.Model.meta`` (scratch state, never saved) under which the pass leaves its :class:`Attribution`."""


@dataclasses.dataclass
class Attribution:
    """Where each node went, for the passes that follow (renaming, provenance, module outputs)."""

    mode: Mode
    sites: list[Site]
    table: NodeTable
    modules: dict[int, str]
    sources: dict[int, str]
    fused: dict[int, tuple[str, ...]]
    resolver: ScopeResolver


def attribution_of(model: ir.Model) -> Attribution:
    """The :class:`Attribution` that :class:`AttributeNodesPass` left on ``model``."""
    found = model.meta.get(ATTRIBUTION_META_KEY)
    if not isinstance(found, Attribution):
        raise ir.passes.PreconditionError("run AttributeNodesPass on this model first")
    return found


class AttributeNodesPass(ir.passes.InPlacePass):
    """Write every node's module (subgraphs included), the module tree and the summary into the model.

    The evidence and its order are :mod:`optimum_hierarchy.evidence`'s; in :attr:`Mode.AFTER_OPTIMIZER`
    the nodes are first placed from ``provenance`` (:mod:`optimum_hierarchy.passes.reattribute`), with
    ``fused_rules`` for the nodes an optimizer created. A node left without a module gets a reason and
    is counted and logged; with ``strict`` the pass raises :class:`AttributionError` instead, before
    writing anything. Running it twice changes nothing the second time.
    """

    def __init__(
        self,
        tree: ModuleTree,
        export: ExportInfo | None = None,
        *,
        mode: Mode = Mode.EXPORT,
        provenance: Provenance | None = None,
        fused_rules: Sequence[FusedNodeRule] = (),
        strict: bool = False,
    ) -> None:
        super().__init__()
        self.tree = tree
        self.export = export if export is not None else ExportInfo()
        self.mode = mode
        self.provenance = provenance
        self.fused_rules = tuple(fused_rules)
        self.strict = strict
        if self.export.root not in tree:
            raise ValueError(f"export root {self.export.root!r} is not a module of the tree")
        if (mode is Mode.AFTER_OPTIMIZER) != (provenance is not None):
            raise ValueError("provenance is what Mode.AFTER_OPTIMIZER places from, and only it")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        sites = list(iter_ir_sites(model.graph))
        attributor = _Attributor(self.tree, self.export.root, sites, self.fused_rules)
        if self.provenance is not None:
            attributor.seed(self.provenance)
        modules, sources, reasons = attributor.run(fresh=self.mode is Mode.EXPORT)
        fused = attributor.fused
        summary = self._summary(sites, modules, sources, reasons)

        modified = False
        for i, site in enumerate(sites):
            if i in modules:
                replaced = fused[i] if i in fused and fused[i] != (modules[i],) else ()
                record = schema.NodeRecord(module=modules[i], source=sources[i], sources=replaced)
            else:
                record = schema.NodeRecord(source=AttributionSource.UNATTRIBUTED.value, reason=reasons[i])
            if schema.write_node(site.node, record):
                modified = True
        meta = HierarchyMetadata(tree=self.tree, export=self.export, summary=summary)
        if schema.update_props(model.metadata_props, schema.encode_model_metadata(meta)):
            modified = True
        model.meta[SUMMARY_META_KEY] = summary
        model.meta[ATTRIBUTION_META_KEY] = Attribution(
            self.mode, sites, attributor.table, modules, sources, fused, attributor.view.resolver
        )
        return ir.passes.PassResult(model, modified=modified)

    def _summary(
        self, sites: list[Site], modules: dict[int, str], sources: dict[int, str], reasons: dict[int, str]
    ) -> AttributionSummary:
        """Count what was placed; raise (``strict``) or log what was not."""
        unattributed = tuple(
            UnattributedNode(node=s.node.name or "", op_type=s.node.op_type, graph=s.graph_name, reason=reasons[i])
            for i, s in enumerate(sites)
            if i not in modules
        )
        if unattributed:
            shown = ", ".join(f"{u.node or '<unnamed>'} ({u.op_type})" for u in unattributed[:5])
            message = f"{len(unattributed)} of {len(sites)} nodes could not be attributed to a module: {shown}"
            if self.strict:
                raise AttributionError(message + f"; reason: {unattributed[0].reason}.", unattributed)
            logger.warning("%s; they carry %r = %r and a reason.", message, schema.NODE_SOURCE_KEY, "unattributed")
        return AttributionSummary(
            nodes=len(sites), by_source=dict(collections.Counter(sources.values())), unattributed=unattributed
        )


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
        kept = kept_nodes(self.table, provenance)
        placements = reattribute(self.table, provenance, self.narrow, kept)
        self.kept_unplaced = kept.keys() - placements.keys()
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
