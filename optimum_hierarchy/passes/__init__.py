"""Graph passes over onnx_ir models."""

from __future__ import annotations

from optimum_hierarchy.passes.attribute_nodes import AttributeNodesPass

__all__ = ["AttributeNodesPass"]
