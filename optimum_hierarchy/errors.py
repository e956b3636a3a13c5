"""Exceptions raised by optimum_hierarchy, and the check for the ``onnx`` extra. Imports nothing of the package."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Sequence

__all__ = [
    "AttributionError",
    "HierarchyError",
    "HierarchyExportError",
    "InvalidModelFileError",
    "MissingExtraError",
    "MissingHierarchyError",
    "SchemaError",
    "UnattributedNode",
    "has_optimum_onnx",
    "require_optimum_onnx",
]


class HierarchyError(Exception):
    """Base class of every error this package raises on purpose."""


class SchemaError(HierarchyError):
    """Hierarchy metadata in a model is malformed, inconsistent, or of an unknown schema version."""


class MissingHierarchyError(HierarchyError):
    """A model carries no hierarchy metadata."""


@dataclasses.dataclass(frozen=True)
class UnattributedNode:
    """A node left without a module, and why (an :class:`AttributionError` names them; summaries count them)."""

    node: str
    op_type: str
    graph: str
    reason: str


class AttributionError(HierarchyError):
    """Nodes could not be attributed to a module and ``strict`` attribution was requested."""

    def __init__(self, message: str, unattributed: Sequence[UnattributedNode] = ()) -> None:
        super().__init__(message)
        self.unattributed = tuple(unattributed)


class InvalidModelFileError(HierarchyError):
    """A path does not name a readable ONNX model."""


class HierarchyExportError(HierarchyError):
    """The export (or its arguments) failed before a hierarchy could be written."""


class MissingExtraError(HierarchyError, ImportError):
    """A feature needs an optional dependency (the ``onnx`` extra: optimum-onnx) that is not installed."""


def has_optimum_onnx() -> bool:
    """Whether optimum-onnx (Optimum's ONNX exporter and ONNX Runtime integration) is importable."""
    try:
        return importlib.util.find_spec("optimum.exporters.onnx") is not None
    except (ImportError, ValueError):  # optimum itself missing or a broken namespace
        return False


def require_optimum_onnx(feature: str) -> None:
    """Raise :class:`MissingExtraError` naming the extra when optimum-onnx is not installed."""
    if has_optimum_onnx():
        return
    raise MissingExtraError(
        f"{feature}: this needs optimum-onnx, which is not installed. Install the onnx extra: "
        'pip install "optimum-hierarchy[onnx]" (optimum-onnx 0.1 requires optimum 2.1 and transformers < 4.58). '
        "On optimum 2.3 / transformers 5, "
        "export with `optimum-cli hierarchy export --model DIR --task TASK OUT/` "
        "(optimum_hierarchy.export_task_with_hierarchy) instead."
    )
