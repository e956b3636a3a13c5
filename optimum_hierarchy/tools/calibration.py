"""Calibration inputs for a model file: an ``.npz``, or text and images prepared by the preprocessors saved beside it.

* ``.npz``: one array per graph input, by name (``numpy.savez``).
* text: the samples tokenized together (padded to the longest) by the tokenizer saved in the model's
  directory (``tokenizer.save_pretrained(DIR)``); an input the model takes and the tokenizer does not
  give is made as transformers' models make it: ``attention_mask`` all ones, ``token_type_ids`` zeros,
  ``position_ids`` from the attention mask (``cumsum - 1``, 1 on padding, as ``generate`` does).
  Padding positions are part of the outputs compared.
* images: opened with PIL, converted to RGB and processed together by the image processor saved there
  (``image_processor.save_pretrained(DIR)``).

Every set of inputs is checked against the model's graph inputs (:func:`check_feeds`): the same names,
the element type, the rank and each fixed dimension; a mismatch names the source and what the model
expects. Text and image inputs are cast to the model's integer / float types.
"""

from __future__ import annotations

__all__ = ["check_feeds", "image_feeds", "load_npz", "read_text_file", "text_feeds"]

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from optimum_hierarchy.errors import HierarchyError

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def load_npz(path: str | os.PathLike[str], *, what: str = "--inputs") -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, by name; an error naming ``what`` if it is missing, unreadable or empty."""
    path = Path(path)
    if not path.is_file():
        raise HierarchyError(f"{what} {path}: no such file; give an .npz with one array per graph input.")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (ValueError, OSError) as e:
        raise HierarchyError(f"{what} {path}: not a readable .npz ({e}).") from e
    if not arrays:
        raise HierarchyError(
            f"{what} {path}: the file holds no array; save one per graph input (numpy.savez(path, input_ids=...))."
        )
    return arrays


def read_text_file(path: str | os.PathLike[str], *, what: str = "--texts") -> list[str]:
    """The samples of a text file, one a line (blank lines skipped); an error if there is none."""
    path = Path(path)
    if not path.is_file():
        raise HierarchyError(f"{what} {path}: no such file; give a UTF-8 text file with one sample a line.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise HierarchyError(f"{what} {path}: cannot be read as UTF-8 text ({e}).") from e
    samples = [line.strip() for line in lines if line.strip()]
    if not samples:
        raise HierarchyError(f"{what} {path}: the file has no sample; write one sentence a line.")
    return samples


def _model_dir(model: str | os.PathLike[str]) -> Path:
    path = Path(model)
    return path if path.is_dir() else path.parent


def text_feeds(model: str | os.PathLike[str], texts: Sequence[str], *, what: str = "--text") -> dict[str, np.ndarray]:
    """``texts`` tokenized by the tokenizer saved beside ``model`` (a file or its directory), as the model's inputs."""
    if not texts or not any(t.strip() for t in texts):
        raise HierarchyError(f"{what}: no text given; give at least one non-empty sample.")
    directory = _model_dir(model)
    if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        raise HierarchyError(
            f"{what}: no tokenizer in {directory} (no {' or '.join(_TOKENIZER_FILES)}). Save the model's tokenizer "
            f"there (AutoTokenizer.from_pretrained(MODEL_ID).save_pretrained('{directory}')), or give --inputs "
            "FILE.npz."
        )
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)  # type: ignore[no-untyped-call,unused-ignore]
    except (OSError, ValueError, KeyError) as e:
        raise HierarchyError(f"{what}: the tokenizer in {directory} cannot be loaded ({e}).") from e
    if len(texts) > 1 and tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise HierarchyError(
                f"{what}: the tokenizer in {directory} has no padding token, and several samples must be padded to "
                "one length; give one sample, or save a tokenizer with a pad_token."
            )
        tokenizer.pad_token = tokenizer.eos_token  # what generation pipelines do; the mask hides it
    encoded = tokenizer(list(texts), padding=True, return_tensors="np")
    return _complete(model, {k: np.asarray(v) for k, v in encoded.items()}, what=what)


def image_feeds(model: str | os.PathLike[str], images: Sequence[str | os.PathLike[str]]) -> dict[str, np.ndarray]:
    """``images`` (paths) processed by the image processor saved beside ``model``, as the model's inputs."""
    what = "--images"
    if not images:
        raise HierarchyError(f"{what}: no image given.")
    directory = _model_dir(model)
    if not any((directory / name).is_file() for name in _PROCESSOR_FILES):
        raise HierarchyError(
            f"{what}: no image processor in {directory} (no {' or '.join(_PROCESSOR_FILES)}). Save the model's "
            f"image processor there (AutoImageProcessor.from_pretrained(MODEL_ID).save_pretrained('{directory}')), "
            "or give --inputs FILE.npz."
        )
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:
        raise HierarchyError(f"{what}: reading images needs Pillow (pip install pillow).") from e
    from transformers import AutoImageProcessor

    opened = []
    for item in images:
        path = Path(item)
        if not path.is_file():
            raise HierarchyError(f"{what} {path}: no such file.")
        try:
            with Image.open(path) as image:
                opened.append(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise HierarchyError(f"{what} {path}: not an image PIL can read ({e}).") from e
    try:
        processor = AutoImageProcessor.from_pretrained(  # type: ignore[no-untyped-call,unused-ignore]
            str(directory), local_files_only=True
        )
    except (OSError, ValueError, KeyError) as e:
        raise HierarchyError(f"{what}: the image processor in {directory} cannot be loaded ({e}).") from e
    processed = processor(images=opened, return_tensors="np")
    return _complete(model, {k: np.asarray(v) for k, v in processed.items()}, what=what)


def _graph_inputs(model: str | os.PathLike[str] | onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    if isinstance(model, onnx.ModelProto):
        proto = model
    else:
        from optimum_hierarchy.tools.runtime import model_file
        from optimum_hierarchy.wire import read_model_file

        with read_model_file(model_file(model)) as opened:  # the graph only
            proto = opened.proto
    initializers = {t.name for t in proto.graph.initializer}
    return {v.name: v for v in proto.graph.input if v.name not in initializers}


def _complete(model: str | os.PathLike[str], produced: Mapping[str, np.ndarray], *, what: str) -> dict[str, np.ndarray]:
    """The preprocessor's arrays the model takes, the ones it lacks made up, each cast to the model's type."""
    wanted = _graph_inputs(model)
    feeds: dict[str, np.ndarray] = {}
    for name, value in wanted.items():
        if name in produced:
            array = produced[name]
        elif name == "attention_mask" and "input_ids" in produced:
            array = np.ones_like(produced["input_ids"])
        elif name == "token_type_ids" and "input_ids" in produced:
            array = np.zeros_like(produced["input_ids"])
        elif name == "position_ids" and ("attention_mask" in produced or "input_ids" in produced):
            mask = produced.get("attention_mask", np.ones_like(produced.get("input_ids")))
            array = np.where(mask == 0, 1, np.cumsum(mask, axis=-1) - 1)
        else:
            raise HierarchyError(
                f"{what}: the model takes {name!r}, which its preprocessor does not give "
                f"(it gives {', '.join(sorted(produced))}); give all inputs with --inputs FILE.npz."
            )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        feeds[name] = np.asarray(array).astype(dtype)
    return feeds


def check_feeds(
    model: str | os.PathLike[str] | onnx.ModelProto, feeds: Mapping[str, Any], *, what: str
) -> dict[str, np.ndarray]:
    """``feeds`` if they are the model's inputs (names, element types, ranks, fixed dimensions); else an error
    that names ``what`` (the argument or file they come from) and what the model expects."""
    wanted = _graph_inputs(model)
    arrays = {k: np.asarray(v) for k, v in feeds.items()}
    expected = ", ".join(f"{n} ({_describe(v)})" for n, v in wanted.items())
    if missing := [n for n in wanted if n not in arrays]:
        raise HierarchyError(f"{what}: no array for the input {missing[0]!r}; the model takes {expected}.")
    if extra := [n for n in arrays if n not in wanted]:
        raise HierarchyError(f"{what}: {extra[0]!r} is not an input of the model; it takes {expected}.")
    for name, value in wanted.items():
        array = arrays[name]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        if array.dtype != dtype:
            raise HierarchyError(
                f"{what}: {name!r} is {array.dtype}, the model takes {dtype} ({_describe(value)}); "
                f"save it as {dtype} (array.astype(numpy.{dtype}))."
            )
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and array.ndim != len(dims):
            raise HierarchyError(
                f"{what}: {name!r} has {array.ndim} dimensions {list(array.shape)}; the model takes "
                f"{len(dims)} ({_describe(value)})."
            )
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value") and array.shape[axis] != dim.dim_value:
                raise HierarchyError(
                    f"{what}: {name!r} has size {array.shape[axis]} on axis {axis}; the model takes "
                    f"{dim.dim_value} there ({_describe(value)})."
                )
    return {n: arrays[n] for n in wanted}


def _describe(value: onnx.ValueInfoProto) -> str:
    tensor = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type) if tensor.elem_type else "?"
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in tensor.shape.dim]
    return f"{dtype}{dims}"
