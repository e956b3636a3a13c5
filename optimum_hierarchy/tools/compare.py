"""Compare an annotated ONNX model with its PyTorch model, module by module.

Both run on the same inputs: PyTorch with a forward hook on every module, ONNX Runtime with every
module's output tensors exposed as graph outputs. A module's output tensors are the ones recorded
at export (:func:`~optimum_hierarchy.provenance.module_outputs`): optimizers and quantizers keep the
names of the tensors a fused subgraph produced, so where such a tensor still exists it holds the
same quantity. The ONNX counterpart of the module's PyTorch output (the first floating-point tensor
it returns) is the last of those with the same shape. A module is not compared when it has no
node (folded away at export, e.g. ``Dropout``), when its output tensor no longer exists (e.g. a
``Linear`` whose bias ``Add`` went into a ``SkipLayerNormalization``), when it ran more than once,
or when no output tensor has the shape of its PyTorch output. Files annotated without export-time
capture fall back to the module's current boundary outputs, skipping modules that lost nodes to a
fused node of an ancestor.

The first divergence is the first module, in the order PyTorch modules *finish*, whose difference
exceeds ``atol + rtol * max|reference|``: the innermost module where the values start to differ.
Each module's ``added`` error is its relative error minus that of the last compared module that
finished before it started (its input, for a sequential model); the finest compared module with
the largest ``added`` error is reported as the one that hurts most (for a quantized model: the
layer quantization hurts most).
"""

from __future__ import annotations

__all__ = ["Comparison", "ModuleComparison", "compare_with_pytorch", "load_pytorch_model"]

import dataclasses
import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from optimum_hierarchy.annotation.file import load_model_proto
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.modules import within
from optimum_hierarchy.provenance import decode_module_outputs
from optimum_hierarchy.retriever import HierarchyRetriever
from optimum_hierarchy.schema import read_props
from optimum_hierarchy.tools.boundary import module_boundary, tensor_types
from optimum_hierarchy.tools.inputs import generate_inputs
from optimum_hierarchy.tools.runtime import run_with_tensors
from optimum_hierarchy.trees.live_model import qualified_class_name

logger = logging.getLogger(__name__)

COMPARED = "compared"
NO_NODES = "no nodes"
FUSED = "output fused away"
CALLED_TWICE = "ran more than once"
NO_COUNTERPART = "no tensor of its output's shape"
NO_OUTPUT = "no floating-point output"

_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
}


@dataclasses.dataclass(frozen=True)
class ModuleComparison:
    """One module: where it ran, what it was compared with, and how far apart the values are."""

    module: str
    class_name: str
    order: int
    """Position in the order PyTorch modules finished (-1: did not run)."""
    status: str
    tensor: str | None = None
    """The ONNX tensor compared with the module's output."""
    shape: tuple[int, ...] = ()
    max_abs: float | None = None
    max_rel: float | None = None
    """``max_abs`` divided by the largest magnitude of the PyTorch output."""
    added: float | None = None
    """``max_rel`` minus the relative error of the module's input (see the module docstring)."""
    exceeds: bool = False


@dataclasses.dataclass(frozen=True)
class Comparison:
    atol: float
    rtol: float
    modules: tuple[ModuleComparison, ...]
    """In the order PyTorch modules finished; modules that did not run last, in tree order."""
    first_divergence: ModuleComparison | None
    worst: ModuleComparison | None
    """Among modules over the tolerance with no compared module below them, the largest ``added``."""

    @property
    def compared(self) -> tuple[ModuleComparison, ...]:
        return tuple(m for m in self.modules if m.status == COMPARED)


def _import_class(qualified: str) -> Any:
    module_name, _, class_name = qualified.rpartition(".")
    if module_name.partition(".")[0] != "transformers":
        # The name comes from the file's metadata, which is untrusted: importing any module it names
        # would run that module's code.
        raise HierarchyError(
            f"The ONNX file names the model class {qualified!r}, which is not a transformers class; only "
            "transformers classes are loaded by name. Load the model yourself and pass it to compare_with_pytorch."
        )
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as e:
        raise HierarchyError(f"Cannot import the exported model's class {qualified!r}: {e}") from e


def load_pytorch_model(model_dir: str | os.PathLike[str], class_name: str, model_type: str | None = None) -> Any:
    """The PyTorch model of ``class_name`` (as recorded at export) from a local model directory.

    Refuses a directory of another ``model_type`` than the export's, and weights that leave any
    parameter of the class uninitialized: comparing with randomly initialized weights means nothing.
    """
    import json

    directory = Path(model_dir)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise HierarchyError(
            f"{directory}: no config.json; --model must be the PyTorch model directory that was exported "
            "(the one given to `optimum-cli export onnx --model`)."
        )
    try:
        found_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as e:
        raise HierarchyError(f"{config_file}: not a readable JSON config ({e}).") from e
    if model_type is not None and found_type != model_type:
        raise HierarchyError(
            f"The ONNX model was exported from a {model_type!r} model; {directory} holds a {found_type!r} model."
        )
    cls = _import_class(class_name)
    if not hasattr(cls, "from_pretrained"):
        raise HierarchyError(f"{class_name} has no from_pretrained; pass the model object to compare_with_pytorch.")
    try:
        model, info = cls.from_pretrained(directory, output_loading_info=True)
    except (OSError, ValueError) as e:
        raise HierarchyError(f"{directory}: cannot load {class_name} from it: {e}") from e
    missing = list(info.get("missing_keys", ()))
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise HierarchyError(
            f"{directory}: its weights leave {len(missing)} parameters of {class_name} uninitialized ({shown}); "
            "pass the directory of the model that was exported."
        )
    return model.eval()


def _tensors(value: Any) -> list[Any]:
    """The tensors in a module's output, in order (tuples, lists, dicts and ModelOutputs flattened)."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _torch_inputs(model: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
    import inspect

    import torch

    kwargs: dict[str, Any] = {}
    past: dict[int, dict[str, Any]] = {}
    for name, value in feeds.items():
        if name.startswith("past_key_values."):
            _, layer, kind = name.split(".")
            past.setdefault(int(layer), {})[kind] = torch.from_numpy(value)
        else:
            kwargs[name] = torch.from_numpy(value)
    if past:
        from transformers import DynamicCache

        legacy: Any = tuple((past[i]["key"], past[i]["value"]) for i in sorted(past))
        kwargs["past_key_values"] = DynamicCache.from_legacy_cache(legacy)
        kwargs["use_cache"] = True
    parameters = inspect.signature(model.forward).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = [k for k in kwargs if k not in parameters and not accepts_any]
    if unknown:
        raise HierarchyError(
            f"The ONNX model's inputs {unknown} are not arguments of {type(model).__name__}.forward; "
            "compare needs a model exported from this class."
        )
    return kwargs


def _run_pytorch(
    model: Any, feeds: Mapping[str, np.ndarray]
) -> tuple[dict[str, list[np.ndarray]], dict[str, int], dict[str, int], dict[str, int]]:
    """Outputs of every module, the order modules started and finished, and how often each ran."""
    import torch

    paths = {id(m): p for p, m in model.named_modules()}
    outputs: dict[str, list[np.ndarray]] = {}
    started: dict[str, int] = {}
    finished: dict[str, int] = {}
    calls: dict[str, int] = {}
    clock = iter(range(1 << 62))

    def pre_hook(module: Any, _args: Any) -> None:
        started.setdefault(paths[id(module)], next(clock))

    def hook(module: Any, _args: Any, output: Any) -> None:
        path = paths[id(module)]
        calls[path] = calls.get(path, 0) + 1
        finished[path] = next(clock)
        outputs[path] = [t.detach().float().numpy().copy() for t in _tensors(output) if t.is_floating_point()]

    handles = []
    training = model.training
    model.eval()  # dropout off for the comparison; the caller's mode is restored below
    try:
        for _, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(hook))
        with torch.no_grad():
            model(**_torch_inputs(model, feeds))
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    return outputs, started, finished, calls


def compare_with_pytorch(
    onnx_model: str | os.PathLike[str],
    model: Any,
    *,
    feeds: Mapping[str, np.ndarray] | None = None,
    shapes: Mapping[str, int] | None = None,
    seed: int = 0,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    optimization_level: str = "all",
) -> Comparison:
    """Compare ``onnx_model`` (an annotated file) with ``model`` (a PyTorch model, or its directory).

    ``feeds`` default to :func:`~optimum_hierarchy.tools.inputs.generate_inputs` of the ONNX model
    with the PyTorch model's config (``shapes`` and ``seed`` go there). Raises :class:`HierarchyError`
    for a file without hierarchy, a model that is not the exported one, or inputs the PyTorch model
    does not take.
    """
    path = Path(onnx_model)
    proto = load_model_proto(path)
    retriever = HierarchyRetriever(proto)
    model = _the_exported_model(path, retriever, model)
    if feeds is None:
        config = model.config.to_dict() if hasattr(model, "config") else None
        feeds = generate_inputs(path, shapes=shapes, config=config, seed=seed)

    torch_outputs, started, finished, calls = _run_pytorch(model, dict(feeds))
    boundaries, status = _boundaries(path, proto, retriever, torch_outputs, calls)
    candidates = list(dict.fromkeys(t for outs in boundaries.values() for t in outs))
    types = tensor_types(proto, candidates)
    floats = [t for t in candidates if types[t].tensor_type.elem_type in _FLOAT_TYPES]
    values = run_with_tensors(path, floats, feeds, optimization_level=optimization_level)
    results = _compare_modules(
        retriever,
        torch_outputs,
        started=started,
        finished=finished,
        boundaries=boundaries,
        status=status,
        values=values,
        atol=atol,
        rtol=rtol,
    )
    return _summary(retriever, results, atol=atol, rtol=rtol)


def _the_exported_model(path: Path, retriever: HierarchyRetriever, model: Any) -> Any:
    """``model``, loaded if it is a directory; an error if it is not the whole model the file was exported from."""
    if retriever.hierarchy.export.root:
        raise HierarchyError(
            f"{path}: holds the submodule {retriever.hierarchy.export.root!r} of a larger model; compare runs whole "
            "models (e.g. a model.onnx exported without --monolith splitting)."
        )
    root_class = retriever.tree[""].class_name
    if isinstance(model, (str, os.PathLike)):
        model = load_pytorch_model(model, root_class, retriever.hierarchy.export.model_type)
    if qualified_class_name(model) != root_class:
        raise HierarchyError(f"{path} was exported from {root_class}, not {qualified_class_name(model)}.")
    return model


def _boundaries(
    path: Path,
    proto: onnx.ModelProto,
    retriever: HierarchyRetriever,
    torch_outputs: Mapping[str, Sequence[np.ndarray]],
    calls: Mapping[str, int],
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Each module's candidate output tensors in the file, or why it is not compared (its status)."""
    exported = decode_module_outputs(read_props(proto))
    if exported is None:
        logger.warning(
            "%s carries no export-time module outputs (annotated by an older version or after the fact): each "
            "module is compared with its current boundary tensors, and modules that lost nodes to a fused ancestor "
            "node are skipped.",
            path,
        )
    produced = {name for node in proto.graph.node for name in node.output if name}
    boundaries: dict[str, tuple[str, ...]] = {}
    status: dict[str, str] = {}
    for info in retriever.get_module_subtree(""):
        m = info.path
        own = retriever.get_nodes_by_module(m, subtree=True)
        spanning = retriever.get_nodes_by_module(m, subtree=True, spanning=True)
        if not spanning:
            status[m] = NO_NODES
        elif calls.get(m, 0) > 1:
            status[m] = CALLED_TWICE
        elif m not in torch_outputs:
            continue
        elif not torch_outputs[m]:
            status[m] = NO_OUTPUT
        elif exported is not None:
            boundaries[m] = tuple(t for t in exported.get(m, ()) if t in produced)
            if not boundaries[m]:
                status[m] = FUSED if exported.get(m) else NO_NODES
        elif len(spanning) > len(own):
            status[m] = FUSED
        else:
            boundaries[m] = (
                module_boundary(proto, retriever, m).outputs if any(n.graph == proto.graph.name for n in own) else ()
            )
    return boundaries, status


def _compare_modules(
    retriever: HierarchyRetriever,
    torch_outputs: Mapping[str, Sequence[np.ndarray]],
    *,
    started: Mapping[str, int],
    finished: Mapping[str, int],
    boundaries: Mapping[str, tuple[str, ...]],
    status: Mapping[str, str],
    values: Mapping[str, np.ndarray],
    atol: float,
    rtol: float,
) -> dict[str, ModuleComparison]:
    """Each module that ran, in the order it finished: its first output against its file tensor."""
    results: dict[str, ModuleComparison] = {}
    order = sorted(finished, key=finished.__getitem__)
    position = {m: i for i, m in enumerate(order)}
    last_rel: list[tuple[int, float]] = []  # (finish time, max_rel) of compared modules, in finish order
    for m in order:
        if m not in retriever.tree:
            continue
        class_name = retriever.tree[m].class_name
        if m in status:
            results[m] = ModuleComparison(m, class_name, position[m], status[m])
            continue
        reference = torch_outputs[m][0]
        match = [t for t in boundaries.get(m, ()) if t in values and values[t].shape == reference.shape]
        if not match:
            results[m] = ModuleComparison(m, class_name, position[m], NO_COUNTERPART, shape=reference.shape)
            continue
        tensor = match[-1]
        diff = np.abs(values[tensor].astype(np.float64) - reference.astype(np.float64))
        scale = float(np.max(np.abs(reference))) if reference.size else 0.0
        max_abs = float(np.max(diff)) if diff.size else 0.0
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        before = [rel for t, rel in last_rel if t < started.get(m, 0)]
        added = max_rel - (before[-1] if before else 0.0)
        last_rel.append((finished[m], max_rel))
        results[m] = ModuleComparison(
            m,
            class_name,
            position[m],
            COMPARED,
            tensor=tensor,
            shape=tuple(reference.shape),
            max_abs=max_abs,
            max_rel=max_rel,
            added=added,
            exceeds=max_abs > atol + rtol * scale,
        )
    for info in retriever.get_module_subtree(""):
        if info.path not in results:
            results[info.path] = ModuleComparison(info.path, info.class_name, -1, status.get(info.path, "did not run"))
    return results


def _summary(
    retriever: HierarchyRetriever, results: Mapping[str, ModuleComparison], *, atol: float, rtol: float
) -> Comparison:
    """The modules in run order, the first that exceeds the tolerance, and the finest that adds the most."""
    modules = tuple(sorted(results.values(), key=lambda r: (r.order < 0, r.order)))
    first = next((r for r in modules if r.exceeds), None)
    compared = {r.module for r in modules if r.status == COMPARED}
    finest = [r for r in modules if r.exceeds and not any(c != r.module and within(c, r.module) for c in compared)]
    worst = max(finest, key=lambda r: r.added or 0.0, default=None)
    return Comparison(atol=atol, rtol=rtol, modules=modules, first_divergence=first, worst=worst)
