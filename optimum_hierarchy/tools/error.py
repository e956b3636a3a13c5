"""Per-module error between two ONNX files of one model (fp32 vs int4, int8 or fp16; before vs after optimization).

Both files run in ONNX Runtime on the same inputs. A module is compared on its output tensors as
recorded at export (``pkg.optimum_hierarchy.module_outputs``; optimizers and quantizers keep the
names of the tensors a replaced subgraph produced), where both files still have them:

* **accumulated** error: the module's outputs in the candidate against the reference, both models run
  end to end: everything upstream contributes;
* **local** error: the candidate's module alone (its nodes, as :func:`~optimum_hierarchy.tools.boundary.module_boundary`
  delimits them) fed with the *reference's* values of its inputs, against the reference's outputs: what
  the module itself adds. The local error finds the culprit; the accumulated error shows how it propagates;
* **own** error, of a module with compared submodules: its *own* nodes (those in no compared submodule:
  reshapes, softmax, residual adds, mask and shape computations) fed with the reference's values of
  everything they read (the module's inputs and its submodules' outputs), on the tensors they hand on
  (to a submodule or out of the module) that the reference also has: what the module adds outside its
  submodules. A module without compared submodules has no own error of its own: it is its local error.

Two ONNX Runtime sessions in all: the reference, with the tensors both errors need as extra outputs;
the candidate, with a renamed copy of each compared module's nodes appended (sharing its weights, its
inputs fed with the reference's values), so both errors of every module come from one run.

Metrics: the largest absolute difference, the relative L2 error ``||c - r|| / ||r||``, and the cosine
similarity of the flattened outputs. A module that cannot be compared says why (its outputs were
fused away or renamed in one file, an input of it has no counterpart in the reference). Two files with
the same module tree whose compared tensors differ in shape (another hidden size) are an error.
"""

from __future__ import annotations

__all__ = ["ERROR_RESULT", "ErrorReport", "Metrics", "ModuleError", "module_errors", "read_error_report"]

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from optimum_hierarchy.annotation.file import load_model_proto
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.modules import ModuleInfo, within
from optimum_hierarchy.provenance import decode_module_outputs
from optimum_hierarchy.read import read_hierarchy
from optimum_hierarchy.retriever import HierarchyRetriever
from optimum_hierarchy.schema import read_props
from optimum_hierarchy.tools.boundary import BoundaryFinder, ModuleBoundary, tensor_types
from optimum_hierarchy.tools.inputs import generate_inputs
from optimum_hierarchy.tools.result_file import ResultFormat, ResultSource
from optimum_hierarchy.tools.runtime import make_session, ort_errors, run_with_tensors
from optimum_hierarchy.walk import subgraphs


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
        norm_r, norm_c, norm_d = (
            float(np.dot(r, r)) ** 0.5,
            float(np.dot(c, c)) ** 0.5,
            float(np.dot(diff, diff)) ** 0.5,
        )
        max_abs = float(np.abs(diff).max()) if diff.size else 0.0
        rel = norm_d / norm_r if norm_r else (0.0 if not norm_d else math.inf)
        cosine = float(np.dot(r, c)) / (norm_r * norm_c) if norm_r and norm_c else (1.0 if not norm_d else 0.0)
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
    own: Metrics | None = None
    """The error of its own nodes (see the module's docstring); its local error when it has no compared
    submodule; ``None`` when not measured."""

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"module": self.module, "class": self.class_name, "tensors": list(self.tensors)}
        for kind, metrics in (("accumulated", self.accumulated), ("local", self.local), ("own", self.own)):
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


ERROR_RESULT = ResultFormat("an error result", "optimum-cli hierarchy error REFERENCE CANDIDATE --json > error.json")


def read_error_report(source: ResultSource) -> ErrorReport:
    """The report :meth:`ErrorReport.to_json` wrote (``hierarchy error --json``): a file, or its parsed JSON.

    A row without ``own_*`` (a file written before own errors were measured) has ``own`` ``None``.

    Raises:
        HierarchyError: the source is not such a report; the message names it, the field and the command.
    """
    fmt = ERROR_RESULT
    name, data = fmt.load(source)
    modules = []
    for row in fmt.rows(name, data, "module"):
        where = f"module {row['module']!r}"
        metrics = {kind: _read_metrics(name, row, kind, where) for kind in ("accumulated", "local", "own")}
        modules.append(
            ModuleError(
                module=row["module"],
                class_name=fmt.get(name, row, "class", "text", where),
                tensors=tuple(fmt.get(name, row, "tensors", "texts", where)),
                reason=fmt.get(name, row, "reason", "optional text", where),
                **metrics,
            )
        )
    return ErrorReport(
        reference=Path(fmt.get(name, data, "reference", "text")),
        candidate=Path(fmt.get(name, data, "candidate", "text")),
        inputs={k: list(v) for k, v in fmt.get(name, data, "inputs", "shapes").items()},
        modules=tuple(modules),
    )


def _read_metrics(name: str, row: Mapping[str, Any], kind: str, where: str) -> Metrics | None:
    """The ``kind`` metrics of a row: three numbers, or ``None`` when all three are null or absent."""
    fields = ("max_abs", "rel_l2", "cosine")
    values = [row.get(f"{kind}_{f}") for f in fields]
    if all(v is None for v in values):
        return None
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) != len(fields):
        raise ERROR_RESULT.refuse(
            name, f"{where}: {', '.join(f'{kind}_{f}' for f in fields)} must be numbers or null (all three)"
        )
    return Metrics(*numbers)


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
    ref = HierarchyRetriever(read_hierarchy(ref_proto, path=ref_path))
    cand = HierarchyRetriever(read_hierarchy(cand_proto, path=cand_path))
    if [(m.path, m.class_name) for m in ref.tree.values()] != [(m.path, m.class_name) for m in cand.tree.values()]:
        raise HierarchyError(
            f"{ref_path} ({ref.tree[''].class_name}) and {cand_path} ({cand.tree[''].class_name}) hold different "
            "models (their module trees differ); compare two files of one model."
        )
    if feeds is None:
        feeds = generate_inputs(ref_path, shapes=shapes, seed=seed)
    ref_feeds, cand_feeds = _feeds_for(ref_proto, feeds, ref_path), _feeds_for(cand_proto, feeds, cand_path)
    exported = decode_module_outputs(read_props(ref_proto))
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
    boundaries: dict[str, ModuleBoundary | str] = {}
    finder = BoundaryFinder(cand_proto, cand)
    for m in modules:
        if tensors[m.path] and cand.get_nodes_by_module(m.path, subtree=True):
            try:
                boundaries[m.path] = finder.boundary(m.path)
            except (HierarchyError, KeyError) as e:
                boundaries[m.path] = str(e.args[0] if e.args else e)
    inputs_wanted = {t for b in boundaries.values() if not isinstance(b, str) for t in b.inputs if t in produced_ref}
    measurable = {p: b for p, b in boundaries.items() if not isinstance(b, str)}
    own_wanted = {
        t
        for p in measurable
        if (part := _own_boundary(finder, p, measurable)) is not None
        for t in (*part.inputs, *part.outputs)
        if t in produced_ref
    }
    wanted_ref = sorted({t for ts in tensors.values() for t in ts} | inputs_wanted | own_wanted)
    ref_values = run_with_tensors(
        ref_proto, wanted_ref, ref_feeds, optimization_level="disable", base_dir=ref_path.parent
    )
    known = {**ref_feeds, **ref_values}
    copies: dict[str, _Copy] = {}
    reasons: dict[str, str] = {}
    for index, m in enumerate(modules):
        boundary = boundaries.get(m.path)
        if boundary is None:
            reasons[m.path] = "the module has no node in the candidate's main graph"
        elif isinstance(boundary, str):
            reasons[m.path] = f"the candidate's module cannot be cut out: {boundary}"
        elif missing := [t for t in boundary.inputs if t not in known]:
            reasons[m.path] = f"its input {missing[0]!r} has no counterpart in the reference"
        elif not (outputs := tuple(t for t in tensors[m.path] if t in boundary.outputs)):
            reasons[m.path] = "its output tensors are not outputs of the candidate's module"
        elif all(t in cand_feeds for t in boundary.inputs):
            # Fed the graph inputs only: alone, the module computes what it computes in the whole candidate.
            copies[m.path] = _Copy("", boundary, outputs)
        else:
            copies[m.path] = _Copy(f"local.{index}::", boundary, outputs)
    compared = {p: c.boundary for p, c in copies.items()}
    own_copies: dict[str, _Copy] = {}
    for index, m in enumerate(modules):
        own_nodes = _own_boundary(finder, m.path, compared) if m.path in compared else None
        if own_nodes is None:
            continue
        own_outputs = tuple(t for t in own_nodes.outputs if t in produced_ref)
        if own_outputs and all(t in known for t in own_nodes.inputs):
            own_copies[m.path] = _Copy(f"own.{index}::", own_nodes, own_outputs)
    wanted_cand = sorted({t for ts in tensors.values() for t in ts})
    cand_values, local_values, failure = _run_candidate(
        cand_path,
        cand_proto,
        accumulated=wanted_cand,
        feeds=cand_feeds,
        copies=[*copies.values(), *own_copies.values()],
        known=known,
    )
    if failure is not None and own_copies:  # the own nodes' copies may be what failed: the local errors first
        own_copies = {}
        cand_values, local_values, failure = _run_candidate(
            cand_path, cand_proto, accumulated=wanted_cand, feeds=cand_feeds, copies=[*copies.values()], known=known
        )
    _check_same_shapes(
        ref_path, cand_path, modules=modules, tensors=tensors, ref_values=ref_values, cand_values=cand_values
    )
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
        local: Metrics | None = None
        why = reasons.get(m.path, failure)
        copy = copies.get(m.path)
        if copy is not None and not copy.prefix:  # the candidate's own run is the module alone
            local, why = Metrics.of([ref_values[t] for t in copy.outputs], [cand_values[t] for t in copy.outputs]), None
        elif copy is not None and failure is None:
            local = Metrics.of(
                [ref_values[t] for t in copy.outputs], [local_values[copy.prefix + t] for t in copy.outputs]
            )
        own: Metrics | None = local if m.path in compared else None
        if (own_copy := own_copies.get(m.path)) is not None:
            own = None
            if failure is None:
                own = Metrics.of(
                    [ref_values[t] for t in own_copy.outputs],
                    [local_values[own_copy.prefix + t] for t in own_copy.outputs],
                )
        elif m.path in compared and _has_compared_submodule(m.path, compared):
            own = None  # its own nodes hand on nothing the reference has, read what it lacks, or did not run
        rows.append(ModuleError(m.path, m.class_name, names, accumulated, local, why, own))
    shapes_used = {k: list(np.shape(v)) for k, v in feeds.items()}
    return ErrorReport(reference=ref_path, candidate=cand_path, inputs=shapes_used, modules=tuple(rows))


def _check_same_shapes(
    ref_path: Path,
    cand_path: Path,
    *,
    modules: Sequence[ModuleInfo],
    tensors: Mapping[str, tuple[str, ...]],
    ref_values: Mapping[str, np.ndarray],
    cand_values: Mapping[str, np.ndarray],
) -> None:
    """Raise when a compared tensor has another shape in each file: one module tree, but models of different sizes."""
    for m in modules:
        for t in tensors[m.path]:
            ref_shape, cand_shape = np.shape(ref_values[t]), np.shape(cand_values[t])
            if ref_shape != cand_shape:
                raise HierarchyError(
                    f"{ref_path} and {cand_path} hold models of different sizes: the output {t!r} of module "
                    f"{m.path or '(root)'!r} has shape {list(ref_shape)} in the reference and {list(cand_shape)} "
                    "in the candidate (same module tree, other dimensions, e.g. another hidden size); compare two "
                    "files of one model."
                )


def _has_compared_submodule(path: str, compared: Mapping[str, ModuleBoundary]) -> bool:
    return any(other != path and within(other, path) for other in compared)


def _own_boundary(finder: BoundaryFinder, path: str, compared: Mapping[str, ModuleBoundary]) -> ModuleBoundary | None:
    """The boundary of the module's own nodes: its nodes in no ``compared`` submodule.

    ``None`` when it has no compared submodule (its own error is its local error) or no node of its own.
    """
    inner = {i for other, b in compared.items() if other != path and within(other, path) for i in b.nodes}
    if not inner:
        return None
    own = [i for i in compared[path].nodes if i not in inner]
    return finder.of_nodes(path, own) if own else None


def _produced(proto: onnx.ModelProto) -> set[str]:
    return {t for node in proto.graph.node for t in node.output if t} | {v.name for v in proto.graph.input}


@dataclasses.dataclass(frozen=True)
class _Copy:
    """A copy of a candidate module's nodes, its tensors renamed with ``prefix``, fed the reference's inputs.

    No prefix: the module reads graph inputs only, so its local values are those of the candidate's run.
    """

    prefix: str
    boundary: ModuleBoundary
    outputs: tuple[str, ...]


def _run_candidate(
    path: Path,
    proto: onnx.ModelProto,
    *,
    accumulated: Sequence[str],
    feeds: Mapping[str, np.ndarray],
    copies: Sequence[_Copy],
    known: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str | None]:
    """One run of the candidate for both errors: the ``accumulated`` tensors and every module copy's outputs.

    Each copy reads its inputs as graph inputs fed with the reference's values (cast to the candidate's
    types) and shares the candidate's initializers, so the weights are loaded once. The copies are
    appended to ``proto`` for the time it takes to create the session, then removed. If that model
    cannot run, the candidate runs alone and the third item says why there is no local error.
    """
    copies = [c for c in copies if c.prefix]  # the others are read from the candidate's own run
    if not copies:
        return run_with_tensors(proto, accumulated, feeds, optimization_level="disable", base_dir=path.parent), {}, None
    types = _candidate_types(proto, {t for c in copies for t in c.boundary.inputs})
    graph = proto.graph
    marks = (len(graph.node), len(graph.input), len(graph.output))
    initializers = {t.name for t in graph.initializer} | {t.name for t in graph.sparse_initializer}
    all_feeds = dict(feeds)
    local_names: list[str] = []
    failure: str | None = None
    try:
        existing = {o.name for o in graph.output}
        graph.output.extend(onnx.ValueInfoProto(name=t) for t in accumulated if t not in existing)
        for copy in copies:
            rename = _renamer(copy.prefix, initializers)
            for t in copy.boundary.inputs:
                graph.input.append(onnx.helper.make_value_info(rename(t), types[t]))
                dtype = onnx.helper.tensor_dtype_to_np_dtype(types[t].tensor_type.elem_type)
                all_feeds[rename(t)] = np.asarray(known[t]).astype(dtype, copy=False)
            for i in copy.boundary.nodes:
                node = onnx.NodeProto()
                node.CopyFrom(graph.node[i])
                _rename_node(node, rename)
                graph.node.append(node)
            local_names.extend(rename(t) for t in copy.outputs)
            graph.output.extend(onnx.ValueInfoProto(name=rename(t)) for t in copy.outputs)
        try:
            session = make_session(proto, optimization_level="disable", base_dir=path.parent)
        except HierarchyError as e:
            failure = f"the candidate's modules cannot be run on the reference's inputs: {e}"
    finally:
        del graph.node[marks[0] :]
        del graph.input[marks[1] :]
        del graph.output[marks[2] :]
    if failure is not None:
        return (
            run_with_tensors(proto, accumulated, feeds, optimization_level="disable", base_dir=path.parent),
            {},
            failure,
        )
    names = [o.name for o in session.get_outputs()]
    try:
        values = dict(zip(names, session.run(None, all_feeds), strict=True))
    except ort_errors() as e:
        failure = f"the candidate's modules do not run on the reference's inputs: {e}"
        return (
            run_with_tensors(proto, accumulated, feeds, optimization_level="disable", base_dir=path.parent),
            {},
            failure,
        )
    return {t: values[t] for t in accumulated}, {t: values[t] for t in local_names}, None


def _renamer(prefix: str, initializers: set[str]) -> Any:
    def rename(name: str) -> str:
        return name if not name or name in initializers else prefix + name

    return rename


def _rename_node(node: onnx.NodeProto, rename: Any) -> None:
    """Rename the node, its tensors and those of its subgraphs (initializers of the main graph stay shared)."""
    node.name = rename(node.name) if node.name else node.name
    node.input[:] = [rename(t) for t in node.input]
    node.output[:] = [rename(t) for t in node.output]
    for sub in subgraphs(node):
        for value in (*sub.input, *sub.output, *sub.value_info):
            value.name = rename(value.name)
        for tensor in sub.initializer:
            tensor.name = rename(tensor.name)
        for inner in sub.node:
            _rename_node(inner, rename)


def _candidate_types(proto: onnx.ModelProto, names: set[str]) -> dict[str, onnx.TypeProto]:
    """The candidate's type of each tensor: from the file's value infos, else as ONNX Runtime infers it."""
    known = {
        v.name: v.type
        for v in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info)
        if v.name in names and v.type.tensor_type.elem_type
    }
    missing = names - set(known)
    if missing:
        known.update(tensor_types(proto, sorted(missing)))
    return {n: known[n] for n in names}
