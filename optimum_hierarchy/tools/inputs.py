"""Inputs of the right names, types and shapes for an exported model, generated without the hub.

Symbolic dimensions are filled from Optimum's ``DEFAULT_DUMMY_SHAPES`` (``batch_size`` 2,
``sequence_length`` 16, ...), from the model's ``config.json`` where it knows better (``height`` and
``width`` from ``image_size``), for a component of transformers' exporter from the shapes its
``export.json`` records for the traced inputs (and a KV cache input's length axis,
``[batch, heads, length, head_dim]``, ``DEFAULT_PAST_SEQUENCE_LENGTH``), and from the user's ``shapes``,
which win. Sums of dimensions as
Optimum writes them (``past_sequence_length + sequence_length``) are evaluated. Token ids stay
below the vocabulary size (from the config, or from the embedding table the ids index).
"""

from __future__ import annotations

__all__ = ["DEFAULT_PAST_SEQUENCE_LENGTH", "generate_inputs", "input_dimensions", "parse_shapes"]

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from optimum_hierarchy.errors import HierarchyError

DEFAULT_PAST_SEQUENCE_LENGTH = 8
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_shapes(items: Sequence[str]) -> dict[str, int]:
    """``["batch_size=1", "sequence_length=128"]`` -> ``{"batch_size": 1, "sequence_length": 128}``."""
    shapes: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not _NAME.match(name.strip()) or not value.strip().isdigit():
            raise HierarchyError(
                f"--shape {item!r}: expected NAME=VALUE with a non-negative integer, e.g. batch_size=1."
            )
        shapes[name.strip()] = int(value)
    return shapes


def input_dimensions(
    config: Mapping[str, Any] | None = None, shapes: Mapping[str, int] | None = None
) -> dict[str, int]:
    """The value of each symbolic dimension name: Optimum's defaults, then the config, then ``shapes``."""
    from optimum.utils import DEFAULT_DUMMY_SHAPES

    dims: dict[str, int] = {**DEFAULT_DUMMY_SHAPES, "past_sequence_length": DEFAULT_PAST_SEQUENCE_LENGTH}
    if config:
        image_size = config.get("image_size")
        if isinstance(image_size, int):
            dims["height"] = dims["width"] = image_size
        elif isinstance(image_size, (list, tuple)) and len(image_size) == 2:
            dims["height"], dims["width"] = int(image_size[0]), int(image_size[1])
        if isinstance(config.get("num_channels"), int):
            dims["num_channels"] = config["num_channels"]
    dims.update(shapes or {})
    return dims


def _dimension(dim: onnx.TensorShapeProto.Dimension, dims: Mapping[str, int], input_name: str) -> int:
    if dim.HasField("dim_value"):
        return int(dim.dim_value)
    param = dim.dim_param
    terms = [t.strip() for t in param.split("+")] if param else []
    if terms and all(t in dims or t.isdigit() for t in terms):
        return sum(int(t) if t.isdigit() else dims[t] for t in terms)
    unknown = next((t for t in terms if t not in dims and not t.isdigit()), param or "(unnamed)")
    raise HierarchyError(
        f"Input {input_name!r} has a dimension {unknown!r} with no value: give it one with --shape {unknown}=N "
        f"(or shapes={{{unknown!r}: N}})."
    )


def _read_config(config: str | os.PathLike[str] | Mapping[str, Any] | None, model_path: Path | None) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    path = Path(config) if config is not None else (model_path.parent / "config.json" if model_path else None)
    if path is not None and path.is_dir():
        path = path / "config.json"
    if path is None or not path.is_file():
        if config is not None:
            raise HierarchyError(f"{path}: no such config file; give the model's config.json or its directory.")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HierarchyError(f"{path}: not a readable JSON config ({e}).") from e
    return data if isinstance(data, dict) else {}


def _index_bound(model: onnx.ModelProto, input_name: str) -> int | None:
    """The number of rows of the table a ``Gather`` indexes with this input (dims only; no data read)."""
    tables = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == input_name:
            table = tables.get(node.input[0])
            if table is not None and table.dims:
                return int(table.dims[0])
    return None


def generate_inputs(
    model: str | os.PathLike[str] | onnx.ModelProto,
    *,
    shapes: Mapping[str, int] | None = None,
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    seed: int = 0,
    source: str | os.PathLike[str] | None = None,
) -> dict[str, np.ndarray]:
    """One deterministic feed per graph input of ``model`` (a path or a proto; external data is not read).

    ``config`` is the model's ``config.json`` (a path, its directory or a dict); by default the one
    beside the model file, if any. ``source``: the file a proto was read from (for the files beside it).
    A dimension no source names raises a :class:`HierarchyError` that says which ``--shape`` to give.
    """
    path = Path(source) if source is not None else None if isinstance(model, onnx.ModelProto) else Path(model)
    if not isinstance(model, onnx.ModelProto):
        from optimum_hierarchy.wire import read_model_file

        with read_model_file(Path(model)) as opened:  # inputs and weight shapes only: no weight values
            proto = opened.proto
    else:
        proto = model
    cfg = _read_config(config, path)
    dims = input_dimensions(cfg, {**(_traced_dimensions(path, proto) if path is not None else {}), **(shapes or {})})
    initializers = {t.name for t in proto.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise HierarchyError(f"Input {value.name!r} is not a tensor; inputs cannot be generated for it.")
        shape = tuple(_dimension(d, dims, value.name) for d in tensor_type.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        feeds[value.name] = _values(proto, value.name, shape=shape, dtype=dtype, config=cfg, dims=dims, rng=rng)
    return feeds


def _is_cache(name: str) -> bool:
    """An input of transformers' exporter holding a KV cache layer (``input.cache.layers.0.keys``)."""
    return ".cache." in f".{name}" and name.endswith((".keys", ".values"))


def _traced_dimensions(path: Path, proto: onnx.ModelProto) -> dict[str, int]:
    """For a component file of transformers' exporter: each symbolic dimension of an input, from the shape
    ``export.json`` records for that traced input; a cache input's length axis is the past length."""
    from optimum_hierarchy.trees.export_record import exported_component_entry

    found = exported_component_entry(path)
    if found is None:
        return {}
    kwargs = (found[1].get("metadata") or {}).get("kwargs") or {}
    dims: dict[str, int] = {}
    for value in proto.graph.input:
        shape_dims = list(value.type.tensor_type.shape.dim)
        record = kwargs.get(value.name.removeprefix("input.")) if isinstance(kwargs, dict) else None
        traced = record.get("shape") if isinstance(record, dict) else None
        if isinstance(traced, list) and len(traced) == len(shape_dims):
            pairs = list(zip(shape_dims, traced, strict=True))
        elif _is_cache(value.name) and len(shape_dims) == 4:
            pairs = [(shape_dims[2], DEFAULT_PAST_SEQUENCE_LENGTH)]
        else:
            continue
        for dim, size in pairs:
            if dim.dim_param and _NAME.match(dim.dim_param) and isinstance(size, int) and size >= 0:
                dims.setdefault(dim.dim_param, size)
    return dims


def _values(
    proto: onnx.ModelProto,
    name: str,
    *,
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    config: Mapping[str, Any],
    dims: Mapping[str, int],
    rng: np.random.Generator,
) -> np.ndarray:
    if dtype == np.bool_:
        return np.ones(shape, dtype=np.bool_)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if not np.issubdtype(dtype, np.integer):
        raise HierarchyError(f"Input {name!r} has type {dtype}; inputs cannot be generated for it.")
    if "attention_mask" in name or name.endswith("_mask"):
        return np.ones(shape, dtype=dtype)
    if name == "token_type_ids":
        return np.zeros(shape, dtype=dtype)
    if name.endswith("position_ids") and shape:
        past = 0
        if any(i.name.startswith("past_key_values") for i in proto.graph.input):
            past = dims.get("past_sequence_length", 0)
        cache = next((i for i in proto.graph.input if _is_cache(i.name)), None)
        if cache is not None and len(cache.type.tensor_type.shape.dim) == 4:  # positions continue after the cache
            past = _dimension(cache.type.tensor_type.shape.dim[2], dims, cache.name)
        return np.broadcast_to(np.arange(past, past + shape[-1], dtype=dtype), shape).copy()
    vocab = config.get("vocab_size")
    bound = _index_bound(proto, name) or (vocab if isinstance(vocab, int) and vocab > 0 else None) or 2
    return rng.integers(0, bound, size=shape, dtype=dtype)
