"""Graph passes over onnx_ir models.

Re-exported lazily: this ``__init__`` imports none of its submodules, so importing one pass (or
:mod:`~optimum_hierarchy.passes.reattribute`) does not load the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optimum_hierarchy.lazy import lazy_getattr

_LAZY = {"AttributeNodesPass": "optimum_hierarchy.passes.attribute_nodes"}

__all__ = ["AttributeNodesPass"]

if TYPE_CHECKING:
    from optimum_hierarchy.passes.attribute_nodes import AttributeNodesPass


__getattr__ = lazy_getattr(__name__, _LAZY)
