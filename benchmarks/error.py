"""Benchmark: ``optimum-cli hierarchy error`` on base-size GPT-2, float32 against int4.

Run by hand (not part of the tests; a base-size model, a few minutes on 2 cores)::

    .venv/bin/python benchmarks/error.py --work /tmp/error-bench --json benchmarks/error.json

GPT-2 (``GPT2Config()``: 12 layers, hidden 768, 124 M parameters) is built from its config with
seeded random weights (``torch.manual_seed(0)``), saved with ``save_pretrained`` (no hub), exported
with :func:`optimum_hierarchy.export_task_with_hierarchy` (``text-generation``, torch's dynamo
exporter) and quantized with :func:`optimum_hierarchy.tools.int4.quantize_int4` (block 32, every
Linear).

Measured side by side in one run, alternating, ``--repeats`` times each (the table gives medians):

* **error**: :func:`optimum_hierarchy.tools.error.module_errors` of the int4 file against the float32
  file, every module (accumulated and local error), on the same generated inputs;
* **plain**: what one does by hand without the tool: for each of the two files, ``onnx.load``, every
  node output of the main graph added as a graph output, an ONNX Runtime session (graph
  optimizations off, as ``error`` runs) and one run. Its time is the sum for both files;
* the same two as fresh processes: ``optimum-cli hierarchy error REF CAND --inputs feeds.npz --json``
  against ``python benchmarks/error.py --plain REF CAND feeds.npz`` (interpreter start and imports on
  both sides).

The ratios error / plain are the numbers the issue asks for (target <= 1.5). Everything under ``--work``
is reused by a rerun (the model, the export, the int4 file).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def build(work: Path) -> tuple[Path, Path]:
    """The saved model, its export and its int4 version (made once, reused by a rerun)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from optimum_hierarchy import export_task_with_hierarchy
    from optimum_hierarchy.tools.int4 import quantize_int4

    model_dir, export_dir, int4 = work / "gpt2", work / "export", work / "int4.onnx"
    if not (model_dir / "config.json").is_file():
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config()).eval().save_pretrained(model_dir)
    if not (export_dir / "model.onnx").is_file():
        start = time.perf_counter()
        export_task_with_hierarchy(model_dir, export_dir, task="text-generation")
        print(f"exported in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if not int4.is_file():
        start = time.perf_counter()
        quantize_int4(export_dir / "model.onnx", int4, block_size=32)
        print(f"quantized in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return export_dir / "model.onnx", int4


def plain_run(path: Path, feeds: dict[str, np.ndarray]) -> int:
    """Load, expose every intermediate tensor, create a session, run once; the number of outputs."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(path))
    existing = {o.name for o in proto.graph.output}
    names = dict.fromkeys(t for node in proto.graph.node for t in node.output if t and t not in existing)
    proto.graph.output.extend(onnx.ValueInfoProto(name=t) for t in names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    return len(session.run(None, {k: v for k, v in feeds.items() if k in inputs}))


def plain_process(reference: str, candidate: str, inputs: str) -> int:
    """The plain baseline as a process of its own (``--plain``)."""
    with np.load(inputs) as data:
        feeds = {k: data[k] for k in data.files}
    return plain_run(Path(reference), feeds) + plain_run(Path(candidate), feeds)


def _timed(command: list[str]) -> float:
    import subprocess

    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--plain"]:
        plain_process(*argv[1:4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="Directory for the model and its files (reused).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--json", type=Path, default=None, help="Also write the numbers here.")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)

    import onnxruntime as ort

    from optimum_hierarchy.tools.error import module_errors
    from optimum_hierarchy.tools.inputs import generate_inputs

    reference, candidate = build(args.work)
    feeds = generate_inputs(
        reference, shapes={"batch_size": args.batch_size, "sequence_length": args.sequence_length}, seed=0
    )
    npz = args.work / "feeds.npz"
    np.savez(npz, **feeds)
    cli = [str(Path(sys.executable).parent / "optimum-cli"), "hierarchy", "error", str(reference), str(candidate)]
    cli += ["--inputs", str(npz), "--json"]
    plain_cmd = [sys.executable, str(Path(__file__).resolve()), "--plain", str(reference), str(candidate), str(npz)]
    times: dict[str, list[float]] = {"error": [], "plain": [], "error_cli": [], "plain_process": []}
    report: Any = None
    outputs = 0
    for _ in range(args.repeats):
        start = time.perf_counter()
        outputs = plain_run(reference, feeds) + plain_run(candidate, feeds)
        times["plain"].append(time.perf_counter() - start)
        start = time.perf_counter()
        report = module_errors(reference, candidate, feeds=feeds)
        times["error"].append(time.perf_counter() - start)
        times["plain_process"].append(_timed(plain_cmd))
        times["error_cli"].append(_timed(cli))
    compared = sum(1 for m in report.modules if m.local is not None)
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratio = medians["error"] / medians["plain"]
    ratio_cli = medians["error_cli"] / medians["plain_process"]
    rows = [
        ("modules in the tree", str(len(report.modules))),
        ("modules with a local error", str(compared)),
        ("intermediate outputs of the two plain runs", str(outputs)),
        ("plain: 2 x (load, all outputs, session, run), s", f"{medians['plain']:.2f}"),
        ("error (accumulated + local, every module), s", f"{medians['error']:.2f}"),
        ("ratio error / plain (target <= 1.5)", f"{ratio:.2f}"),
        ("plain, as a process of its own, s", f"{medians['plain_process']:.2f}"),
        ("optimum-cli hierarchy error, s", f"{medians['error_cli']:.2f}"),
        ("ratio optimum-cli / plain process (target <= 1.5)", f"{ratio_cli:.2f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"GPT-2 base, fp32 vs int4, inputs {args.batch_size} x {args.sequence_length}, median of {args.repeats}")
    for key, value in rows:
        print(f"{key:<{width}}  {value:>8}")
    if args.json is not None:
        data = {
            "machine": {"python": platform.python_version(), "onnxruntime": ort.__version__, "cpus": _cpus()},
            "inputs": {"batch_size": args.batch_size, "sequence_length": args.sequence_length},
            "modules": len(report.modules),
            "modules_with_local_error": compared,
            "seconds": times,
            "median_seconds": medians,
            "ratio": ratio,
            "ratio_cli": ratio_cli,
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
