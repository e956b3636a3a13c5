"""Benchmark: ``optimum-cli hierarchy sensitivity --int4`` on base-size GPT-2 against one ``hierarchy error`` run.

Run by hand (not part of the tests; a base-size model, several minutes on 2 cores)::

    .venv/bin/python benchmarks/sensitivity.py --work /tmp/sensitivity-bench --json benchmarks/sensitivity.json

The model is built, exported and quantized as ``benchmarks/error.py`` does it (its ``build``: GPT-2 from
``GPT2Config()``, 12 layers, hidden 768, 124 M parameters, seeded random weights, saved with
``save_pretrained``, exported with :func:`optimum_hierarchy.export_task_with_hierarchy`, and every Linear
quantized to int4 with block 32). Side by side in one run, alternating, ``--repeats`` times each, as fresh
processes on the same saved inputs (``--inputs feeds.npz``, batch 1 x 128 tokens):

* **sensitivity**: ``optimum-cli hierarchy sensitivity MODEL --int4 --block-size 32 --json``: every Linear
  (every module a quantized ``MatMul`` is attributed to: GPT-2's 48 ``Conv1D``; the tied ``lm_head`` reads its
  weight through a ``Transpose`` and is not quantized) alone in int4, ranked by the outputs' rel L2;
* **error**: ``optimum-cli hierarchy error MODEL INT4 --json``: one run of the per-module error (accumulated,
  local and own, every module) of the all-int4 file.

The method, and its complexity. Quantizing one weight to ``MatMulNBits`` does not depend on the others, so
``sensitivity`` quantizes the file once, writes the float weights once as external data, runs the float
model once, and then for each of the C candidates builds the float graph with that module's nodes swapped
for its int4 nodes (no weight copied), creates one ONNX Runtime session and runs it once:
``T = T_quantize + T_run + C x (T_session + T_run)``, linear in the number of candidates, with no
per-candidate quantization. ``error`` costs about two runs (the reference with its intermediate tensors as
outputs, the candidate with the modules' copies appended) whatever the number of modules. So the ratio
sensitivity / error grows like ``C x (T_session + T_run) / T_error``, linearly in C (the results are in
``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from error import build  # the same model, export and int4 file as the error benchmark


def _timed(command: list[str], output: Path) -> float:
    start = time.perf_counter()
    with output.open("w") as out:
        subprocess.run(command, check=True, stdout=out, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="Directory for the model and its files (reused).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="Also write the numbers here.")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)

    import onnxruntime as ort

    from optimum_hierarchy.tools.inputs import generate_inputs

    reference, candidate = build(args.work)
    feeds = generate_inputs(reference, shapes={"batch_size": 1, "sequence_length": 128}, seed=0)
    npz = args.work / "feeds.npz"
    np.savez(npz, **feeds)
    cli = str(Path(sys.executable).parent / "optimum-cli")
    sensitivity = [cli, "hierarchy", "sensitivity", str(reference), "--int4", "--block-size", "32"]
    sensitivity += ["--inputs", str(npz), "--json"]
    error = [cli, "hierarchy", "error", str(reference), str(candidate), "--inputs", str(npz), "--json"]
    times: dict[str, list[float]] = {"sensitivity": [], "error": []}
    for _ in range(args.repeats):
        times["sensitivity"].append(_timed(sensitivity, args.work / "sensitivity.json"))
        times["error"].append(_timed(error, args.work / "error.json"))
    ranked = json.loads((args.work / "sensitivity.json").read_text())
    errors = json.loads((args.work / "error.json").read_text())
    candidates = len(ranked["modules"]) + len(ranked["skipped"])
    ratios = [s / e for s, e in zip(times["sensitivity"], times["error"], strict=True)]
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratio = statistics.median(ratios)
    rows = [
        ("candidates (modules with a MatMulNBits node)", str(candidates)),
        ("of which measured", str(len(ranked["modules"]))),
        ("modules in the error report", str(len(errors["modules"]))),
        ("optimum-cli hierarchy sensitivity --int4, s", f"{medians['sensitivity']:.1f}"),
        ("optimum-cli hierarchy error (all-int4 file), s", f"{medians['error']:.1f}"),
        ("sensitivity per candidate, s", f"{medians['sensitivity'] / candidates:.2f}"),
        ("ratio sensitivity / error (target <= 10)", f"{ratio:.2f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"GPT-2 base, int4 block 32, inputs 1 x 128, whole processes, median of {args.repeats} alternated pairs")
    for key, value in rows:
        print(f"{key:<{width}}  {value:>8}")
    top = ", ".join(f"{m['module']} {m['metrics']['rel_l2']:.3g}" for m in ranked["modules"][:3])
    print(f"most sensitive: {top}; all in int4: rel_l2 {ranked['all_quantized']['rel_l2']:.3g}")
    if args.json is not None:
        data = {
            "machine": {"python": platform.python_version(), "onnxruntime": ort.__version__, "cpus": _cpus()},
            "inputs": {"batch_size": 1, "sequence_length": 128},
            "block_size": 32,
            "candidates": candidates,
            "measured": len(ranked["modules"]),
            "error_modules": len(errors["modules"]),
            "seconds": times,
            "median_seconds": medians,
            "ratios": ratios,
            "ratio": ratio,
            "most_sensitive": [
                {"module": m["module"], "rel_l2": m["metrics"]["rel_l2"]} for m in ranked["modules"][:5]
            ],
            "all_quantized_rel_l2": ranked["all_quantized"]["rel_l2"],
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
