"""The pictures: valid SVG with one bar, cell or point per item of the data given, and its labels as text.

The reports are built here from known modules (so what must be drawn is known without the tools); the
counts are read from the SVG itself (the ``oh-*`` groups matplotlib writes for the drawn items).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import onnx
import pytest
from support import run_cli

from optimum_hierarchy import plots
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.tools.error import ErrorReport, Metrics, ModuleError
from optimum_hierarchy.tools.sensitivity import ModuleSensitivity, SensitivityReport

SVG = "{http://www.w3.org/2000/svg}"
LAYERS = 4
SUBMODULES = ("attention.self.query", "attention.self.key", "attention.output.dense", "output.dense")


def _parse(svg: str) -> ET.Element:
    assert svg.startswith("<svg")
    return ET.fromstring(svg)


def _groups(root: ET.Element, prefix: str) -> dict[str, ET.Element]:
    return {g.get("id", ""): g for g in root.iter(f"{SVG}g") if re.fullmatch(rf"{prefix}\d+", g.get("id", ""))}


def _texts(root: ET.Element) -> str:
    return "\n".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))


def _title(group: ET.Element) -> str:
    title = group.find(f"{SVG}title")
    assert title is not None and title.text
    return title.text


def _error_report() -> ErrorReport:
    rows = [ModuleError("", "BertModel", ("out",), Metrics(1.0, 0.3, 0.9), None, "the root")]
    rows.append(ModuleError("encoder", "BertEncoder", ("h",), Metrics(1.0, 0.3, 0.9), Metrics(1.0, 0.3, 0.9)))
    for i in range(LAYERS):
        local = None if i == 2 else Metrics(0.1, 0.0 if i == 0 else 0.01 * i, 0.99)
        rows.append(ModuleError(f"encoder.layer.{i}", "BertLayer", ("h",), Metrics(0.1, 0.02 * (i + 1), 0.98), local))
        rows.append(ModuleError(f"encoder.layer.{i}.output", "BertOutput", ("h",), Metrics(0.1, 0.5, 0.9), local))
    rows.append(ModuleError("pooler", "BertPooler", (), None, None, "not compared"))
    return ErrorReport(Path("float.onnx"), Path("int4.onnx"), {"input_ids": [2, 16]}, tuple(rows))


def test_error_by_layer_draws_both_series_over_the_layers() -> None:
    report = _error_report()
    layers = [f"encoder.layer.{i}" for i in range(LAYERS)]
    with_local = [m.module for m in report.modules if m.module in layers and m.local is not None]
    assert len(with_local) == LAYERS - 1  # layer 2 has no local error: no point in that series
    root = _parse(plots.error_by_layer(report))
    accumulated, local = _groups(root, "oh-error-accumulated-"), _groups(root, "oh-error-local-")
    assert len(accumulated) == LAYERS and len(local) == len(with_local)
    assert sorted(_title(g).split(":")[0] for g in accumulated.values()) == layers
    assert sorted(_title(g).split(":")[0] for g in local.values()) == with_local
    assert "encoder.layer.0: local rel_l2 0" in [_title(g) for g in local.values()]  # an exact zero is drawn
    texts = _texts(root)
    assert all(layer in texts for layer in layers) and "encoder.layer.0.output" not in texts
    assert "accumulated" in texts and "local" in texts and "int4.onnx" in texts


def test_error_by_layer_given_modules_and_without_layers() -> None:
    report = _error_report()
    root = _parse(plots.error_by_layer(report, modules=["encoder", "encoder.layer.1.output"], metric="max_abs"))
    assert len(_groups(root, "oh-error-accumulated-")) == 2
    assert "encoder.layer.1.output" in _texts(root) and "largest absolute error" in _texts(root)
    flat = dataclasses.replace(report, modules=tuple(m for m in report.modules if ".layer." not in m.module))
    measured = [m for m in flat.modules if m.accumulated is not None]
    assert len(measured) == 2  # no layer: every measured module
    assert len(_groups(_parse(plots.error_by_layer(flat)), "oh-error-accumulated-")) == len(measured)
    with pytest.raises(HierarchyError, match="'decoder' is not a module"):
        plots.error_by_layer(report, modules=["decoder"])


def _bar_box(group: ET.Element) -> tuple[float, float, float]:
    """(left, right, top) of a bar's rectangle in SVG coordinates (y grows downwards)."""
    path = group.find(f"{SVG}path")
    assert path is not None
    numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", path.get("d", ""))]
    xs, ys = numbers[0::2], numbers[1::2]
    return min(xs), max(xs), min(ys)


def test_sensitivity_ranking_bars_most_sensitive_on_top() -> None:
    errors = {f"encoder.layer.{i // 4}.{SUBMODULES[i % 4]}": 0.9 / (i + 1) for i in range(7)}
    rows = tuple(
        ModuleSensitivity(m, "Linear", (f"n{k}",), 4096, {"rel_l2": e}, e) for k, (m, e) in enumerate(errors.items())
    )
    report = SensitivityReport(Path("bert.onnx"), "int4", "linear", "rel_l2", 32, {}, rows, {"rel_l2": 0.4}, {})
    root = _parse(plots.sensitivity_ranking(report, top=5))
    bars = _groups(root, "oh-sensitivity-bar-")
    assert len(bars) == 5
    boxes = [_bar_box(bars[f"oh-sensitivity-bar-{i}"]) for i in range(5)]
    top_edges = [top for _, _, top in boxes]
    assert top_edges == sorted(top_edges)  # the first drawn is the highest
    widths = [right - left for left, right, _ in boxes]
    expected = sorted(errors.values(), reverse=True)[:5]
    for width, error in zip(widths, expected, strict=True):
        assert width / widths[0] == pytest.approx(error / expected[0], rel=1e-3)  # bars to scale
    texts = _texts(root)
    assert all(m in texts for m in list(errors)[:5]) and list(errors)[5] not in texts
    assert "the 5 most sensitive of 7" in texts and "0.4" in texts
    assert len(_groups(_parse(plots.sensitivity_ranking(report, top=None)), "oh-sensitivity-bar-")) == 7


def _precisions() -> dict[str, str]:
    out = {"embeddings.word_embeddings": "fp32", "embeddings.position_embeddings": "fp16", "pooler.dense": "int8"}
    for layer in range(LAYERS):
        for k, sub in enumerate(SUBMODULES):
            out[f"encoder.layer.{layer}.{sub}"] = "fp32" if layer == 0 else ("int4" if k % 2 else "int8")
    return out


def test_precision_map_one_cell_per_module_in_its_precision() -> None:
    precisions = _precisions()
    root = _parse(plots.precision_map(precisions))
    cells = _groups(root, "oh-precision-cell-")
    assert len(cells) == len(precisions) == 3 + LAYERS * len(SUBMODULES)
    drawn = dict(_title(g).split(": ") for g in cells.values())
    assert drawn == precisions
    colours = {}
    columns: dict[str, set[float]] = {}
    for group in cells.values():
        module, precision = _title(group).split(": ")
        path = group.find(f"{SVG}path")
        assert path is not None
        colours.setdefault(precision, set()).add(re.findall(r"fill: (#[0-9a-f]{6})", path.get("style", ""))[0])
        if module.startswith("encoder.layer."):
            left, _, _ = _bar_box(group)
            columns.setdefault(module.split(".", 3)[3], set()).add(round(left, 1))
    assert all(len(c) == 1 for c in colours.values()) and len({c for cs in colours.values() for c in cs}) == 4
    assert sorted(columns) == sorted(SUBMODULES) and all(len(x) == 1 for x in columns.values())  # one column each
    assert len({x for xs in columns.values() for x in xs}) == len(SUBMODULES)
    texts = _texts(root)
    rows = ["embeddings", "pooler", *(f"encoder.layer.{i}" for i in range(LAYERS))]
    assert all(label in texts for label in [*rows, *SUBMODULES, "fp32", "fp16", "int8", "int4", "word_embeddings"])


@dataclasses.dataclass(frozen=True)
class _Plan:
    kept: tuple[str, ...]
    size_bytes: int
    error: float


@dataclasses.dataclass(frozen=True)
class _Tried:  # the fields plots reads of tools.plan.TriedPlan
    step: str
    kept: tuple[str, ...]
    size_bytes: int
    error: float


def test_plan_curve_one_point_per_plan() -> None:
    tried = [(4_000_000, 0.3, "nothing kept"), (9_000_000, 0.05, "encoder.layer.0.*"), (16_000_000, 0.0, "all")]
    root = _parse(plots.plan_curve(tried, budget=0.1, chosen=1))
    points = _groups(root, "oh-plan-point-")
    assert len(points) == len(tried)
    assert {_title(g).split(":")[0] for g in points.values()} == {label for _, _, label in tried}
    texts = _texts(root)
    assert all(label in texts for _, _, label in tried) and "budget 0.1" in texts and "chosen" in texts
    plans = [_Plan(("encoder.layer.0.*", "pooler"), 9_000_000, 0.05), _Plan((), 4_000_000, 0.3)]
    root = _parse(plots.plan_curve(plans))
    assert len(_groups(root, "oh-plan-point-")) == 2
    assert "encoder.layer.0.*, pooler" in _texts(root) and "nothing kept" in _texts(root)
    tried = [_Tried("all", (), 4_000_000, 0.3), _Tried("bisect", ("a", "b", "c"), 9_000_000, 0.01)]
    tried += [_Tried("eliminate", ("a", "b"), 8_000_000, 0.02 + k / 100) for k in range(3)]
    others = [(7_000_000, 0.2, "first and last layers"), (5_000_000, 0.25, "k_quant_mixed")]
    root = _parse(plots.plan_curve(tried, others=others))
    assert len(_groups(root, "oh-plan-point-")) == len(tried) and len(_groups(root, "oh-plan-other-")) == 2
    texts = _texts(root).split("\n")
    assert {"all: 0 kept", "bisect: 3 kept", "first and last layers", "k_quant_mixed"} <= set(texts)
    assert texts.count("eliminate: 2 kept") == 1  # a label three plans share, written once


def test_empty_data_draws_a_message() -> None:
    report = SensitivityReport(Path("m.onnx"), "int4", "linear", "rel_l2", 32, {}, (), {}, {})
    assert "no module was measured" in _texts(_parse(plots.sensitivity_ranking(report)))
    assert "no module has weights" in _texts(_parse(plots.precision_map({})))
    assert "no plan was tried" in _texts(_parse(plots.plan_curve([])))


def test_save_by_suffix(tmp_path: Path) -> None:
    precisions = _precisions()
    svg = plots.precision_map(precisions)
    assert svg == plots.precision_map(precisions)  # the same text on every run
    written = plots.save(svg, tmp_path / "map.svg")
    assert len(_groups(ET.parse(written).getroot(), "oh-precision-cell-")) == len(precisions)
    png = plots.save(plots.precision_map_figure(precisions), tmp_path / "map.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(HierarchyError, match=r"\.svg or \.png"):
        plots.save(svg, tmp_path / "map.pdf")
    with pytest.raises(HierarchyError, match="PNG is drawn from the figure"):
        plots.save(svg, tmp_path / "other.png")
    assert not (tmp_path / "other.png").exists()
    with pytest.raises(HierarchyError, match="no directory"):
        plots.save(svg, tmp_path / "missing" / "map.svg")
    (tmp_path / "dir.svg").mkdir()
    with pytest.raises(HierarchyError, match="cannot write"):
        plots.save(svg, tmp_path / "dir.svg")


def test_matplotlib_is_imported_only_to_draw() -> None:
    modules = "optimum_hierarchy, optimum_hierarchy.plots, optimum_hierarchy.tools.precision"
    code = f"import sys, {modules}\nprint('matplotlib' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"


def test_sensitivity_cli_plot(task_exports: dict[str, Path], tmp_path: Path) -> None:
    """``hierarchy sensitivity --plot``: one bar per module measured, in the order of the ranking printed."""
    model = task_exports["bert"] / "model.onnx"
    plot = tmp_path / "ranking.svg"
    completed = run_cli(
        "hierarchy", "sensitivity", str(model), "--int4", "--block-size", "32", "--json", "--plot", str(plot)
    )
    ranked = [m["module"] for m in json.loads(completed.stdout)["modules"]]
    linears = {n.name for n in onnx.load(str(model), load_external_data=False).graph.node if n.op_type == "MatMul"}
    assert len(ranked) >= 12 and len(linears) >= len(ranked)
    bars = _groups(ET.parse(plot).getroot(), "oh-sensitivity-bar-")
    assert [_title(bars[f"oh-sensitivity-bar-{i}"]).split(":")[0] for i in range(len(bars))] == ranked

    bad = tmp_path / "ranking.pdf"
    failed = run_cli("hierarchy", "sensitivity", str(model), "--int4", "--plot", str(bad), check=False)
    assert failed.returncode == 1 and ".svg or .png" in failed.stderr and "Traceback" not in failed.stderr
    assert not bad.exists()
