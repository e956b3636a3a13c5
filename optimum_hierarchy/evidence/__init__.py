"""Where a node's module comes from: evidence sources, tried in a fixed order.

Each source is one file behind one small interface (:class:`~optimum_hierarchy.evidence.base.EvidenceSource`:
a node's module, or the reason it has none). The attribution pass
(:class:`~optimum_hierarchy.passes.attribute_nodes.AttributeNodesPass`) uses them in this order:

1. **provenance** (``fusion``, or kept sources): when the file was annotated before an optimizer or
   quantizer rewrote it, kept nodes keep their module and created nodes get the LCA of what they
   replaced (:mod:`optimum_hierarchy.passes.reattribute`);
2. the **direct sources** of :func:`direct_sources`, first answer wins;
3. **context** and **subgraph** (:mod:`optimum_hierarchy.evidence.context`), inferred from the
   neighbours those placed.

Supporting a new exporter means adding one source file here and one line to :func:`direct_sources`.
"""

from __future__ import annotations

__all__ = ["EvidenceSource", "Found", "GraphView", "Missing", "direct_sources"]

from collections.abc import Sequence

from optimum_hierarchy.evidence.base import EvidenceSource, Found, GraphView, Missing
from optimum_hierarchy.evidence.dynamo_metadata import DynamoScopes
from optimum_hierarchy.evidence.output_names import OutputNames
from optimum_hierarchy.evidence.parameter import ParameterAlias
from optimum_hierarchy.evidence.rules import FusedNodeRules
from optimum_hierarchy.evidence.torchscript_scope import TorchScriptScope
from optimum_hierarchy.rules import FusedNodeRule
from optimum_hierarchy.schema import AttributionSource


def direct_sources(*, fresh: bool, fused_rules: Sequence[FusedNodeRule] = ()) -> tuple[EvidenceSource, ...]:
    """The direct sources, in order, for one attribution run.

    ``fresh``: the graph is what an exporter of this package just wrote (before any optimizer), so
    its names and metadata are trusted as they are. Otherwise (a file annotated after the fact, or
    nodes an optimizer created since the last annotation) names are labelled ``name``, the
    per-architecture rules and output tensor names join in, and the dynamo metadata is checked
    against the parameters each node reads (onnxscript's rewriter gives a fused node the first
    matched node's metadata). Kept nodes were placed from the provenance before these run.
    """
    if fresh:
        return (DynamoScopes(), TorchScriptScope(AttributionSource.SCOPE), ParameterAlias())
    sources: list[EvidenceSource] = [DynamoScopes(check_parameters=True)]
    sources += [
        TorchScriptScope(AttributionSource.NAME),
        ParameterAlias(),
        FusedNodeRules(fused_rules),
        OutputNames(),
    ]
    return tuple(sources)
