"""Exceptions raised by optimum_hierarchy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optimum_hierarchy.schema import UnattributedNode

__all__ = [
    "AttributionError",
    "HierarchyError",
    "HierarchyExportError",
    "InvalidModelFileError",
    "MissingHierarchyError",
    "SchemaError",
]


class HierarchyError(Exception):
    """Base class of every error this package raises on purpose."""


class SchemaError(HierarchyError):
    """Hierarchy metadata in a model is malformed, inconsistent, or of an unknown schema version."""


class MissingHierarchyError(HierarchyError):
    """A model carries no hierarchy metadata."""


class AttributionError(HierarchyError):
    """Nodes could not be attributed to a module and ``strict`` attribution was requested."""

    def __init__(self, message: str, unattributed: Sequence[UnattributedNode] = ()) -> None:
        super().__init__(message)
        self.unattributed = tuple(unattributed)


class InvalidModelFileError(HierarchyError):
    """A path does not name a readable ONNX model."""


class HierarchyExportError(HierarchyError):
    """The export (or its arguments) failed before a hierarchy could be written."""
