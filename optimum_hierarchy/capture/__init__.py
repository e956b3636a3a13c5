"""What is recorded from the PyTorch model."""

from __future__ import annotations

from optimum_hierarchy.capture.module_tree import capture_module_tree, find_module_path

__all__ = ["capture_module_tree", "find_module_path"]
