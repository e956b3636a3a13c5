"""Benchmark: ``HierarchyOnnxExporter`` against transformers' ``OnnxExporter``, ``export_for_generation`` of a base-size decoder.

Run by hand (not part of the tests; a base-size model, several minutes on 2 cores)::

    .venv-core/bin/python benchmarks/transformers_exporter.py --work /tmp/tx-bench --json benchmarks/transformers_exporter.json

The model is a 12-layer Llama (``LlamaConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
num_key_value_heads=4, num_hidden_layers=12, vocab_size=32000)``, 162 M parameters) built from its config with
seeded random weights and saved with ``save_pretrained`` (no hub). Each measured run is a fresh process that
loads it and runs ``export_for_generation`` on the same prompt (``OnnxConfig(dynamic=True)``, or with
``--ort-fusions cpu``), with ``OnnxExporter`` (**plain**) or ``HierarchyOnnxExporter`` (**hierarchy**), then
``save_pretrained`` into a new directory. The two alternate, ``--repeats`` times each; the table gives medians of

* the export call alone (``export_for_generation``), timed inside the process;
* the whole process's wall time and its peak resident memory (``ru_maxrss`` of the finished child).

The ratios hierarchy / plain are the numbers the issue asks for (target <= 1.05).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LLAMA = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "num_hidden_layers": 12,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
}
PROMPT = 16


def build(model_dir: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (model_dir / "config.json").is_file():
        return
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**LLAMA)).save_pretrained(model_dir)


def one(kind: str, model_dir: Path, out: Path, ort_fusions: str | None) -> None:
    """A measured child: load, export, save; print the export call's seconds as JSON."""
    import torch
    from transformers import LlamaForCausalLM
    from transformers.exporters import OnnxConfig, OnnxExporter

    from optimum_hierarchy import HierarchyOnnxExporter

    model = LlamaForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.arange(3, 3 + PROMPT)[None]
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    exporter = HierarchyOnnxExporter() if kind == "hierarchy" else OnnxExporter()
    start = time.perf_counter()
    exported = exporter.export_for_generation(model, inputs, OnnxConfig(dynamic=True, ort_fusions=ort_fusions))
    seconds = time.perf_counter() - start
    exported.save_pretrained(out)
    nodes = {name: len(list(c.program.graph)) for name, c in exported.components.items()}
    print(json.dumps({"export_s": seconds, "nodes": nodes}))


def measure(kind: str, model_dir: Path, out: Path, ort_fusions: str | None) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, __file__, "--one", kind, "--model", str(model_dir), "--out", str(out)]
    if ort_fusions:
        command += ["--ort-fusions", ort_fusions]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stdout = process.stdout.read() if process.stdout is not None else ""
    if status != 0:
        raise SystemExit(f"{kind} run failed (status {status})")
    child = json.loads(stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, **child}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/tx-bench"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ort-fusions", default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", choices=("plain", "hierarchy"), help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one, args.model, args.out, args.ort_fusions)
        return
    model_dir = args.work / "llama-12"
    build(model_dir)
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "hierarchy": []}
    for _ in range(args.repeats):
        for kind in ("plain", "hierarchy"):
            runs[kind].append(measure(kind, model_dir, args.work / f"out-{kind}", args.ort_fusions))
            print(kind, runs[kind][-1], flush=True)
    rows = []
    for figure in ("export_s", "wall_s", "peak_rss_mb"):
        plain = statistics.median(r[figure] for r in runs["plain"])
        hierarchy = statistics.median(r[figure] for r in runs["hierarchy"])
        rows.append((figure, plain, hierarchy, hierarchy / plain))
    print(
        f"\n12-layer Llama (162 M parameters), export_for_generation, ort_fusions={args.ort_fusions}, "
        f"{args.repeats} runs each, medians"
    )
    print(f"{'figure':<14}{'OnnxExporter':>14}{'Hierarchy':>14}{'ratio':>8}")
    for figure, plain, hierarchy, ratio in rows:
        print(f"{figure:<14}{plain:>14.2f}{hierarchy:>14.2f}{ratio:>8.3f}")
    if args.json:
        result = {
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "ort_fusions": args.ort_fusions,
            "runs": runs,
            "medians": {f: {"plain": p, "hierarchy": h, "ratio": r} for f, p, h, r in rows},
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
