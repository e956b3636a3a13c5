"""Behaviour pinned: the hierarchy metadata of fixed exports equals a stored copy, key for key, node for node.

A refactoring must not change what is written. The stored copies (``tests/golden/*.json``) hold every
``pkg.optimum_hierarchy.*`` model key as written, and per node its name, op type, ``namespace`` and
``pkg.optimum_hierarchy.*`` keys, of the tiny models that ``optimum-cli export onnx --hierarchy``
exports (the TorchScript path, on the pinned optimum-onnx stack) and, with and without ORTOptimizer's
O2, then re-attributed. The exporter's own keys (``pkg.torch.onnx.*``: stack traces with local paths)
are not ours and are left out.

Each copy also holds the SHA-256 of the whole file as written: outputs, weights, graph and every
key, byte for byte. Those bytes also depend on how onnx and protobuf serialize, so their versions are
stored too, and the bytes are compared (after the metadata) only under the same ones.

The copies were recorded with the versions stored beside them; with other versions of torch,
transformers or optimum the exporter itself may write other graphs, so the test skips and says so.
After an intended change of what is written, record again and review the diff::

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_golden.py
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zlib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import onnx
import pytest

GOLDEN = Path(__file__).parent / "golden"
OURS = "pkg.optimum_hierarchy."
EXPORT = ("torch", "transformers", "optimum", "optimum-onnx")  # what the export's graph depends on
SERIALIZATION = ("onnx", "protobuf")  # and what its bytes depend on besides

pytestmark = pytest.mark.optimum_onnx


def written(path: Path) -> dict[str, Any]:
    """What this package wrote into a file, read with plain onnx."""
    proto = onnx.load(str(path), load_external_data=False)
    nodes = []
    for node in proto.graph.node:
        props = {p.key: p.value for p in node.metadata_props if p.key.startswith(OURS) or p.key == "namespace"}
        nodes.append({"name": node.name, "op_type": node.op_type, **dict(sorted(props.items()))})
    model = {p.key: decoded(p.value) for p in proto.metadata_props if p.key.startswith(OURS)}
    return {"model": dict(sorted(model.items())), "nodes": nodes}


def decoded(value: str) -> Any:
    """JSON as data; a zlib-compressed value (base64) decompressed first, since zlib builds may differ."""
    try:
        return json.loads(value)
    except ValueError:
        return json.loads(zlib.decompress(base64.b64decode(value)))


def check(name: str, path: Path, packages: tuple[str, ...] = EXPORT) -> None:
    """The metadata this package wrote into ``path`` equals the copy stored as ``name``."""
    golden = GOLDEN / f"{name}.json"
    current = written(path)
    versions = {package: version(package) for package in packages}
    file_bytes = {
        "versions": {package: version(package) for package in (*packages, *SERIALIZATION)},
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        record = {"versions": versions, "bytes": file_bytes, **current}
        golden.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        return
    stored = json.loads(golden.read_text(encoding="utf-8"))
    if stored["versions"] != versions:
        pytest.skip(f"{golden.name} was recorded with {stored['versions']}, this is {versions}; record it again")
    assert current["model"] == stored["model"]
    assert len(current["nodes"]) == len(stored["nodes"])
    for got, want in zip(current["nodes"], stored["nodes"], strict=True):
        assert got == want
    if stored["bytes"]["versions"] != file_bytes["versions"]:
        recorded = stored["bytes"]["versions"]
        pytest.skip(f"{golden.name}: the metadata is unchanged; the bytes were recorded with {recorded}")
    assert file_bytes["sha256"] == stored["bytes"]["sha256"], f"{path} is not byte for byte the file recorded"


@pytest.mark.parametrize("name", ["bert", "gpt2", "vit"])
def test_export_metadata_is_unchanged(name: str, cli_exports: dict[str, Path]) -> None:
    check(f"export-{name}", cli_exports[name] / "model.onnx")


def test_optimized_and_reattributed_metadata_is_unchanged(
    cli_exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    from optimum_hierarchy import annotate_hierarchy

    out = tmp_path_factory.mktemp("golden_o2")
    model = ORTModelForFeatureExtraction.from_pretrained(cli_exports["bert"])
    ORTOptimizer.from_pretrained(model).optimize(AutoOptimizationConfig.O2(), out)
    annotate_hierarchy(out)
    check("o2-bert", out / "model_optimized.onnx", (*EXPORT, "onnxruntime"))
