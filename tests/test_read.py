from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

from optimum_hierarchy import read_hierarchy
from optimum_hierarchy.errors import HierarchyError


def test_sources(cli_exports: dict[str, Path]) -> None:
    path = cli_exports["bert"] / "model.onnx"
    from_path = read_hierarchy(path)
    assert len(from_path.nodes) > 100
    assert read_hierarchy(str(path)).nodes == from_path.nodes
    assert read_hierarchy(onnx.load(str(path))).nodes == from_path.nodes
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert read_hierarchy(session).path == path
    first = from_path.nodes[0]
    assert from_path.module_of(first.name) == first.module
    with pytest.raises(KeyError):
        from_path.module_of("no such node")


def test_unknown_object_gets_a_hint() -> None:
    class Seq2Seq:
        encoder = object()
        decoder = object()

    with pytest.raises(HierarchyError, match=r"Pass one of its parts: \.encoder, \.decoder"):
        read_hierarchy(Seq2Seq())
    with pytest.raises(HierarchyError, match="expected a path"):
        read_hierarchy(42)
