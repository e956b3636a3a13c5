"""Read and rewrite ONNX model files without parsing or copying their weights.

A model file is a protobuf ``ModelProto`` whose bulk is the ``graph.initializer`` tensors. Reading
the hierarchy, or writing it, needs everything else: the nodes and the model's metadata. This
module walks the protobuf wire format of the file (memory-mapped, so weight pages are never read)
down to the graph's fields, and parses everything but the initializers' data with protobuf:

* :func:`read_model_file` gives a *light* ``ModelProto``: the whole model, except that each main-graph
  initializer carries only its header (name, type, dims, external-data reference), no values;
* :func:`write_model_file` writes the file for an edited light proto: the edited fields,
  serialized again, and each initializer copied byte for byte from the original file.

Protobuf readers accept fields in any order and keep the order of the entries of a repeated field,
so the rewritten file parses to the edited model with the original weights. The light proto is a
read-only view of the weights: do not pass it where tensor values are needed.
"""

from __future__ import annotations

__all__ = ["LIGHT_THRESHOLD", "PROTOBUF_LIMIT", "ModelFile", "parse_model_bytes", "read_model_file", "write_model_file"]

import dataclasses
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import onnx
from google.protobuf.message import DecodeError

from optimum_hierarchy.errors import InvalidModelFileError

_GRAPH = 7  # ModelProto.graph
_INITIALIZER = 5  # GraphProto.initializer
# TensorProto fields that hold values (float_data, int32_data, string_data, int64_data, raw_data,
# double_data, uint64_data); everything else is header.
_TENSOR_DATA_FIELDS = frozenset({4, 5, 6, 7, 9, 10, 11})
_LENGTH_DELIMITED = 2

PROTOBUF_LIMIT = 2**31 - 1
"""Protobuf's limit for one serialized message: no ONNX tool reads a model file larger than this."""

LIGHT_THRESHOLD = 64 * 1024 * 1024
"""Files smaller than this are parsed whole by protobuf (faster than walking their fields in Python)."""


class _ParseWholeError(Exception):
    """The file is parsed by protobuf as a whole."""


def _varint(data: memoryview | bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise DecodeError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields(data: memoryview | bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """``(field number, wire type, entry start, payload start, entry end)`` of each field in ``data[start:end]``."""
    pos = start
    while pos < end:
        entry = pos
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos, end)
            payload = pos
        elif wire == 1:
            payload, pos = pos, pos + 8
        elif wire == _LENGTH_DELIMITED:
            length, payload = _varint(data, pos, end)
            pos = payload + length
        elif wire == 5:
            payload, pos = pos, pos + 4
        else:
            raise DecodeError(f"unsupported wire type {wire} (field {number})")
        if pos > end or number == 0:
            raise DecodeError("field runs past the end of its message")
        yield number, wire, entry, payload, pos


@dataclasses.dataclass
class ModelFile:
    """A model file opened for reading its structure; close it (or use ``with``) to unmap it."""

    path: Path | None
    proto: onnx.ModelProto
    """The light proto: main-graph initializers have headers but no values (see ``light``)."""
    _buffer: mmap.mmap | bytes
    _initializers: list[tuple[int, int]] | None
    """(start, end) in the file of each main-graph initializer entry (key, length and payload);
    ``None`` when the proto was parsed whole (a small file) and is written by serializing it."""

    @property
    def size(self) -> int:
        """Bytes of the file (or of the serialized model) read."""
        return len(self._buffer)

    @property
    def light(self) -> bool:
        """Whether initializer values were left out of ``proto`` (large files)."""
        return self._initializers is not None

    def close(self) -> None:
        if isinstance(self._buffer, mmap.mmap):
            self._buffer.close()

    def __enter__(self) -> ModelFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_model_file(path: str | os.PathLike[str], *, light_threshold: int = LIGHT_THRESHOLD) -> ModelFile:
    """Parse ``path`` into a light ``ModelProto``, reading no weight values (see the module docstring).

    External data files are never opened. A file under ``light_threshold`` bytes is parsed whole.

    Raises:
        InvalidModelFileError: the path is missing, unreadable, or not an ONNX model.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidModelFileError(f"{path}: no such file. Pass the path of an .onnx file.")
    if not path.is_file():
        raise InvalidModelFileError(f"{path}: not a file. Pass the path of an .onnx file, not a directory.")
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < light_threshold or size == 0:
                buffer: mmap.mmap | bytes = f.read()
            else:
                buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise InvalidModelFileError(f"{path}: cannot be read ({e}).") from e
    return _parse(buffer, path, light=size >= light_threshold)


def parse_model_bytes(
    data: bytes, where: str | os.PathLike[str], *, light_threshold: int = LIGHT_THRESHOLD
) -> ModelFile:
    """:func:`read_model_file` for a model's serialized bytes (``where`` names it in errors)."""
    return _parse(data, Path(where), light=len(data) >= light_threshold)


def _parse(buffer: mmap.mmap | bytes, path: Path, *, light: bool) -> ModelFile:
    try:
        try:
            if not light:
                raise _ParseWholeError
            proto, initializers = _parse_light(buffer)
        except _ParseWholeError:
            proto, initializers = onnx.ModelProto(), None
            proto.ParseFromString(buffer if isinstance(buffer, bytes) else buffer[:])
        if not proto.HasField("graph") or not proto.opset_import:
            raise InvalidModelFileError(
                f"{path}: parses as protobuf but is not an ONNX model (no graph or no opset import)."
            )
    except (DecodeError, ValueError, RuntimeError) as e:
        if isinstance(buffer, mmap.mmap):
            buffer.close()
        raise InvalidModelFileError(f"{path}: not an ONNX model (it does not parse as ONNX protobuf: {e}).") from e
    except InvalidModelFileError:
        if isinstance(buffer, mmap.mmap):
            buffer.close()
        raise
    return ModelFile(path=path, proto=proto, _buffer=buffer, _initializers=initializers)


def _parse_light(buffer: mmap.mmap | bytes) -> tuple[onnx.ModelProto, list[tuple[int, int]]]:
    view = memoryview(buffer)
    try:
        outer = bytearray()
        graph_parts = bytearray()
        headers: list[bytes] = []
        spans: list[tuple[int, int]] = []
        graphs = 0
        for number, wire, entry, payload, end in _fields(view, 0, len(view)):
            if number != _GRAPH or wire != _LENGTH_DELIMITED:
                outer += view[entry:end]
                continue
            graphs += 1
            for g_number, g_wire, g_entry, g_payload, g_end in _fields(view, payload, end):
                if g_number == _INITIALIZER and g_wire == _LENGTH_DELIMITED:
                    header = bytearray()
                    for t_number, _, t_entry, _, t_end in _fields(view, g_payload, g_end):
                        if t_number not in _TENSOR_DATA_FIELDS:
                            header += view[t_entry:t_end]
                    headers.append(bytes(header))
                    spans.append((g_entry, g_end))
                else:
                    graph_parts += view[g_entry:g_end]
        if graphs > 1:
            raise _ParseWholeError  # several graph entries merge on parse: rare, left to protobuf
        proto = onnx.ModelProto()
        proto.ParseFromString(bytes(outer))
        if graphs:
            proto.graph.ParseFromString(bytes(graph_parts))
            for tensor_header in headers:
                proto.graph.initializer.add().ParseFromString(tensor_header)
        return proto, spans
    finally:
        view.release()


def write_model_file(source: ModelFile, proto: onnx.ModelProto, f: BinaryIO) -> None:
    """Write ``proto`` (``source.proto``, edited) with ``source``'s initializers to the open file ``f``.

    The main-graph initializers must be those of ``source``, unchanged and in the same order (only
    their number and names are checked); everything else may have been edited.
    """
    if source._initializers is None:
        f.write(proto.SerializeToString())
        return
    names = [t.name for t in proto.graph.initializer]
    if len(names) != len(source._initializers) or names != [t.name for t in source.proto.graph.initializer]:
        raise ValueError("the edited model's initializers are not those of the file it was read from")
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    model.ClearField("graph")
    graph = onnx.GraphProto()
    graph.CopyFrom(proto.graph)
    del graph.initializer[:]
    graph_head = graph.SerializeToString()
    length = len(graph_head) + sum(end - start for start, end in source._initializers)
    f.write(model.SerializeToString())
    f.write(_encode_varint(_GRAPH << 3 | _LENGTH_DELIMITED) + _encode_varint(length))
    f.write(graph_head)
    with memoryview(source._buffer) as view:
        for start, end in source._initializers:
            with view[start:end] as chunk:
                f.write(chunk)
