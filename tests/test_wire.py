"""Reading and rewriting model files without parsing their weights."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from support import make_feeds

from optimum_hierarchy import annotate_hierarchy, read_hierarchy
from optimum_hierarchy.errors import InvalidModelFileError
from optimum_hierarchy.wire import parse_model_bytes, read_model_file, write_model_file

DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")


def _without_values(proto: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for tensor in copy.graph.initializer:
        for field in DATA_FIELDS:
            tensor.ClearField(field)
    return copy


@pytest.mark.parametrize("name", ["vit", "bert", "gpt2"])
def test_light_read_is_the_model_without_weight_values(cli_exports: dict[str, Path], name: str) -> None:
    path = cli_exports[name] / "model.onnx"
    full = onnx.load(str(path))
    assert any(t.raw_data for t in full.graph.initializer)
    with read_model_file(path, light_threshold=0) as light:
        assert light.light
        assert light.proto == _without_values(full)
        assert not any(t.raw_data for t in light.proto.graph.initializer)
        # Unedited, the chunks parse back to the very same model.
        buffer = io.BytesIO()
        write_model_file(light, light.proto, buffer)
        rewritten = onnx.ModelProto()
        rewritten.ParseFromString(buffer.getvalue())
        assert rewritten == full
    with read_model_file(path) as small:  # a tiny model is under the default threshold: parsed whole
        assert not small.light and small.proto == full


def test_edited_light_model_keeps_the_weights(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    path = cli_exports["bert"] / "model.onnx"
    full = onnx.load(str(path))
    with read_model_file(path, light_threshold=0) as light:
        light.proto.graph.node[0].metadata_props.add(key="k", value="v")
        light.proto.metadata_props.add(key="model_key", value="x")
        light.proto.graph.name = "renamed"
        out = tmp_path / "model.onnx"
        with out.open("wb") as f:
            write_model_file(light, light.proto, f)
    edited = onnx.load(str(out))
    full.graph.node[0].metadata_props.add(key="k", value="v")
    full.metadata_props.add(key="model_key", value="x")
    full.graph.name = "renamed"
    assert edited == full
    onnx.checker.check_model(edited, full_check=True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = make_feeds(session)
    assert all(np.array_equal(a, b) for a, b in zip(session.run(None, feeds), reference.run(None, feeds), strict=True))


def test_changing_the_initializers_is_refused(cli_exports: dict[str, Path]) -> None:
    with read_model_file(cli_exports["vit"] / "model.onnx", light_threshold=0) as light:
        edited = onnx.ModelProto()
        edited.CopyFrom(light.proto)
        del edited.graph.initializer[-1]
        with pytest.raises(ValueError, match="initializers"):
            write_model_file(light, edited, io.BytesIO())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not an ONNX model"),
        (b"\x08\x07", "no graph or no opset import"),
        (b"\xff\xff\xff", "does not parse"),
        (b"\x3a\x05ab", "does not parse"),  # a graph field longer than the file
    ],
)
def test_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    for threshold in (0, 1 << 30):
        with pytest.raises(InvalidModelFileError, match=message):
            read_model_file(path, light_threshold=threshold)
    with pytest.raises(InvalidModelFileError, match="no such file"):
        read_model_file(tmp_path / "missing.onnx")
    with pytest.raises(InvalidModelFileError, match="not a file"):
        read_model_file(tmp_path)


def test_parse_bytes_and_the_hierarchy_through_light_reads(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    path = cli_exports["gpt2"] / "model.onnx"
    data = path.read_bytes()
    assert parse_model_bytes(data, path, light_threshold=0).proto == _without_values(onnx.load(str(path)))
    # Annotating through a light read rewrites the file with its weights intact and is idempotent.
    copy = tmp_path / "model.onnx"
    copy.write_bytes(data)
    proto = onnx.load(str(copy))
    for node in proto.graph.node:
        del node.metadata_props[:]
    onnx.save(proto, str(copy))
    annotate_hierarchy(copy)
    assert onnx.load(str(copy)) == onnx.load(str(path))
    assert read_hierarchy(copy).nodes == read_hierarchy(path).nodes
