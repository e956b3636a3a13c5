"""Pictures of the tools' results, drawn with matplotlib: SVG text to inline in an HTML page, or SVG/PNG files.

Four pictures, each a ``*_figure`` function (a matplotlib ``Figure``) and a function of the same name without
the suffix that returns it as SVG text (no XML prolog, so it can be inlined in HTML as it is):

* :func:`error_by_layer`: a :class:`~optimum_hierarchy.tools.error.ErrorReport`'s local and accumulated error
  per layer (the repeated blocks; every measured module when there are none), two series;
* :func:`sensitivity_ranking`: a :class:`~optimum_hierarchy.tools.sensitivity.SensitivityReport`'s most
  sensitive modules as horizontal bars, the most sensitive on top;
* :func:`precision_map`: which modules are fp32, fp16, int8 or int4 (:func:`~optimum_hierarchy.tools.precision.
  module_precisions`): one row per layer with its submodules as cells (the same submodule in the same column),
  one row for each top-level module outside the layers, coloured by precision;
* :func:`plan_curve`: the error against the size of the plans tried (``size_bytes``, ``error`` and a label).

Each drawn item is an SVG group with an ``id`` (``oh-<picture>-<kind>-<n>``) and a ``<title>`` (the
browser's tooltip: the module and its value). matplotlib is imported only when a picture is drawn, and
only its object-oriented API is used (a ``Figure`` with no pyplot and no global backend), so drawing needs
no display and leaves no state behind. Text stays text (``svg.fonttype: none``); the SVG is the same on
every run (fixed hash salt, no date).
"""

from __future__ import annotations

__all__ = [
    "PRECISIONS",
    "check_path",
    "error_by_layer",
    "error_by_layer_figure",
    "plan_curve",
    "plan_curve_figure",
    "precision_map",
    "precision_map_figure",
    "save",
    "sensitivity_ranking",
    "sensitivity_ranking_figure",
    "to_svg",
]

import html
import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optimum_hierarchy.errors import HierarchyError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from optimum_hierarchy.tools.error import ErrorReport, ModuleError
    from optimum_hierarchy.tools.sensitivity import SensitivityReport

PRECISIONS = {"fp32": "#d9d9d9", "fp16": "#80b1d3", "int8": "#fdb462", "int4": "#fb8072"}
"""The precisions the map knows, in this order, with their colours; any other value is drawn in grey-violet."""
_OTHER = "#bebada"
_GROUP = re.compile(r'<g id="([^"]*)">')
_LAYER = re.compile(r"^\d+$")
_TITLES = "_optimum_hierarchy_titles"
"""Attribute of a figure: the tooltip of each SVG group id drawn in it."""


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    setattr(figure, _TITLES, {})
    return figure


def _title(figure: Figure, gid: str, text: str) -> str:
    getattr(figure, _TITLES)[gid] = text
    return gid


def to_svg(figure: Figure) -> str:
    """The figure as SVG text from ``<svg`` on: text kept as text, the same bytes on every run, tooltips added."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "optimum-hierarchy"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    titles: Mapping[str, str] = getattr(figure, _TITLES, {})

    def with_title(match: re.Match[str]) -> str:
        title = titles.get(html.unescape(match.group(1)))
        return match.group(0) if title is None else f"{match.group(0)}<title>{html.escape(title)}</title>"

    return _GROUP.sub(with_title, text[text.index("<svg") :])


def check_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`Path` if a picture can be written there (before anything long is computed).

    Raises:
        HierarchyError: its suffix is not .svg or .png, or its directory does not exist.
    """
    out = Path(path)
    if out.suffix.lower() not in (".svg", ".png"):
        raise HierarchyError(f"{out}: a picture is written as .svg or .png; give one of those suffixes.")
    if not out.parent.is_dir():
        raise HierarchyError(f"{out}: cannot write the picture: no directory {out.parent}; create it first.")
    return out


def save(picture: str | Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``picture`` to ``path``, as SVG or PNG by its suffix; a PNG needs the figure (``*_figure``).

    Raises:
        HierarchyError: another suffix, PNG asked of SVG text, or the file cannot be written.
    """
    out = check_path(path)
    suffix = out.suffix.lower()
    try:
        if isinstance(picture, str):
            if suffix == ".png":
                raise HierarchyError(f"{out}: PNG is drawn from the figure (the *_figure functions), not SVG text.")
            out.write_text('<?xml version="1.0" encoding="utf-8" standalone="no"?>\n' + picture, encoding="utf-8")
        elif suffix == ".svg":
            out.write_text('<?xml version="1.0" encoding="utf-8" standalone="no"?>\n' + to_svg(picture), "utf-8")
        else:
            picture.savefig(out, format="png", dpi=150, metadata={"Software": None})
    except OSError as e:
        raise HierarchyError(f"{out}: cannot write the picture ({e.strerror or e}); choose a writable path.") from e
    return out


def _layer_of(path: str) -> str | None:
    """The layer a module lies in: its path up to the first all-digit segment (``encoder.layer.3``), if any."""
    parts = path.split(".") if path else []
    for k, part in enumerate(parts):
        if _LAYER.match(part):
            return ".".join(parts[: k + 1])
    return None


def _empty(axes: Axes, what: str) -> None:
    axes.text(0.5, 0.5, what, ha="center", va="center", transform=axes.transAxes)
    axes.set_axis_off()


def error_by_layer_figure(
    report: ErrorReport, *, modules: Iterable[str] | None = None, metric: str = "rel_l2"
) -> Figure:
    """Local and accumulated ``metric`` (``rel_l2``, ``max_abs`` or ``cosine``) of each layer of ``report``.

    ``modules``: which modules, in this order; by default the layers (each module whose path ends in an
    all-digit segment: ``encoder.layer.3``), or every module with a measured error when there is no layer.
    A module whose local error was not measured has no point in that series.
    """
    if metric not in ("rel_l2", "max_abs", "cosine"):
        raise HierarchyError(f"metric {metric!r}: one of rel_l2, max_abs, cosine.")
    rows: dict[str, ModuleError] = {m.module: m for m in report.modules}
    if modules is not None:
        chosen = list(modules)
        if unknown := [m for m in chosen if m not in rows]:
            raise HierarchyError(f"{unknown[0]!r} is not a module of the error report.")
    else:
        measured = [m.module for m in report.modules if m.accumulated is not None or m.local is not None]
        chosen = [m for m in measured if m and _layer_of(m) == m] or measured
    figure = _figure(max(6.0, min(30.0, 1.5 + 0.4 * len(chosen))), 4.5)
    axes = figure.add_subplot()
    if not chosen:
        _empty(axes, "no module was measured")
        return figure
    label = {"rel_l2": "relative L2 error", "max_abs": "largest absolute error", "cosine": "cosine similarity"}[metric]
    values: list[list[float]] = []
    series = (
        ("accumulated", "accumulated: the model run end to end", "o", "#d62728"),
        ("local", "local: the module alone, fed the reference's inputs", "s", "#1f77b4"),
    )
    for kind, legend, marker, colour in series:
        ys = [_value(rows[m], kind, metric) for m in chosen]
        values.append([y for y in ys if not math.isnan(y)])
        gid = _title(figure, f"oh-error-{kind}", legend)
        axes.plot(range(len(chosen)), ys, marker=marker, color=colour, label=legend, gid=gid)
        for x, (module, y) in enumerate(zip(chosen, ys, strict=True)):
            if not math.isnan(y):  # an invisible marker per point: its tooltip names the module and the value
                point = _title(figure, f"oh-error-{kind}-{x}", f"{module}: {kind} {metric} {y:.4g}")
                axes.plot([x], [y], marker=marker, color=colour, alpha=0.0, gid=point)
    positive = [v for vs in values for v in vs if v > 0]
    if metric != "cosine" and positive:
        if all(v > 0 for vs in values for v in vs):
            axes.set_yscale("log")
        else:  # exact zeros (modules kept in float) stay on the picture
            axes.set_yscale("symlog", linthresh=min(positive))
    axes.set_xticks(range(len(chosen)), [m or "(root)" for m in chosen], rotation=60 if len(chosen) > 4 else 0)
    for tick in axes.get_xticklabels():
        tick.set_horizontalalignment("right" if len(chosen) > 4 else "center")
    axes.set_ylabel(f"{label} of the outputs")
    axes.set_title(f"Error per module: {report.candidate.name} against {report.reference.name}")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    return figure


def _value(row: ModuleError, kind: str, metric: str) -> float:
    metrics = row.accumulated if kind == "accumulated" else row.local
    return float("nan") if metrics is None else float(getattr(metrics, metric))


def error_by_layer(report: ErrorReport, *, modules: Iterable[str] | None = None, metric: str = "rel_l2") -> str:
    """:func:`error_by_layer_figure` as SVG text."""
    return to_svg(error_by_layer_figure(report, modules=modules, metric=metric))


def sensitivity_ranking_figure(report: SensitivityReport, *, top: int | None = 20) -> Figure:
    """The ``top`` most sensitive modules of ``report`` (all with ``None``) as bars, the most sensitive on top."""
    rows = list(report.modules if top is None else report.modules[: max(top, 0)])
    figure = _figure(8.0, max(2.5, 1.2 + 0.28 * len(rows)))
    axes = figure.add_subplot()
    if not rows:
        _empty(axes, "no module was measured")
        return figure
    metric = report.metric
    shown = f"1 - {metric}" if metric in ("cosine", "top1") else metric
    for y, row in enumerate(rows):
        gid = _title(figure, f"oh-sensitivity-bar-{y}", f"{row.module}: {shown} {row.error:.4g}")
        axes.barh(y, row.error, color="#fb8072" if y < 3 else "#80b1d3", gid=gid)
    axes.set_yticks(range(len(rows)), [r.module or "(root)" for r in rows], fontsize="small")
    axes.invert_yaxis()  # the most sensitive (the report's first) on top
    axes.set_xlabel(f"{shown} at the outputs with only this module in {report.precision}")
    everything = report.all_quantized.get(metric)
    note = f"; all candidates in {report.precision}: {metric} {everything:.4g}" if everything is not None else ""
    more = f"the {len(rows)} most sensitive of {len(report.modules)}" if len(rows) < len(report.modules) else ""
    axes.set_title(f"Sensitivity of {report.model.name}{': ' + more if more else ''}{note}", fontsize="medium")
    axes.grid(True, axis="x", alpha=0.3)
    return figure


def sensitivity_ranking(report: SensitivityReport, *, top: int | None = 20) -> str:
    """:func:`sensitivity_ranking_figure` as SVG text."""
    return to_svg(sensitivity_ranking_figure(report, top=top))


def precision_map_figure(precisions: Mapping[str, str], *, title: str = "Precision by module") -> Figure:
    """A map of ``precisions`` (module path -> ``fp32``, ``fp16``, ``int8``, ``int4``...): one cell per module.

    Each layer (a path up to its first all-digit segment) is a row, its submodules cells in columns shared by
    all layers (named on top); each top-level module outside the layers is a row of its own, its submodules'
    names written in their cells.
    """
    from matplotlib.patches import Patch, Rectangle

    rows: dict[str, list[tuple[str, str, str]]] = {}  # row name -> its cells: (label, module, precision)
    layers: set[str] = set()
    columns: list[str] = []
    for module, precision in precisions.items():
        layer = _layer_of(module)
        if layer is not None:
            cell = module[len(layer) + 1 :] or "(the layer)"
            layers.add(layer)
            if cell not in columns:
                columns.append(cell)
        else:
            top, _, rest = module.partition(".")
            layer, cell = top or "(root)", rest or top or "(root)"
        rows.setdefault(layer, []).append((cell, module, precision))
    names = list(rows)  # in the order of the modules given (the module tree's: embeddings, layers, head)
    widest = max([len(columns), *(len(rows[n]) for n in names if n not in layers)], default=0)
    figure = _figure(max(6.0, min(30.0, 2.5 + 0.55 * widest)), max(2.5, 2.2 + 0.3 * len(names)))
    axes = figure.add_subplot()
    if not names:
        _empty(axes, "no module has weights")
        return figure
    count = 0
    for y, name in enumerate(names):
        # a row outside the layers has no column headings: its cells share the width, each with its name
        width = 1.0 if name in layers else widest / len(rows[name])
        for position, (cell, module, precision) in enumerate(rows[name]):
            x = columns.index(cell) if name in layers else position * width
            if name not in layers:
                axes.text(x + width / 2, y + 0.5, cell, ha="center", va="center", fontsize=6, clip_on=True)
            gid = _title(figure, f"oh-precision-cell-{count}", f"{module or '(root)'}: {precision}")
            colour = PRECISIONS.get(precision, _OTHER)
            box = Rectangle((x + 0.04, y + 0.06), width - 0.08, 0.88, facecolor=colour, edgecolor="white", gid=gid)
            axes.add_patch(box)
            count += 1
    axes.set_xlim(0, max(widest, 1))
    axes.set_ylim(len(names), 0)
    axes.set_yticks([y + 0.5 for y in range(len(names))], names, fontsize="small")
    axes.xaxis.tick_top()
    axes.set_xticks([x + 0.5 for x in range(len(columns))], columns, rotation=45, ha="left", fontsize="small")
    axes.tick_params(length=0)
    for side in axes.spines.values():
        side.set_visible(False)
    present = [p for p in PRECISIONS if p in precisions.values()]
    present += sorted({p for p in precisions.values() if p not in PRECISIONS})
    handles = [Patch(facecolor=PRECISIONS.get(p, _OTHER), label=p) for p in present]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small")
    figure.suptitle(title, fontsize="medium")
    return figure


def precision_map(precisions: Mapping[str, str], *, title: str = "Precision by module") -> str:
    """:func:`precision_map_figure` as SVG text."""
    return to_svg(precision_map_figure(precisions, title=title))


def _point(plan: Any) -> tuple[float, float, str]:
    """``(size_bytes, error, label)`` of a plan: a tuple, or an object with ``size_bytes`` and ``error`` and a
    ``label``, else ``kept`` globs (a :class:`~optimum_hierarchy.tools.plan.TriedPlan`: its ``step`` and how many
    modules it keeps; another object: the globs)."""
    if isinstance(plan, tuple | list):
        size, error, label = plan
        return float(size), float(error), str(label)
    label = getattr(plan, "label", None)
    if label is None:
        kept = tuple(getattr(plan, "kept", ()))
        step = getattr(plan, "step", None)
        globs = ", ".join(kept) if kept else "nothing kept"
        label = globs if step is None else f"{step}: {len(kept)} kept"
    return float(plan.size_bytes), float(plan.error), str(label)


def plan_curve_figure(
    tried: Sequence[Any],
    *,
    budget: float | None = None,
    chosen: int | None = None,
    others: Sequence[tuple[float, float, str]] = (),
    metric: str = "error",
) -> Figure:
    """The error (``metric``) against the size in MB of each plan in ``tried``: ``(size_bytes, error, label)``
    tuples or plan objects with those attributes, joined along their front (each plan smaller or better than
    every other one of its size or less). ``budget``: the error budget, a horizontal line; ``chosen``: the index
    in ``tried`` of the plan picked, circled; ``others``: ``(size_bytes, error, label)`` of other choices to
    compare with (fixed patterns, random picks), drawn as squares. A label several plans share is written once
    (each point's tooltip still names it)."""
    points = [_point(p) for p in tried]
    figure = _figure(8.0, 5.0)
    axes = figure.add_subplot()
    if not points:
        _empty(axes, "no plan was tried")
        return figure
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front: list[int] = []
    for i in order:
        if not front or points[i][1] < points[front[-1]][1]:
            front.append(i)
    axes.plot([points[i][0] / 1e6 for i in front], [points[i][1] for i in front], color="#1f77b4", alpha=0.4)
    written: set[str] = set()
    for i in order:
        size, error, label = points[i]
        gid = _title(figure, f"oh-plan-point-{i}", f"{label}: {size / 1e6:.3f} MB, {metric} {error:.4g}")
        axes.plot([size / 1e6], [error], marker="o", color="#1f77b4", linestyle="none", gid=gid)
        if label not in written:
            written.add(label)
            axes.annotate(label, (size / 1e6, error), textcoords="offset points", xytext=(4, 4), fontsize=6)
    for k, (size, error, label) in enumerate(others):
        gid = _title(figure, f"oh-plan-other-{k}", f"{label}: {size / 1e6:.3f} MB, {metric} {error:.4g}")
        axes.plot([size / 1e6], [error], marker="s", color="#ff7f0e", linestyle="none", gid=gid)
        axes.annotate(label, (size / 1e6, error), textcoords="offset points", xytext=(-4, 4), ha="right", fontsize=6)
    if chosen is not None:
        size, error, _ = points[chosen]
        axes.plot([size / 1e6], [error], marker="o", markersize=14, fillstyle="none", color="#d62728", label="chosen")
    if budget is not None:
        axes.axhline(budget, color="#d62728", linestyle="--", linewidth=1, label=f"budget {budget:g}")
    if all(p[1] > 0 for p in [*points, *others]):
        axes.set_yscale("log")
    axes.set_xlabel("size of the file (MB)")
    axes.set_ylabel(metric)
    axes.set_title("Error against size of the plans tried", fontsize="medium")
    axes.grid(True, alpha=0.3)
    if budget is not None or chosen is not None:
        axes.legend(loc="best", fontsize="small")
    return figure


def plan_curve(
    tried: Sequence[Any],
    *,
    budget: float | None = None,
    chosen: int | None = None,
    others: Sequence[tuple[float, float, str]] = (),
    metric: str = "error",
) -> str:
    """:func:`plan_curve_figure` as SVG text."""
    return to_svg(plan_curve_figure(tried, budget=budget, chosen=chosen, others=others, metric=metric))
