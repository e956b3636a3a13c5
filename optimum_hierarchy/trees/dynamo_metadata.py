"""A module tree rebuilt from the dynamo exporter's node metadata, for a file whose model is not at hand."""

from __future__ import annotations

__all__ = ["from_dynamo_metadata", "tree_from_dynamo"]

import logging
from collections.abc import Iterable, Mapping

from optimum_hierarchy.evidence.dynamo_metadata import NAME_SCOPES_KEY, scope_classes
from optimum_hierarchy.modules import ModuleInfo, ModuleTree, ParameterInfo, ancestors, depth_of
from optimum_hierarchy.trees.base import FileEvidence, FoundTree
from optimum_hierarchy.trees.names import parameters_from_initializers

logger = logging.getLogger(__name__)


def from_dynamo_metadata(evidence: FileEvidence) -> FoundTree | None:
    """The tree the nodes' ``name_scopes`` and ``class_hierarchy`` describe; ``None`` without them."""
    if not evidence.dynamo:
        return None
    tree = tree_from_dynamo(evidence.nodes_metadata, parameters_from_initializers(evidence.proto))
    return FoundTree(tree=tree, origin="the dynamo exporter's node metadata")


def tree_from_dynamo(
    nodes_metadata: Iterable[Mapping[str, str]], parameters: Mapping[str, Iterable[ParameterInfo]]
) -> ModuleTree:
    """The module tree rebuilt from the dynamo exporter's node metadata, for a file whose model is not at hand.

    Paths come from every node's ``name_scopes`` and their classes from ``class_hierarchy`` at the
    same position; a module seen with two different classes, or only in a value that does not parse,
    has class ``""`` (unknown). Containers that never ran code of their own (a ``ModuleList``) are
    added as parents with class ``""``. ``parameters`` maps module paths to the parameters found
    for them (from initializer names), which adds modules that own parameters but ran no node.
    """
    classes: dict[str, str] = {}
    malformed = 0
    for metadata in nodes_metadata:
        try:
            found = scope_classes(metadata)
        except ValueError:
            malformed += 1
            continue
        if found is None:
            continue
        scopes, hierarchy = found
        for path, cls in zip(scopes, hierarchy or [""] * len(scopes), strict=True):
            known = classes.setdefault(path, cls)
            if known != cls:
                classes[path] = ""
    if malformed:
        logger.warning(
            "%d nodes have a %s value that cannot be read; they add nothing to the tree.", malformed, NAME_SCOPES_KEY
        )
    paths = set(classes) | set(parameters)
    for path in list(paths):
        paths.update(ancestors(path))
    paths.add("")
    modules = [
        ModuleInfo(path=path, class_name=classes.get(path, ""), parameters=tuple(parameters.get(path, ())))
        for path in sorted(paths, key=lambda p: (depth_of(p), p))
    ]
    return ModuleTree(modules)
