"""Where a node's module comes from: evidence sources, tried in a fixed order.

Each source is one file behind one small interface (:class:`~optimum_hierarchy.evidence.base.EvidenceSource`:
a node's module, or the reason it has none). The attribution pass
(:class:`~optimum_hierarchy.passes.attribute_nodes.AttributeNodesPass`) uses them in this order:

1. **provenance** (``fusion``, or kept sources): when the file was annotated before an optimizer or
   quantizer rewrote it, kept nodes keep their module and created nodes get the LCA of what they
   replaced (:mod:`optimum_hierarchy.passes.reattribute`);
2. the **direct sources** of :func:`~optimum_hierarchy.evidence.sources.direct_sources`, first answer wins;
3. **context** and **subgraph** (:mod:`optimum_hierarchy.evidence.context`), inferred from the
   neighbours those placed.

Supporting a new exporter means adding one source file here and one line to
:func:`~optimum_hierarchy.evidence.sources.direct_sources`.

The names below are re-exported lazily: this ``__init__`` imports none of its submodules, so
importing one source does not load the others, and no source is in an import cycle with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optimum_hierarchy.lazy import lazy_getattr

_LAZY = {
    "EvidenceSource": "optimum_hierarchy.evidence.base",
    "Found": "optimum_hierarchy.evidence.base",
    "GraphView": "optimum_hierarchy.evidence.base",
    "Missing": "optimum_hierarchy.evidence.base",
    "direct_sources": "optimum_hierarchy.evidence.sources",
}

__all__ = ["EvidenceSource", "Found", "GraphView", "Missing", "direct_sources"]

if TYPE_CHECKING:
    from optimum_hierarchy.evidence.base import EvidenceSource, Found, GraphView, Missing
    from optimum_hierarchy.evidence.sources import direct_sources


__getattr__ = lazy_getattr(__name__, _LAZY)
