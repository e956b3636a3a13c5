"""The direct evidence sources of one attribution run, in the order they are tried."""

from __future__ import annotations

__all__ = ["direct_sources"]

from collections.abc import Sequence

from optimum_hierarchy.evidence.base import EvidenceSource
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
