"""Which modules to keep in higher precision so that the whole model stays within an error budget.

:func:`plan_precision` quantizes a model (int4, int8) or converts it (fp16) with the fewest candidate
modules kept in float32 that it can find such that the error of the model's outputs on the calibration
inputs stays within ``max_error``; :func:`replay_plan` applies a saved plan again.

The method. The candidates (each ``nn.Linear`` a quantized node replaces, or each repeated block) are
ranked by :func:`~optimum_hierarchy.tools.sensitivity.module_sensitivity`, most sensitive first. Every
plan tried is then quantized for real and its error measured on the calibration inputs (never
predicted from the ranking):

1. every candidate quantized (nothing kept): if it meets the budget, that is the plan;
2. every candidate kept but the least sensitive: if even that misses the budget, no plan tried that
   converts a module meets it, and that is an error naming the best error reached by the two plans
   above and the error with every candidate kept (0 for int4 and int8, where nothing else is
   quantized; for fp16 the converter also converts the nodes outside the candidates);
3. bisection over ``k``, the number of top-ranked candidates kept, for the smallest ``k`` that meets
   the budget (assuming the error falls as ``k`` grows; where it does not, bisection still ends on a
   ``k`` that meets it);
4. backward elimination: each kept module, least sensitive first, is dropped when the plan without it
   still meets the budget.

So the plan is *minimal*, not proven *minimum*: no single kept module can be dropped (each was tried),
but a smaller set of other modules might meet the budget too. Cost: one sensitivity ranking (one
quantization and one run per candidate), then ``2 + ceil(log2 n) + k`` quantizations and runs at most
(``n`` candidates, ``k`` kept after bisection), plus one for the file written. Plans already tried are
not run again.

The error is the ranked metric as an error: ``rel_l2``, ``max_abs``, ``kl`` as they are, ``1 - cosine``
and ``1 - top1``. The written file is loaded with ONNX Runtime, run on the calibration inputs and
measured against the float model before it is moved into place; the plan (:class:`Plan`) is written
as JSON and stored in the file's metadata (``pkg.optimum_hierarchy.precision_plan``, kept by later
annotations). On any error nothing is written.
"""

from __future__ import annotations

__all__ = [
    "PLAN_FORMAT",
    "PRECISIONS",
    "BudgetError",
    "Plan",
    "PlanResult",
    "TriedPlan",
    "plan_of",
    "plan_precision",
    "read_plan",
    "replay_plan",
]

import contextlib
import dataclasses
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from optimum_hierarchy.atomic import atomic_write, check_output_path, save_onnx
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.schema import PRECISION_PLAN_KEY, dumps_json, loads_json, read_props, set_prop
from optimum_hierarchy.tools.inputs import generate_inputs
from optimum_hierarchy.tools.runtime import make_session, ort_errors
from optimum_hierarchy.wire import PROTOBUF_LIMIT, read_model_file

logger = logging.getLogger(__name__)

PRECISIONS = ("int4", "int8", "fp16")
PLAN_FORMAT = "optimum_hierarchy.precision_plan/1"
"""The ``format`` field of a plan's JSON."""


class BudgetError(HierarchyError):
    """No plan that quantizes at least one module meets the error budget."""


@dataclasses.dataclass(frozen=True)
class TriedPlan:
    """One plan tried: quantized for real, run on the calibration inputs and measured."""

    step: str
    """``all`` (nothing kept), ``least`` (all kept but the least sensitive), ``bisect``, ``eliminate``; ``floor``
    (every candidate kept: tried only when the budget cannot be met, for the message)."""
    kept: tuple[str, ...]
    """The module globs kept in float32 (module paths, most sensitive first)."""
    kept_weights: int
    """Float weight elements of the kept modules (what stays unquantized, in elements)."""
    size_bytes: int
    """Size of the quantized file (with its external data, if any)."""
    error: float
    within_budget: bool

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "kept": list(self.kept)}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> TriedPlan:
        return TriedPlan(
            step=str(data["step"]),
            kept=tuple(str(k) for k in data["kept"]),
            kept_weights=int(data["kept_weights"]),
            size_bytes=int(data["size_bytes"]),
            error=float(data["error"]),
            within_budget=bool(data["within_budget"]),
        )


@dataclasses.dataclass(frozen=True)
class Plan:
    """A precision plan: what to quantize, what to keep, and what was measured when it was made."""

    precision: str
    metric: str
    budget: float
    kept: tuple[str, ...]
    """Module globs kept in float32 (exact module paths, most sensitive first)."""
    error: float
    """The metric (as an error) measured on the file written, on the calibration inputs."""
    size_bytes: int
    """Size of the quantized file before the plan is stored in it (the plan adds its own JSON)."""
    kept_weights: int
    quantized_weights: int
    """Float weight elements of the candidates quantized."""
    block_size: int | None
    """int4's block size; ``None`` for int8 and fp16."""
    options: dict[str, Any]
    """The quantizer's other options (``symmetric``; ``per_channel``; ``keep_io_types``)."""
    granularity: str
    candidates: tuple[str, ...]
    """Every candidate module, most sensitive first."""
    inputs: dict[str, list[int]]
    """Shapes of the calibration inputs."""
    tried: tuple[TriedPlan, ...]
    """Every plan tried, in the order tried (the error-versus-size curve)."""
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    """Modules the ranking could not measure, with its reason: converted in every plan, never kept."""

    @property
    def within_budget(self) -> bool:
        return self.error <= self.budget

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "precision": self.precision,
            "metric": self.metric,
            "budget": self.budget,
            "kept": list(self.kept),
            "error": self.error,
            "size_bytes": self.size_bytes,
            "kept_weights": self.kept_weights,
            "quantized_weights": self.quantized_weights,
            "block_size": self.block_size,
            "options": dict(self.options),
            "granularity": self.granularity,
            "candidates": list(self.candidates),
            "inputs": self.inputs,
            "tried": [t.to_json() for t in self.tried],
            "skipped": dict(self.skipped),
        }

    @staticmethod
    def from_json(data: Any, *, source: str = "plan") -> Plan:
        """Raises HierarchyError: ``data`` is not a plan of this format."""
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise HierarchyError(f"{source}: not a precision plan (expected format {PLAN_FORMAT!r}).")
        try:
            plan = Plan(
                precision=str(data["precision"]),
                metric=str(data["metric"]),
                budget=float(data["budget"]),
                kept=tuple(str(k) for k in data["kept"]),
                error=float(data["error"]),
                size_bytes=int(data["size_bytes"]),
                kept_weights=int(data["kept_weights"]),
                quantized_weights=int(data["quantized_weights"]),
                block_size=None if data["block_size"] is None else int(data["block_size"]),
                options=dict(data["options"]),
                granularity=str(data["granularity"]),
                candidates=tuple(str(c) for c in data["candidates"]),
                inputs={str(k): [int(d) for d in v] for k, v in dict(data["inputs"]).items()},
                tried=tuple(TriedPlan.from_json(t) for t in data["tried"]),
                skipped={str(k): str(v) for k, v in dict(data.get("skipped", {})).items()},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise HierarchyError(f"{source}: a malformed precision plan ({type(e).__name__}: {e}).") from e
        if plan.precision not in PRECISIONS:
            raise HierarchyError(f"{source}: precision {plan.precision!r} is not one of {', '.join(PRECISIONS)}.")
        return plan


@dataclasses.dataclass(frozen=True)
class PlanResult:
    output: Path
    plan_file: Path
    plan: Plan
    """The plan made (or replayed, as read)."""
    error: float
    """The error measured on the written file, on this run's calibration inputs."""
    replayed: bool

    @property
    def within_budget(self) -> bool:
        return self.error <= self.plan.budget


def read_plan(path: str | os.PathLike[str]) -> Plan:
    """The plan in a JSON file, or the one stored in an ``.onnx`` file's metadata."""
    path = Path(path)
    if not path.is_file():
        raise HierarchyError(f"{path}: no such plan file.")
    if path.suffix == ".onnx":
        found = plan_of(path)
        if found is None:
            raise HierarchyError(f"{path}: stores no precision plan ({PRECISION_PLAN_KEY}).")
        return found
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HierarchyError(f"{path}: not a JSON precision plan ({e}).") from e
    return Plan.from_json(data, source=str(path))


def plan_of(model: str | os.PathLike[str]) -> Plan | None:
    """The plan stored in an ONNX file's metadata, or ``None``."""
    with read_model_file(model) as light:
        props = read_props(light.proto)
    if PRECISION_PLAN_KEY not in props:
        return None
    return Plan.from_json(loads_json(props[PRECISION_PLAN_KEY], PRECISION_PLAN_KEY), source=str(model))


def plan_precision(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    precision: str,
    max_error: float,
    metric: str = "rel_l2",
    granularity: str = "linear",
    block_size: int = 128,
    symmetric: bool = True,
    per_channel: bool = False,
    keep_io_types: bool = False,
    feeds: Mapping[str, np.ndarray] | None = None,
    plan_out: str | os.PathLike[str] | None = None,
) -> PlanResult:
    """Quantize ``model`` to ``precision`` keeping the fewest modules float that meet ``max_error``; write ``output``.

    See the module docstring for the method. ``feeds`` are the calibration inputs (default: generated
    inputs). ``plan_out``: the plan's JSON (default ``<output stem>.plan.json`` beside ``output``).

    Raises:
        BudgetError: no plan quantizing at least one module meets ``max_error``; nothing is written.
        HierarchyError: bad arguments or inputs, or ONNX Runtime failing; nothing is written.
    """
    from optimum_hierarchy.tools.sensitivity import METRICS, module_sensitivity

    if precision not in PRECISIONS:
        raise HierarchyError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}.")
    if metric not in METRICS:
        raise HierarchyError(f"--metric {metric}: one of {', '.join(METRICS)}.")
    if not (isinstance(max_error, (int, float)) and math.isfinite(max_error) and max_error >= 0):
        raise HierarchyError(f"--max-error {max_error:g}: a finite error budget >= 0.")
    source, target, plan_file = _paths(model, output, plan_out)
    options = _options(precision, symmetric=symmetric, per_channel=per_channel, keep_io_types=keep_io_types)
    size = block_size if precision == "int4" else None
    measure = _Measure(source, metric, feeds)
    ranking = module_sensitivity(
        source, precision=precision, granularity=granularity, metric=metric, block_size=block_size, feeds=measure.feeds
    )
    candidates = [row.module for row in ranking.modules]
    weights = {row.module: row.weights for row in ranking.modules}
    if not candidates:
        raise HierarchyError(f"{source}: no candidate module to quantize to {precision}.")
    tried: dict[tuple[str, ...], TriedPlan] = {}
    with tempfile.TemporaryDirectory(prefix="optimum_hierarchy_plan_") as tmp:
        work = Path(tmp)

        def attempt(kept: Sequence[str], step: str) -> TriedPlan:
            key = tuple(kept)
            if key not in tried:
                path = work / f"plan{len(tried)}.onnx"
                _quantize(source, path, key, precision=precision, block_size=size, options=options)
                error = measure.error_of(path)
                tried[key] = TriedPlan(
                    step=step,
                    kept=key,
                    kept_weights=sum(weights[m] for m in key),
                    size_bytes=_file_size(path),
                    error=error,
                    within_budget=error <= max_error,
                )
                logger.info("%s plan, %d kept: %s %.6g", step, len(key), metric, error)
                _remove(path)
            return tried[key]

        kept = _search(candidates, max_error, attempt, precision=precision, metric=metric, granularity=granularity)
    plan = Plan(
        precision=precision,
        metric=metric,
        budget=float(max_error),
        kept=tuple(kept),
        error=tried[tuple(kept)].error,
        size_bytes=tried[tuple(kept)].size_bytes,
        kept_weights=sum(weights[m] for m in kept),
        quantized_weights=sum(weights[m] for m in candidates if m not in kept),
        block_size=size,
        options=options,
        granularity=granularity,
        candidates=tuple(candidates),
        inputs=measure.shapes,
        tried=tuple(tried.values()),
        skipped=dict(ranking.skipped),
    )
    if ranking.skipped:
        logger.warning(
            "%s: %d candidates could not be ranked and are converted in every plan: %s",
            source,
            len(ranking.skipped),
            ", ".join(sorted(ranking.skipped)),
        )
    error = _write(source, target, plan_file, plan, measure, must_meet=True)
    plan = dataclasses.replace(plan, error=error)
    return PlanResult(output=target, plan_file=plan_file, plan=plan, error=error, replayed=False)


def replay_plan(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    plan: Plan | str | os.PathLike[str],
    *,
    feeds: Mapping[str, np.ndarray] | None = None,
    plan_out: str | os.PathLike[str] | None = None,
) -> PlanResult:
    """Quantize ``model`` as ``plan`` says (its precision, options and kept globs), verify it, write ``output``.

    The file stores the plan as given and ``plan_out`` gets it again, so a replay on the model the plan
    was made for writes the same bytes. The error measured here (on ``feeds``, default generated inputs)
    is returned beside it, with whether it is within the plan's budget.

    Raises:
        HierarchyError: the plan's globs match no module of ``model`` (a plan for another model), bad
            inputs, ONNX Runtime failing; nothing is written.
    """
    where = str(plan) if not isinstance(plan, Plan) else "the plan"
    loaded = plan if isinstance(plan, Plan) else read_plan(plan)
    source, target, plan_file = _paths(model, output, plan_out)
    measure = _Measure(source, loaded.metric, feeds)
    try:
        error = _write(source, target, plan_file, loaded, measure, must_meet=False)
    except HierarchyError as e:
        if "matches no module" in str(e):
            raise HierarchyError(f"{where} does not fit {source} (is it a plan for another model?): {e}") from e
        raise
    return PlanResult(output=target, plan_file=plan_file, plan=loaded, error=error, replayed=True)


def _search(
    candidates: Sequence[str],
    budget: float,
    attempt: Callable[[Sequence[str], str], TriedPlan],
    *,
    precision: str,
    metric: str,
    granularity: str,
) -> list[str]:
    """The kept modules (see the module docstring); ``candidates`` most sensitive first."""
    n = len(candidates)
    if attempt([], "all").within_budget:
        return []
    if n == 1 or not attempt(candidates[: n - 1], "least").within_budget:
        quantizing = [attempt([], "all")] + ([attempt(candidates[: n - 1], "least")] if n > 1 else [])
        best = min(quantizing, key=lambda t: t.error)
        which = (
            f"every candidate in {precision}"
            if not best.kept
            else f"only {candidates[-1]} in {precision}, every other candidate kept float"
        )
        floor = attempt(candidates, "floor")  # nothing a plan can choose is converted
        hint = ", try --granularity block" if precision == "fp16" and granularity == "linear" else ""
        raise BudgetError(
            f"--max-error {budget:g} ({metric}) cannot be met: the best error reached by a plan that converts at "
            f"least one module is {best.error:.6g} ({which}); with every candidate kept float it is "
            f"{floor.error:.6g}{_FLOOR_NOTE[precision]}. Raise --max-error{hint}, or choose a higher precision."
        )
    low, high = 0, n - 1  # low misses the budget, high meets it
    while high - low > 1:
        middle = (low + high) // 2
        if attempt(candidates[:middle], "bisect").within_budget:
            high = middle
        else:
            low = middle
    kept = list(candidates[:high])
    for module in reversed(candidates[:high]):
        fewer = [m for m in kept if m != module]
        if attempt(fewer, "eliminate").within_budget:
            kept = fewer
    return kept


_FLOOR_NOTE = {
    "int4": " (nothing quantized)",
    "int8": " (nothing quantized)",
    "fp16": " (fp16 also converts the nodes outside the candidates: norms, softmax, embeddings)",
}


def _options(precision: str, *, symmetric: bool, per_channel: bool, keep_io_types: bool) -> dict[str, Any]:
    if precision == "int4":
        return {"symmetric": symmetric}
    if precision == "int8":
        return {"per_channel": per_channel}
    return {"keep_io_types": keep_io_types}


def _quantize(
    source: Path,
    target: Path,
    kept: Sequence[str],
    *,
    precision: str,
    block_size: int | None,
    options: Mapping[str, Any],
) -> None:
    if precision == "int4":
        from optimum_hierarchy.tools.int4 import quantize_int4

        quantize_int4(
            source,
            target,
            block_size=block_size if block_size is not None else 128,
            symmetric=bool(options.get("symmetric", True)),
            exclude_modules=kept,
        )
    elif precision == "int8":
        from optimum_hierarchy.tools.int8 import quantize_int8

        quantize_int8(source, target, per_channel=bool(options.get("per_channel", False)), exclude_modules=kept)
    else:
        from optimum_hierarchy.tools.fp16 import convert_fp16

        convert_fp16(source, target, keep_fp32_modules=kept, keep_io_types=bool(options.get("keep_io_types", False)))


def _write(source: Path, target: Path, plan_file: Path, plan: Plan, measure: _Measure, *, must_meet: bool) -> float:
    """Quantize as ``plan`` says into a staging directory beside ``target``, store the plan, verify, move.

    Returns the error measured on the staged file (the bytes moved into place). ``must_meet``: a staged
    file over the plan's budget is an error, and nothing is moved.
    """
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
        staged = Path(tmp) / target.name
        quantized = Path(tmp) / "quantized.onnx"
        _quantize(
            source, quantized, plan.kept, precision=plan.precision, block_size=plan.block_size, options=plan.options
        )
        proto = onnx.load(str(quantized))
        set_prop(proto.metadata_props, PRECISION_PLAN_KEY, dumps_json(plan.to_json()))
        external = (Path(tmp) / "quantized.onnx_data").exists() or proto.ByteSize() >= PROTOBUF_LIMIT
        save_onnx(proto, staged, external_data=external)
        del proto
        error = measure.error_of(staged)  # the written file, loaded by ONNX Runtime
        if must_meet and error > plan.budget:  # the graph of a plan that met it when tried: only metadata differs
            raise HierarchyError(
                f"{target}: the file written measures {plan.metric} {error:.6g}, over the budget {plan.budget:g} its "
                f"plan met when tried ({plan.error:.6g}); nothing was written. Please report this."
            )
        text = json.dumps(plan.to_json(), indent=2, sort_keys=True) + "\n"
        atomic_write(plan_file, text.encode("utf-8"))
        try:
            data = staged.parent / (staged.name + "_data")
            if data.exists():
                os.replace(data, target.parent / data.name)
            os.replace(staged, target)
        except OSError as e:
            with contextlib.suppress(OSError):
                plan_file.unlink()
            raise HierarchyError(f"{target}: could not be written ({e}).") from e
    return error


def _paths(
    model: str | os.PathLike[str], output: str | os.PathLike[str], plan_out: str | os.PathLike[str] | None
) -> tuple[Path, Path, Path]:
    source, target = Path(model), Path(output)
    if not source.is_file():
        raise HierarchyError(f"{source}: no such ONNX file.")
    check_output_path(source, target)
    plan_file = Path(plan_out) if plan_out is not None else target.with_name(f"{target.stem}.plan.json")
    if plan_file.resolve() in (source.resolve(), target.resolve()):
        raise HierarchyError(f"{plan_file}: the plan file would overwrite a model; choose another --plan-out.")
    if plan_file.is_dir():
        raise HierarchyError(f"{plan_file}: is a directory; give the path of the plan's JSON file.")
    if not plan_file.parent.is_dir():
        raise HierarchyError(f"{plan_file.parent}: no such directory for {plan_file.name}.")
    return source, target, plan_file


def _file_size(path: Path) -> int:
    data = path.with_name(path.name + "_data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + "_data")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


class _Measure:
    """The float model's outputs on the calibration inputs, and the error of a candidate file against them."""

    def __init__(self, source: Path, metric: str, feeds: Mapping[str, np.ndarray] | None) -> None:
        from optimum_hierarchy.tools.sensitivity import check_metric

        with read_model_file(source) as light:
            graph = light.proto.graph
            initializers = {t.name for t in graph.initializer}
            self.inputs = [v.name for v in graph.input if v.name not in initializers]
            self.outputs = [o.name for o in graph.output]
            if feeds is None:
                feeds = generate_inputs(light.proto, source=source)
        self.feeds = _checked_feeds(source, self.inputs, feeds)
        self.shapes = {k: list(np.shape(v)) for k, v in self.feeds.items()}
        self.metric = metric
        check_metric(metric, self.outputs, source)
        self.reference = self._run(source)

    def _run(self, path: Path) -> list[np.ndarray]:
        session = make_session(path, optimization_level="disable")
        types = {i.name: i.type for i in session.get_inputs()}
        feeds = {k: v.astype(np.float16) if types.get(k) == "tensor(float16)" else v for k, v in self.feeds.items()}
        try:
            values = session.run(self.outputs, feeds)
        except ort_errors() as e:
            raise HierarchyError(
                f"{path.name}: ONNX Runtime failed to run it on the calibration inputs ({e}). Give inputs that "
                "match the model's inputs (names, types, ranks)."
            ) from e
        return [np.asarray(v) for v in values]

    def error_of(self, path: Path) -> float:
        from optimum_hierarchy.tools.sensitivity import as_error, output_metrics

        return as_error(self.metric, output_metrics(self.outputs, self.reference, self._run(path)))


def _checked_feeds(source: Path, inputs: Sequence[str], feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feeds`` if they are the model's inputs (:func:`~optimum_hierarchy.tools.calibration.check_feeds`) and
    hold at least one sample each."""
    from optimum_hierarchy.tools.calibration import check_feeds

    if not feeds:
        raise HierarchyError(f"no calibration inputs: {source} takes {', '.join(inputs)}.")
    checked = check_feeds(source, feeds, what="the calibration inputs")
    for name, value in checked.items():
        if value.size == 0:
            raise HierarchyError(f"calibration input {name!r} is empty (shape {list(value.shape)}): no sample to run.")
    return checked
