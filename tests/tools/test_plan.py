"""``hierarchy quantize --max-error``: the plan meets its budget on the written file, and nothing smaller does.

Every check is computed here, not read from the tool: the written file is run with ONNX Runtime and
measured with numpy; the candidates are the modules of the ``MatMulNBits`` nodes of a file with every
weight in int4; and the brute-force reference quantizes the model once per subset of candidates smaller
than the plan (``quantize_int4(exclude_modules=subset)``) and measures each.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from support import run_cli

from optimum_hierarchy.tools.inputs import generate_inputs
from optimum_hierarchy.tools.plan import PlanResult

BLOCK = 32


def _run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in session.get_inputs()}
    feeds = {k: v.astype(np.float16) if types[k] == "tensor(float16)" else v for k, v in feeds.items()}
    return [np.asarray(v) for v in session.run(None, feeds)]


def _rel_l2(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    r = np.concatenate([a.astype(np.float64).ravel() for a in reference if a.dtype.kind == "f"])
    c = np.concatenate([a.astype(np.float64).ravel() for a in candidate if a.dtype.kind == "f"])
    return float(np.linalg.norm(c - r) / np.linalg.norm(r))


def _modules_of(path: Path, op_type: str) -> list[str]:
    key = "pkg.optimum_hierarchy.module"
    proto = onnx.load(str(path), load_external_data=False)
    return [
        next(p.value for p in n.metadata_props if p.key == key)
        for n in proto.graph.node
        if n.op_type == op_type and any(p.key == key for p in n.metadata_props)
    ]


@dataclasses.dataclass(frozen=True)
class Planned:
    model: Path
    feeds: dict[str, np.ndarray]
    reference: list[np.ndarray]
    candidates: list[str]
    budget: float
    result: PlanResult


@pytest.fixture(scope="module")
def planned(task_exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Planned]:
    """A plan for tiny Llama and BERT at a budget of a share of the error with every Linear in int4 (a share that
    leaves a few modules kept, so that the brute force below stays under 100 quantizations)."""
    from optimum_hierarchy.tools.int4 import quantize_int4
    from optimum_hierarchy.tools.plan import plan_precision

    out: dict[str, Planned] = {}
    for case, share in (("llama", 0.12), ("bert", 0.6)):
        model = task_exports[case] / "model.onnx"
        work = tmp_path_factory.mktemp(f"plan_{case}")
        feeds = generate_inputs(model)
        reference = _run(model, feeds)
        everything = work / "all.onnx"
        quantize_int4(model, everything, block_size=BLOCK)
        budget = share * _rel_l2(reference, _run(everything, feeds))
        result = plan_precision(model, work / "int4.onnx", precision="int4", max_error=budget, block_size=BLOCK)
        out[case] = Planned(model, feeds, reference, _modules_of(everything, "MatMulNBits"), budget, result)
    return out


@pytest.mark.parametrize("case", ["llama", "bert"])
def test_budget_met_on_the_written_file(planned: dict[str, Planned], case: str) -> None:
    from optimum_hierarchy.tools.plan import plan_of, read_plan

    p = planned[case]
    result, budget, candidates = p.result, p.budget, p.candidates
    assert len(candidates) >= 12, candidates
    measured = _rel_l2(p.reference, _run(result.output, p.feeds))
    assert measured <= budget
    assert result.error == pytest.approx(measured, rel=1e-9, abs=1e-12)
    kept = result.plan.kept
    assert 0 < len(kept) < len(candidates)
    # Each kept Linear is still a float MatMul; every other candidate is a MatMulNBits.
    assert sorted(_modules_of(result.output, "MatMulNBits")) == sorted(m for m in candidates if m not in kept)
    assert set(kept) <= set(_modules_of(result.output, "MatMul"))
    # The plan: on disk beside the output and in the file's metadata, the same.
    assert result.plan_file == result.output.with_name("int4.plan.json")
    stored = plan_of(result.output)
    assert stored is not None
    assert read_plan(result.plan_file).to_json() == result.plan.to_json() == stored.to_json()
    data = json.loads(result.plan_file.read_text())
    assert data["kept"] == list(kept) and data["budget"] == budget and data["block_size"] == BLOCK
    assert data["precision"] == "int4" and data["metric"] == "rel_l2" and data["skipped"] == {}
    # Every plan tried, as data: its measured error matches its verdict; the chosen one is among them.
    assert data["tried"] and all((t["error"] <= budget) == t["within_budget"] for t in data["tried"])
    assert tuple(kept) in {tuple(t["kept"]) for t in data["tried"]}
    sizes = {tuple(t["kept"]): t["size_bytes"] for t in data["tried"]}
    assert sizes[()] < sizes[tuple(kept)]  # keeping modules float costs bytes


@pytest.mark.parametrize("case", ["llama", "bert"])
def test_no_smaller_set_of_modules_meets_the_budget(planned: dict[str, Planned], case: str, tmp_path: Path) -> None:
    """Brute force: every subset of the candidates smaller than the plan, quantized and measured here."""
    from optimum_hierarchy.tools.int4 import quantize_int4

    p = planned[case]
    result, candidates, budget = p.result, p.candidates, p.budget
    size = len(result.plan.kept)
    subsets = [s for k in range(size) for s in itertools.combinations(candidates, k)]
    assert len(subsets) == sum(math.comb(len(candidates), k) for k in range(size))
    assert subsets and len(subsets) <= 100, len(subsets)
    for subset in subsets:
        out = tmp_path / "subset.onnx"
        quantize_int4(p.model, out, block_size=BLOCK, exclude_modules=list(subset))
        error = _rel_l2(p.reference, _run(out, p.feeds))
        assert error > budget, (subset, error, budget)


def test_replay_writes_the_same_bytes(planned: dict[str, Planned], tmp_path: Path) -> None:
    from optimum_hierarchy.tools.plan import replay_plan

    p = planned["llama"]
    result = p.result
    replayed = replay_plan(p.model, tmp_path / "again.onnx", result.plan_file)
    assert replayed.output.read_bytes() == result.output.read_bytes()
    assert replayed.error == result.error and replayed.within_budget
    assert replayed.plan_file.read_text() == result.plan_file.read_text()


def test_the_plan_survives_annotate(planned: dict[str, Planned], tmp_path: Path) -> None:
    from optimum_hierarchy.tools.plan import plan_of

    result = planned["bert"].result
    copy = tmp_path / "model.onnx"
    copy.write_bytes(result.output.read_bytes())
    run_cli("hierarchy", "annotate", str(copy))
    proto = onnx.load(str(copy), load_external_data=False)
    keys = [p.key for p in proto.metadata_props]
    assert keys.count("pkg.optimum_hierarchy.precision_plan") == 1
    stored = plan_of(copy)
    assert stored is not None and stored.to_json() == result.plan.to_json()


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_budget_that_cannot_be_met(task_exports: dict[str, Path], tmp_path: Path) -> None:
    """The message gives the best error reached by a plan quantizing a module: here, computed by hand."""
    from optimum_hierarchy.tools.int4 import quantize_int4
    from optimum_hierarchy.tools.plan import BudgetError, plan_precision
    from optimum_hierarchy.tools.sensitivity import module_sensitivity

    model = task_exports["llama"] / "model.onnx"
    with pytest.raises(BudgetError) as caught:
        plan_precision(model, tmp_path / "out.onnx", precision="int4", max_error=1e-9, block_size=BLOCK)
    assert _listing(tmp_path) == []
    # The least sensitive module alone in int4, every other candidate float, measured here.
    least = module_sensitivity(model, block_size=BLOCK).modules[-1].module
    quantize_int4(model, tmp_path / "all.onnx", block_size=BLOCK)
    candidates = sorted(set(_modules_of(tmp_path / "all.onnx", "MatMulNBits")) - {least})
    assert len(candidates) >= 12
    quantize_int4(model, tmp_path / "one.onnx", block_size=BLOCK, exclude_modules=candidates)
    feeds = generate_inputs(model)
    best = _rel_l2(_run(model, feeds), _run(tmp_path / "one.onnx", feeds))
    message = str(caught.value)
    assert message.startswith("--max-error 1e-09 (rel_l2) cannot be met: the best error reached by a plan that")
    assert f"is {best:.6g} (only {least} in int4, every other candidate kept float)" in message
    assert message.endswith(
        "with every candidate kept float it is 0 (nothing quantized). Raise --max-error, or choose a higher precision."
    )


def test_bad_inputs_write_nothing(task_exports: dict[str, Path], tmp_path: Path) -> None:
    from optimum_hierarchy.errors import HierarchyError
    from optimum_hierarchy.tools.plan import plan_precision, replay_plan

    model = task_exports["bert"] / "model.onnx"
    feeds = generate_inputs(model)
    out = tmp_path / "out"
    out.mkdir()

    def fails(match: str, feeds: dict[str, np.ndarray] | None = None, max_error: float = 0.01) -> None:
        with pytest.raises(HierarchyError, match=match):
            plan_precision(model, out / "q.onnx", precision="int4", max_error=max_error, feeds=feeds)
        assert _listing(out) == []

    fails("no calibration inputs", feeds={})
    fails("calibration input 'input_ids' is empty", feeds={k: v[:0] for k, v in feeds.items()})
    fails("no array for the input 'attention_mask'", feeds={"input_ids": feeds["input_ids"]})
    fails("'pixel_values' is not an input of the model", feeds={**feeds, "pixel_values": np.zeros(3, np.float32)})
    fails("'input_ids' has 1 dimensions", feeds={k: v[0] for k, v in feeds.items()})
    fails("'input_ids' is float32, the model takes int64", feeds={**feeds, "input_ids": np.zeros((2, 3), np.float32)})
    # Token ids past the vocabulary: the right names, types and ranks, and ONNX Runtime fails on them.
    beyond = {**feeds, "input_ids": np.full_like(feeds["input_ids"], 10**6)}
    fails("ONNX Runtime failed to run it on the calibration inputs", feeds=beyond)
    fails("--max-error -1: a finite error budget", max_error=-1.0)

    # A plan made for another model: its globs match no module of BERT.
    plan = tmp_path / "llama.plan.json"
    plan.write_text(
        json.dumps(
            {
                "format": "optimum_hierarchy.precision_plan/1",
                "precision": "int4",
                "metric": "rel_l2",
                "budget": 0.01,
                "kept": ["model.layers.0.mlp.down_proj"],
                "error": 0.005,
                "size_bytes": 1,
                "kept_weights": 1,
                "quantized_weights": 1,
                "block_size": BLOCK,
                "options": {"symmetric": True},
                "granularity": "linear",
                "candidates": ["model.layers.0.mlp.down_proj"],
                "inputs": {},
                "tried": [],
            }
        )
    )
    with pytest.raises(HierarchyError, match=r"plan for another model\?.*'model.layers.0.mlp.down_proj' matches no"):
        replay_plan(model, out / "q.onnx", plan)
    assert _listing(out) == []


def test_cli(task_exports: dict[str, Path], tmp_path: Path) -> None:
    model = task_exports["llama"] / "model.onnx"
    out = tmp_path / "q.onnx"
    completed = run_cli(
        "hierarchy", "quantize", str(model), "-o", str(out), "--int4", "--block-size", str(BLOCK),
        "--max-error", "0.05", "--json", "--plot", str(tmp_path / "curve.svg"),
    )  # fmt: skip
    data = json.loads(completed.stdout)
    # The curve: one point per plan tried, plus the file written, each with its error in its tooltip.
    svg = ElementTree.parse(tmp_path / "curve.svg").getroot()
    points = [g for g in svg.iter("{http://www.w3.org/2000/svg}g") if g.get("id", "").startswith("oh-plan-point-")]
    assert len(points) == len(data["plan"]["tried"]) + 1
    (curve,) = [g for g in points if "written:" in "".join(g.itertext())]
    assert f"{data['error']:.4g}" in "".join(curve.itertext())
    feeds = generate_inputs(model)
    measured = _rel_l2(_run(model, feeds), _run(out, feeds))
    assert data["error"] == pytest.approx(measured, rel=1e-9) and measured <= 0.05
    assert data["within_budget"] and data["plan_file"] == str(tmp_path / "q.plan.json")
    assert data["plan"]["kept"] == json.loads((tmp_path / "q.plan.json").read_text())["kept"]

    again = tmp_path / "again.onnx"
    replay = run_cli("hierarchy", "quantize", str(model), "-o", str(again), "--plan", str(tmp_path / "q.plan.json"))
    assert "within the plan's budget" in replay.stdout and again.read_bytes() == out.read_bytes()

    # --max-error with --plan: exit 1, a message, nothing written.
    before = _listing(tmp_path)
    bad = run_cli(
        "hierarchy", "quantize", str(model), "-o", str(tmp_path / "x.onnx"), "--int4", "--max-error", "0.05",
        "--plan", str(tmp_path / "q.plan.json"), check=False,
    )  # fmt: skip
    assert bad.returncode == 1 and "--max-error and --plan" in bad.stderr + bad.stdout
    unmet = run_cli(
        "hierarchy", "quantize", str(model), "-o", str(tmp_path / "x.onnx"), "--int4", "--max-error", "0", check=False
    )
    assert unmet.returncode == 1 and "cannot be met: the best error reached" in unmet.stderr + unmet.stdout
    fp16 = run_cli(
        "hierarchy", "convert", str(model), "-o", str(tmp_path / "x.onnx"), "--plan", str(tmp_path / "q.plan.json"),
        check=False,
    )  # fmt: skip
    assert fp16.returncode == 1
    assert "the plan is for int4; replay it with `optimum-cli hierarchy quantize`" in fp16.stderr + fp16.stdout
    bad_plot = run_cli(
        "hierarchy", "quantize", str(model), "-o", str(tmp_path / "x.onnx"), "--int4", "--max-error", "0.05",
        "--plot", str(tmp_path / "curve.pdf"), check=False,
    )  # fmt: skip
    assert bad_plot.returncode == 1 and "curve.pdf" in bad_plot.stderr + bad_plot.stdout
    assert _listing(tmp_path) == before


@pytest.mark.parametrize(
    "case", [("int8", "linear", 1e-3, "MatMulInteger"), ("fp16", "block", 4e-4, None)], ids=["int8", "fp16"]
)
def test_int8_and_fp16_plans(
    task_exports: dict[str, Path], tmp_path: Path, case: tuple[str, str, float, str | None]
) -> None:
    """BERT: int8 by Linear; fp16 by block (converting the Linears alone leaves norms and softmax in fp16)."""
    precision, granularity, budget, op_type = case
    from optimum_hierarchy.tools.plan import plan_precision

    model = task_exports["bert"] / "model.onnx"
    feeds = generate_inputs(model)
    reference = _run(model, feeds)
    result = plan_precision(model, tmp_path / "q.onnx", precision=precision, max_error=budget, granularity=granularity)
    measured = _rel_l2(reference, _run(result.output, feeds))
    assert measured <= budget and result.error == pytest.approx(measured, rel=1e-9, abs=1e-12)
    assert result.plan.kept and result.plan.tried[0].kept == () and not result.plan.tried[0].within_budget
    if op_type is not None:
        quantized = _modules_of(result.output, op_type)
        assert quantized and not set(quantized) & set(result.plan.kept)
    else:  # fp16: the kept blocks' weights stay float32, the others' are float16
        proto = onnx.load(str(result.output))
        kinds = {t.name: t.data_type for t in proto.graph.initializer}
        assert onnx.TensorProto.FLOAT16 in kinds.values() and onnx.TensorProto.FLOAT in kinds.values()
