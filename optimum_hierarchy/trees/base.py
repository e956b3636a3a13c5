"""What a source of a module tree gives (:class:`FoundTree`), and what a file offers them (:class:`FileEvidence`).

A tree comes from the live model at export (:mod:`~optimum_hierarchy.trees.live_model`), or, for a file
nobody annotated, from the first of the sources in :mod:`~optimum_hierarchy.trees.sources` that can build
one from what the file offers. Each source is one file and one function ``(FileEvidence) -> FoundTree |
None``, like the evidence sources of a node's module (:mod:`optimum_hierarchy.evidence`).
"""

from __future__ import annotations

__all__ = ["FileEvidence", "FoundTree", "TreeSource"]

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from optimum_hierarchy.modules import ModuleTree

if TYPE_CHECKING:
    import onnx


@dataclasses.dataclass(frozen=True)
class FoundTree:
    tree: ModuleTree
    origin: str
    """What the tree was built from, for messages."""
    root: str | None = None
    """The module the file holds, when the source knows it (else it is found from the file's names)."""
    model_type: str | None = None
    model_class: str | None = None


@dataclasses.dataclass(frozen=True)
class FileEvidence:
    """A file without our metadata, as the tree sources read it."""

    path: Path
    proto: onnx.ModelProto
    config: Path | None
    """The ``config.json`` given, or the one beside the file; ``None`` when there is none."""
    nodes_metadata: Sequence[Mapping[str, str]]
    """Every node's ``metadata_props`` (subgraphs included), in :mod:`~optimum_hierarchy.walk`'s order."""
    dynamo: bool
    """Whether the nodes carry the dynamo exporter's ``name_scopes``."""


class TreeSource(Protocol):
    def __call__(self, evidence: FileEvidence, /) -> FoundTree | None: ...
