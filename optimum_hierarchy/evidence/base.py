"""The interface every evidence source implements: a node's module, or the reason it has none."""

from __future__ import annotations

__all__ = ["EvidenceSource", "Found", "GraphView", "Missing"]

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol

import onnx_ir as ir

from optimum_hierarchy.provenance import NodeTable
from optimum_hierarchy.schema import AttributionSource, ModuleTree
from optimum_hierarchy.scope import ScopeResolver
from optimum_hierarchy.walk import Site


@dataclasses.dataclass(frozen=True)
class Found:
    """The node belongs to ``module`` (a path of the tree), by evidence of kind ``source``."""

    module: str
    source: AttributionSource


@dataclasses.dataclass(frozen=True)
class Missing:
    """This source has nothing to say about the node; ``reason`` says why (shown when nothing else places it)."""

    reason: str
    rejected: bool = False
    """The node carries this kind of evidence, but it was refused (malformed, or contradicted)."""


class GraphView:
    """What evidence sources read: the module tree, the export root and the graph's nodes.

    ``sites`` and ``table`` list the same nodes (subgraphs included) in the same order; a source
    answers for the node at an index of those lists.
    """

    def __init__(self, tree: ModuleTree, root: str, sites: Sequence[Site], table: NodeTable) -> None:
        self.tree = tree
        self.root = root
        self.sites = sites
        self.table = table
        self.resolver = ScopeResolver(tree, root)

    def full_path(self, relative: str) -> str:
        """A module path relative to the exported module, as a path of the full model's tree."""
        if not self.root:
            return relative
        return f"{self.root}.{relative}" if relative else self.root

    def owner_of_name(self, name: str) -> str | None:
        """The module owning the parameter or buffer that a tensor of this name is, if any."""
        return self.tree.owner_of_tensor(self.full_path(name)) if name else None

    def metadata(self, i: int) -> Mapping[str, str]:
        return self.sites[i].node.metadata_props

    def node(self, i: int) -> ir.Node:
        return self.sites[i].node


class EvidenceSource(Protocol):
    """One kind of evidence about where a node comes from.

    ``locate`` looks at one node and returns :class:`Found` with a module of the tree, or
    :class:`Missing` with a reason; it never guesses. Sources are tried in a fixed order (see
    :func:`optimum_hierarchy.evidence.sources.direct_sources`) and the first :class:`Found` wins.
    """

    name: str

    def locate(self, view: GraphView, i: int) -> Found | Missing: ...
