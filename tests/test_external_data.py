"""Models whose weights live in external data: annotated, optimized, re-annotated and queried without reading them."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from support import make_feeds, run_cli

from optimum_hierarchy import HierarchyRetriever, annotate_hierarchy
from optimum_hierarchy.schema import NODE_MODULE_KEY

DATA = "model.onnx_data"


def _external_copy(source_dir: Path, target: Path, *, strip_nodes: bool = False) -> Path:
    """``model.onnx`` of ``source_dir`` saved with every initializer in ``model.onnx_data``, beside its config."""
    target.mkdir(parents=True)
    shutil.copy(source_dir / "config.json", target / "config.json")
    proto = onnx.load(str(source_dir / "model.onnx"))
    if strip_nodes:
        for node in proto.graph.node:
            del node.metadata_props[:]
    onnx.save(proto, str(target / "model.onnx"), save_as_external_data=True, location=DATA, size_threshold=0)
    assert all(
        t.data_location == onnx.TensorProto.EXTERNAL
        for t in onnx.load(str(target / "model.onnx"), load_external_data=False).graph.initializer
    )
    return target / "model.onnx"


@contextmanager
def _data_absent(directory: Path) -> Iterator[None]:
    """The external data files of ``directory`` are moved away for the block: reading them would fail."""
    hidden = directory.parent / (directory.name + ".hidden")
    hidden.mkdir()
    data_files = [p for p in directory.iterdir() if p.name.endswith(("_data", ".data"))]
    assert data_files
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in data_files}
    for path in data_files:
        path.rename(hidden / path.name)
    try:
        yield
    finally:
        for path in hidden.iterdir():
            path.rename(directory / path.name)
        hidden.rmdir()
    assert {p: hashlib.sha256((directory / p).read_bytes()).hexdigest() for p in digests} == digests


def _external_refs(path: Path) -> dict[str, dict[str, str]]:
    proto = onnx.load(str(path), load_external_data=False)
    return {t.name: {e.key: e.value for e in t.external_data} for t in proto.graph.initializer}


def _outputs(path: Path, feeds: dict[str, np.ndarray] | None = None) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = feeds if feeds is not None else make_feeds(session)
    return session.run(None, feeds), feeds


def test_annotating_after_the_fact_reads_no_weight(plain_exports: dict[str, Path], tmp_path: Path) -> None:
    model = _external_copy(plain_exports["bert"], tmp_path / "ext")
    refs = _external_refs(model)
    with _data_absent(model.parent):
        [annotated] = annotate_hierarchy(model.parent)
        assert annotated.summary.coverage == 1.0
        retriever = HierarchyRetriever(model)
        assert retriever.get_nodes_by_module("encoder.layer.0.attention.self.query")
    assert _external_refs(model) == refs
    expected, feeds = _outputs(plain_exports["bert"] / "model.onnx")
    got, _ = _outputs(model, feeds)
    assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))


def test_optimized_and_reannotated_without_reading_weights(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    model = _external_copy(cli_exports["bert"], tmp_path / "ext")
    out = tmp_path / "o2"
    ORTOptimizer.from_pretrained(model.parent, file_names=["model.onnx"]).optimize(
        AutoOptimizationConfig.O2(), save_dir=out
    )
    optimized = out / "model_optimized.onnx"
    refs = _external_refs(optimized)
    assert any(refs.values())
    proto = onnx.load(str(optimized), load_external_data=False)
    assert not any(node.metadata_props for node in proto.graph.node)  # ORT dropped them
    before, feeds = _outputs(optimized)
    with _data_absent(out):
        completed = run_cli("hierarchy", "annotate", str(out))
        assert "100.0%" in completed.stdout
        fused = HierarchyRetriever(optimized).get_nodes_by_module("encoder.layer.0.attention.self", subtree=True)
        assert "Attention" in {n.op_type for n in fused}
    assert _external_refs(optimized) == refs
    reread = onnx.load(str(optimized), load_external_data=False)
    modules = {n.name: {p.key: p.value for p in n.metadata_props}.get(NODE_MODULE_KEY) for n in reread.graph.node}
    assert all(m is not None for m in modules.values())
    after, _ = _outputs(optimized, feeds)
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
