"""Exceptions raised by optimum_hierarchy, and the warning its deprecated names give."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optimum_hierarchy.schema import UnattributedNode

__all__ = [
    "AttributionError",
    "HierarchyError",
    "HierarchyExportError",
    "InvalidModelFileError",
    "MissingExtraError",
    "MissingHierarchyError",
    "SchemaError",
    "has_optimum_onnx",
    "require_optimum_onnx",
    "warn_deprecated",
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


def warn_deprecated(old: str, new: str) -> None:
    """A ``DeprecationWarning`` at the caller of the deprecated name ``old``: use ``new``, ``old`` goes in 0.3.

    Names renamed in 0.2 keep working for one release (README, "Deprecated names").
    """
    warnings.warn(
        f"{old} is deprecated and will be removed in optimum-hierarchy 0.3; use {new}.",
        DeprecationWarning,
        stacklevel=3,
    )
