"""Per-module error between two ONNX files of one model (fp32 vs int4, int8 or fp16; before vs after optimization).

Both files run in ONNX Runtime on the same inputs. A module is compared on its output tensors as
recorded at export (``pkg.optimum_hierarchy.module_outputs``; optimizers and quantizers keep the
names of the tensors a replaced subgraph produced), where both files still have them:

* **accumulated** error: the module's outputs in the candidate against the reference, both models run
  end to end: everything upstream contributes;
* **local** error: the candidate's module alone (cut out with
  :func:`~optimum_hierarchy.tools.extract.extract_module`) fed with the *reference's* values of its
  inputs, against the reference's outputs: what the module itself adds. The local error finds the
  culprit; the accumulated error shows how it propagates.

Metrics: the largest absolute difference, the relative L2 error ``||c - r|| / ||r||``, and the cosine
similarity of the flattened outputs. A module that cannot be compared says why (its outputs were
fused away or renamed in one file, an input of it has no counterpart in the reference).
"""

from __future__ import annotations

__all__ = ["ErrorReport", "Metrics", "ModuleError", "module_errors"]

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from optimum_hierarchy.annotate import load_model_proto
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.provenance import decode_module_outputs
from optimum_hierarchy.retriever import HierarchyRetriever
from optimum_hierarchy.tools.inputs import generate_inputs
from optimum_hierarchy.tools.session import make_session, ort_errors, run_with_tensors


@dataclasses.dataclass(frozen=True)
class Metrics:
    max_abs: float
    rel_l2: float
    cosine: float

    @staticmethod
    def of(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> Metrics:
        r = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in reference])
        c = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in candidate])
        diff = c - r
        norm_r, norm_c = float(np.linalg.norm(r)), float(np.linalg.norm(c))
        max_abs = float(np.abs(diff).max()) if diff.size else 0.0
        rel = float(np.linalg.norm(diff)) / norm_r if norm_r else (0.0 if not diff.any() else math.inf)
        cosine = float(r @ c) / (norm_r * norm_c) if norm_r and norm_c else (1.0 if not diff.any() else 0.0)
        return Metrics(max_abs=max_abs, rel_l2=rel, cosine=cosine)


@dataclasses.dataclass(frozen=True)
class ModuleError:
    module: str
    class_name: str
    tensors: tuple[str, ...]
    accumulated: Metrics | None
    local: Metrics | None
    reason: str | None = None
    """Why the module (or its local error) could not be compared; ``None`` when both were."""

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"module": self.module, "class": self.class_name, "tensors": list(self.tensors)}
        for kind, metrics in (("accumulated", self.accumulated), ("local", self.local)):
            for field in ("max_abs", "rel_l2", "cosine"):
                row[f"{kind}_{field}"] = getattr(metrics, field) if metrics is not None else None
        row["reason"] = self.reason
        return row


@dataclasses.dataclass(frozen=True)
class ErrorReport:
    reference: Path
    candidate: Path
    inputs: dict[str, list[int]]
    modules: tuple[ModuleError, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": str(self.reference),
            "candidate": str(self.candidate),
            "inputs": self.inputs,
            "modules": [m.to_json() for m in self.modules],
        }


def _feeds_for(proto: onnx.ModelProto, feeds: Mapping[str, np.ndarray], where: Path) -> dict[str, np.ndarray]:
    """``feeds`` for this model: the same names, cast to its input types (an fp16 model takes float16)."""
    initializers = {t.name for t in proto.graph.initializer}
    wanted = {v.name: v for v in proto.graph.input if v.name not in initializers}
    if set(wanted) != set(feeds):
        raise HierarchyError(
            f"{where}: its inputs ({', '.join(sorted(wanted))}) are not the inputs given or generated "
            f"({', '.join(sorted(feeds))}); compare two files of one model with the same inputs."
        )
    out = {}
    for name, value in wanted.items():
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        out[name] = np.asarray(feeds[name]).astype(dtype, copy=False)
    return out


def module_errors(
    reference: str | os.PathLike[str],
    candidate: str | os.PathLike[str],
    *,
    depth: int | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    shapes: Mapping[str, int] | None = None,
    seed: int = 0,
) -> ErrorReport:
    """The accumulated and local error of each module of ``candidate`` against ``reference``.

    ``depth``: only modules down to this depth (the root is 0); all by default. ``feeds`` default to
    :func:`~optimum_hierarchy.tools.inputs.generate_inputs` of the reference (``shapes``, ``seed``).
    ONNX Runtime's graph optimizations are off in both runs, so each file computes what it holds.
    """
    ref_path, cand_path = Path(reference), Path(candidate)
    ref_proto, cand_proto = load_model_proto(ref_path), load_model_proto(cand_path)
    ref, cand = HierarchyRetriever(ref_proto), HierarchyRetriever(cand_proto)
    if [(m.path, m.class_name) for m in ref.tree.values()] != [(m.path, m.class_name) for m in cand.tree.values()]:
        raise HierarchyError(
            f"{ref_path} ({ref.tree[''].class_name}) and {cand_path} ({cand.tree[''].class_name}) hold different "
            "models (their module trees differ); compare two files of one model."
        )
    if feeds is None:
        feeds = generate_inputs(ref_path, shapes=shapes, seed=seed)
    ref_feeds, cand_feeds = _feeds_for(ref_proto, feeds, ref_path), _feeds_for(cand_proto, feeds, cand_path)
    exported = decode_module_outputs({p.key: p.value for p in ref_proto.metadata_props})
    if exported is None:
        raise HierarchyError(
            f"{ref_path} carries no export-time module outputs (annotated by an older version or after the fact); "
            "export it again with the hierarchy."
        )
    produced_ref = _produced(ref_proto)
    produced_cand = _produced(cand_proto)
    modules = [m for m in ref.tree.values() if depth is None or m.depth <= depth]
    tensors = {
        m.path: tuple(t for t in exported.get(m.path, ()) if t in produced_ref and t in produced_cand) for m in modules
    }
    boundaries: dict[str, Any] = {}
    for m in modules:
        if tensors[m.path] and cand.get_nodes_by_module(m.path, subtree=True):
            try:
                boundaries[m.path] = _extract(cand_path, cand_proto, m.path)
            except (HierarchyError, KeyError) as e:
                boundaries[m.path] = str(e)
    wanted_ref = sorted({t for ts in tensors.values() for t in ts} | _boundary_inputs(boundaries, produced_ref))
    ref_values = run_with_tensors(ref_proto, wanted_ref, ref_feeds, optimization_level="disable")
    wanted_cand = sorted({t for ts in tensors.values() for t in ts})
    cand_values = run_with_tensors(cand_proto, wanted_cand, cand_feeds, optimization_level="disable")
    rows = []
    for m in modules:
        names = tensors[m.path]
        if not names:
            if not ref.get_nodes_by_module(m.path, subtree=True, spanning=True):
                reason = "it has no node in the reference (it computes nothing in the graph)"
            elif not exported.get(m.path):
                reason = "no output tensor recorded at export (its results are not used outside it)"
            else:
                reason = "its output tensors are not in both files (fused, renamed or removed)"
            rows.append(ModuleError(m.path, m.class_name, (), None, None, reason))
            continue
        accumulated = Metrics.of([ref_values[t] for t in names], [cand_values[t] for t in names])
        local, why = _local(boundaries.get(m.path), names, ref_values, ref_feeds)
        rows.append(ModuleError(m.path, m.class_name, names, accumulated, local, why))
    shapes_used = {k: list(np.shape(v)) for k, v in feeds.items()}
    return ErrorReport(reference=ref_path, candidate=cand_path, inputs=shapes_used, modules=tuple(rows))


def _produced(proto: onnx.ModelProto) -> set[str]:
    return {t for node in proto.graph.node for t in node.output if t} | {v.name for v in proto.graph.input}


def _extract(path: Path, proto: onnx.ModelProto, module: str) -> Any:
    from optimum_hierarchy.tools.extract import extract_module

    uses_external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    return extract_module(path if uses_external else proto, module)


def _boundary_inputs(boundaries: Mapping[str, Any], produced_ref: set[str]) -> set[str]:
    return {t for b in boundaries.values() if not isinstance(b, str) for t in b.inputs if t in produced_ref}


def _local(
    extracted: Any, names: tuple[str, ...], ref_values: Mapping[str, np.ndarray], ref_feeds: Mapping[str, np.ndarray]
) -> tuple[Metrics | None, str | None]:
    if extracted is None:
        return None, "the module has no node in the candidate's main graph"
    if isinstance(extracted, str):
        return None, f"the candidate's module cannot be cut out: {extracted}"
    known = {**ref_feeds, **ref_values}
    missing = [t for t in extracted.inputs if t not in known]
    if missing:
        return None, f"its input {missing[0]!r} has no counterpart in the reference"
    outputs = [t for t in names if t in extracted.outputs]
    if not outputs:
        return None, "its output tensors are not outputs of the module cut out of the candidate"
    session = make_session(extracted.model, optimization_level="disable")
    types = {i.name: i.type for i in session.get_inputs()}
    feeds = {t: np.asarray(known[t]).astype(_np_type(types[t]), copy=False) for t in extracted.inputs}
    try:
        values = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    except ort_errors() as e:
        return None, f"the candidate's module does not run on the reference's inputs: {e}"
    return Metrics.of([ref_values[t] for t in outputs], [values[t] for t in outputs]), None


def _np_type(ort_type: str) -> Any:
    table = {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(double)": np.float64,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(bool)": np.bool_,
        "tensor(int8)": np.int8,
        "tensor(uint8)": np.uint8,
    }
    if ort_type not in table:
        raise HierarchyError(f"an input of type {ort_type} cannot be fed from the reference")
    return table[ort_type]
