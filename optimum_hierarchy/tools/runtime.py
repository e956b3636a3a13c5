"""ONNX Runtime sessions for the module tools: optimization levels by name, and intermediate tensors as outputs."""

from __future__ import annotations

__all__ = [
    "OPTIMIZATION_LEVELS",
    "make_session",
    "model_file",
    "ort_errors",
    "ort_optimization_level",
    "run_with_tensors",
]

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx.external_data_helper import uses_external_data

from optimum_hierarchy.errors import HierarchyError, InvalidModelFileError
from optimum_hierarchy.tools.choices import OPTIMIZATION_LEVELS


def model_file(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or the one ``.onnx`` file of the directory ``path``."""
    path = Path(path)
    if not path.is_dir():
        if not path.exists():
            raise InvalidModelFileError(f"{path}: no such file or directory. Pass an .onnx file or its directory.")
        return path
    files = sorted(path.glob("*.onnx"))
    if not files:
        raise InvalidModelFileError(f"{path}: no .onnx file in this directory. Pass an .onnx file.")
    if len(files) > 1:
        names = ", ".join(f.name for f in files)
        raise InvalidModelFileError(f"{path}: several .onnx files ({names}); pass the one to use.")
    return files[0]


def ort_errors() -> tuple[type[BaseException], ...]:
    """The exceptions ONNX Runtime raises (its own pybind11 types, which share no base class but Exception)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    found = [getattr(state, name) for name in dir(state)]
    return (RuntimeError, *(e for e in found if isinstance(e, type) and issubclass(e, Exception)))


def ort_optimization_level(name: str) -> Any:
    """``GraphOptimizationLevel`` of a name in :data:`OPTIMIZATION_LEVELS`."""
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if name not in levels:
        raise HierarchyError(f"Unknown optimization level {name!r}: choose one of {', '.join(OPTIMIZATION_LEVELS)}.")
    return levels[name]


def make_session(
    model: str | os.PathLike[str] | onnx.ModelProto,
    *,
    optimization_level: str = "all",
    extra_outputs: Sequence[str] = (),
    base_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """A CPU ``InferenceSession`` of ``model``, with ``extra_outputs`` (intermediate tensors) as outputs.

    ``base_dir`` is where a proto's external data lives (a path's own directory by default). With
    extra outputs and external data, the edited graph is written next to the data for the time
    it takes to load, then removed.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort_optimization_level(optimization_level)
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if isinstance(model, onnx.ModelProto):
        proto, directory = model, Path(base_dir) if base_dir is not None else None
    elif not extra_outputs:
        return _session(lambda: ort.InferenceSession(str(model), options, providers=providers), model)
    else:
        from optimum_hierarchy.annotation.file import load_model_proto

        proto, directory = load_model_proto(model), Path(model).parent
    # The extra outputs are appended to the proto for the time it takes to serialize it, then removed
    # (no copy of the weights).
    outputs = len(proto.graph.output)
    existing = {o.name for o in proto.graph.output}
    try:
        proto.graph.output.extend(
            onnx.ValueInfoProto(name=n) for n in dict.fromkeys(extra_outputs) if n not in existing
        )
        data = proto.SerializeToString()
    finally:
        del proto.graph.output[outputs:]
    if directory is None or not any(uses_external_data(t) for t in proto.graph.initializer):
        return _session(lambda: ort.InferenceSession(data, options, providers=providers), "model")
    # Hidden and not *.onnx, so that a kill -9 cannot leave what a directory scan takes for a model.
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".hierarchy-", suffix=".onnx.tmp", delete=False) as f:
        f.write(data)
    try:
        return _session(lambda: ort.InferenceSession(f.name, options, providers=providers), f.name)
    finally:
        os.unlink(f.name)


def _session(create: Any, what: object) -> Any:
    try:
        return create()
    except ort_errors() as e:
        raise HierarchyError(f"{what}: ONNX Runtime cannot load it: {e}") from e


def run_with_tensors(
    model: str | os.PathLike[str] | onnx.ModelProto,
    names: Sequence[str],
    feeds: Mapping[str, np.ndarray],
    *,
    optimization_level: str = "all",
    base_dir: str | os.PathLike[str] | None = None,
) -> dict[str, np.ndarray]:
    """Run ``model`` once on ``feeds`` and return the values of the tensors ``names`` (graph outputs included).

    ``base_dir``: where a proto's external data lives (see :func:`make_session`)."""
    session = make_session(model, optimization_level=optimization_level, extra_outputs=names, base_dir=base_dir)
    outputs = [o.name for o in session.get_outputs()]
    try:
        values = session.run(None, dict(feeds))
    except ort_errors() as e:
        raise HierarchyError(f"ONNX Runtime failed to run the model on the given inputs: {e}") from e
    by_name = dict(zip(outputs, values, strict=True))
    return {n: by_name[n] for n in names}
