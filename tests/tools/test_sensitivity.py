"""``hierarchy sensitivity --int4``: the ranking equals a brute-force reference computed here.

The reference quantizes each candidate module alone with ``quantize_int4(include_modules=[module])`` (one
file per module), runs it and the float file with ONNX Runtime, and measures the outputs with numpy. The
tool's metrics must equal it for every module, and its ranking must be the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from support import run_cli

from optimum_hierarchy.tools.inputs import generate_inputs


def _run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, feeds)]


def _rel_l2(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    r = np.concatenate([a.astype(np.float64).ravel() for a in reference if a.dtype.kind == "f"])
    c = np.concatenate([a.astype(np.float64).ravel() for a in candidate if a.dtype.kind == "f"])
    return float(np.linalg.norm(c - r) / np.linalg.norm(r))


def _kl(reference: np.ndarray, candidate: np.ndarray) -> float:
    p = torch.softmax(torch.from_numpy(reference.astype(np.float64)), -1)
    log_q = torch.log_softmax(torch.from_numpy(candidate.astype(np.float64)), -1)
    return float(torch.sum(p * (torch.log(p) - log_q), -1).mean())


@pytest.mark.parametrize(("case", "metric"), [("llama", "kl"), ("bert", "rel_l2")])
def test_ranking_equals_quantizing_each_module_alone(
    task_exports: dict[str, Path], tmp_path: Path, case: str, metric: str
) -> None:
    from optimum_hierarchy.tools.int4 import quantize_int4
    from optimum_hierarchy.tools.sensitivity import module_sensitivity

    model = task_exports[case] / "model.onnx"
    report = module_sensitivity(model, metric=metric, block_size=32)
    linears = {n.name for n in onnx.load(str(model), load_external_data=False).graph.node if n.op_type == "MatMul"}
    assert report.modules and not report.skipped
    assert len(report.modules) >= 8, [m.module for m in report.modules]

    feeds = generate_inputs(model)
    names = [o.name for o in onnx.load(str(model), load_external_data=False).graph.output]
    reference = _run(model, feeds)
    brute = {}
    for row in report.modules:
        out = tmp_path / f"{row.module}.onnx"
        quantize_int4(model, out, block_size=32, include_modules=[row.module])
        values = _run(out, feeds)
        if metric == "kl":
            k = names.index("logits")
            brute[row.module] = _kl(reference[k], values[k])
        else:
            brute[row.module] = _rel_l2(reference, values)
        assert row.metrics[metric] == pytest.approx(brute[row.module], rel=1e-6, abs=1e-12), row.module
        assert set(row.nodes) <= {f"{name}_Q4" for name in linears}
    assert [r.module for r in report.modules] == sorted(brute, key=lambda m: (-brute[m], m))


def test_blocks_and_the_cli(task_exports: dict[str, Path]) -> None:
    model = task_exports["llama"] / "model.onnx"
    completed = run_cli("hierarchy", "sensitivity", str(model), "--int4", "--granularity", "block", "--json")
    report = json.loads(completed.stdout)
    assert [m["module"] for m in report["modules"]] in (
        ["model.layers.0", "model.layers.1"],
        ["model.layers.1", "model.layers.0"],
    )
    assert all(m["metrics"]["rel_l2"] > 0 for m in report["modules"])
    # a block's error comes from its own Linears only: each block's weights are its 7 Linears'
    assert all(m["weights"] > 0 for m in report["modules"])
    table = run_cli("hierarchy", "sensitivity", str(model), "--int4", "--metric", "top1").stdout
    assert "model.layers.0.self_attn.q_proj" in " ".join(table.split())


def test_bad_input_is_a_clear_error(task_exports: dict[str, Path], tmp_path: Path) -> None:
    model = task_exports["bert"] / "model.onnx"
    no_logits = run_cli("hierarchy", "sensitivity", str(model), "--int4", "--metric", "kl", check=False)
    assert no_logits.returncode == 1 and "needs an output named logits" in " ".join(no_logits.stderr.split())
    missing = run_cli("hierarchy", "sensitivity", str(tmp_path / "nope.onnx"), "--int4", check=False)
    assert missing.returncode == 1 and "no such ONNX file" in missing.stderr
    assert "Traceback" not in no_logits.stderr + missing.stderr
