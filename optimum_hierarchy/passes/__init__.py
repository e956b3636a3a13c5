"""Graph passes over onnx_ir models.

Re-exported lazily: this ``__init__`` imports none of its submodules, so importing one pass (or
:mod:`~optimum_hierarchy.passes.reattribute`) does not load the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {"AttributeNodesPass": "optimum_hierarchy.passes.attribute_nodes"}

__all__ = ["AttributeNodesPass"]

if TYPE_CHECKING:
    from optimum_hierarchy.passes.attribute_nodes import AttributeNodesPass


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
