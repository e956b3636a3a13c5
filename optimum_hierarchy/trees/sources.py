"""The two ways to a module tree: of the live model at export, and of a file nobody annotated, with its root.

At export (:func:`tree_of_model`) the live model is the evidence, and its source
(:mod:`~optimum_hierarchy.trees.live_model`) always answers. For a file (:func:`tree_of_file`) each source
returns a tree or ``None`` (it has nothing to build one from); the first tree is taken:

1. the export record (:mod:`~optimum_hierarchy.trees.export_record`): a dynamo-exported file whose nodes'
   records and ``config.json`` / ``export.json`` agree on a tree and a root;
2. the ``config.json`` given or beside the file (:mod:`~optimum_hierarchy.trees.config`);
3. the dynamo exporter's node metadata (:mod:`~optimum_hierarchy.trees.dynamo_metadata`);
4. the graph's names (:mod:`~optimum_hierarchy.trees.names`), always.

Every source is a :class:`~optimum_hierarchy.trees.base.TreeSource`. A new source for files is one file and one
line of :data:`SOURCES`.
"""

from __future__ import annotations

__all__ = ["SOURCES", "best_root", "tree_of_file", "tree_of_model"]

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from optimum_hierarchy.evidence.dynamo_metadata import has_dynamo_metadata
from optimum_hierarchy.modules import ModuleTree
from optimum_hierarchy.schema import read_props
from optimum_hierarchy.scope import ScopeResolver, scope_segments
from optimum_hierarchy.trees.base import FileEvidence, FoundTree, LiveModel, TreeSource
from optimum_hierarchy.trees.config import from_config
from optimum_hierarchy.trees.dynamo_metadata import from_dynamo_metadata
from optimum_hierarchy.trees.export_record import from_export_record
from optimum_hierarchy.trees.live_model import from_live_model
from optimum_hierarchy.trees.names import from_names
from optimum_hierarchy.walk import iter_proto_nodes

if TYPE_CHECKING:
    import torch

SOURCES: tuple[TreeSource[FileEvidence], ...] = (from_export_record, from_config, from_dynamo_metadata, from_names)
"""The sources of a file's tree, in order."""


def tree_of_model(model: torch.nn.Module) -> FoundTree:
    """The module tree of ``model``, the live model being exported; its root is ``""``, the model itself."""
    return from_live_model(LiveModel(model))


def tree_of_file(path: Path, proto: onnx.ModelProto, config: Path | None) -> FoundTree:
    """The module tree of the file at ``path`` (read as ``proto``) and its root; ``config`` defaults to the
    ``config.json`` beside it."""
    if config is None and (path.parent / "config.json").is_file():
        config = path.parent / "config.json"
    nodes_metadata = [read_props(node) for node, _ in iter_proto_nodes(proto.graph)]
    evidence = FileEvidence(path, proto, config, nodes_metadata, has_dynamo_metadata(nodes_metadata))
    for source in SOURCES:
        found = source(evidence)
        if found is not None:
            break
    else:  # from_names always answers
        raise AssertionError("no tree source answered")
    if found.root is None:
        found = dataclasses.replace(found, root=best_root(found.tree, proto))
    return found


def best_root(tree: ModuleTree, proto: onnx.ModelProto) -> str:
    """The module the file's scopes are relative to: the one under which most node names resolve."""
    names = [node.name for node, _ in iter_proto_nodes(proto.graph) if scope_segments(node.name)]
    candidates = [""] + [p for p in tree if p and tree[p].depth <= 2]
    best, best_count = "", -1
    for root in candidates:
        resolver = ScopeResolver(tree, root)
        count = sum(resolver.resolve(n) is not None for n in names)
        if count > best_count:
            best, best_count = root, count
    return best
