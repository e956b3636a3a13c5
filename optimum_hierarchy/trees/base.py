"""What a source of a module tree gives (:class:`FoundTree`), and the evidence it is given: a live model
(:class:`LiveModel`) or a file (:class:`FileEvidence`).

Each source is one file and one function ``(evidence) -> FoundTree | None`` (a :class:`TreeSource`), like the
evidence sources of a node's module (:mod:`optimum_hierarchy.evidence`). At export the tree comes from the
live model (:mod:`~optimum_hierarchy.trees.live_model`, which always answers); for a file nobody annotated,
from the first of the sources in :mod:`~optimum_hierarchy.trees.sources` that can build one from what the file
offers. :mod:`~optimum_hierarchy.trees.sources` holds both ways in: ``tree_of_model`` and ``tree_of_file``.
"""

from __future__ import annotations

__all__ = ["FileEvidence", "FoundTree", "LiveModel", "TreeSource"]

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from optimum_hierarchy.modules import ModuleTree

if TYPE_CHECKING:
    import onnx
    import torch

_Evidence_contra = TypeVar("_Evidence_contra", contravariant=True)


@dataclasses.dataclass(frozen=True)
class FoundTree:
    tree: ModuleTree
    origin: str
    """What the tree was built from, for messages."""
    root: str | None = None
    """The module the evidence is of, when the source knows it (``""`` for a live model, itself; for a file, else
    found from its names)."""
    model_type: str | None = None
    model_class: str | None = None


@dataclasses.dataclass(frozen=True)
class LiveModel:
    """The model being exported, as the exporter holds it: its own modules are the tree."""

    model: torch.nn.Module


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


class TreeSource(Protocol[_Evidence_contra]):
    """A tree from one kind of evidence (:class:`LiveModel` or :class:`FileEvidence`), or ``None``: it has
    nothing to build one from."""

    def __call__(self, evidence: _Evidence_contra, /) -> FoundTree | None: ...
