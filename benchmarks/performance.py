"""Benchmark: what the hierarchy costs, measured side by side with the plain path in one run.

Run by hand (base-size models; about 30-40 minutes on a 2-core machine)::

    .venv/bin/python benchmarks/performance.py --work /tmp/perf --json benchmarks/performance.json
    .venv/bin/python benchmarks/performance.py --work /tmp/perf --models bert --repeats 2 --no-scaling

Results are kept in ``benchmarks/RESULTS.md`` (machine and commit included) and the JSON file, so
runs can be compared across commits. Every number is a ratio of two measurements taken in the same
run, alternating between the two sides (A B A B ...), reported as the median with min and max over
the repeats. The base-size ViT, BERT (``feature-extraction``) and GPT-2 (``text-generation-with-past``)
are built from their transformers configs with seeded random weights (no hub, no network).

Measurements, per model:

* ``export``: wall time and peak RSS of one export in a fresh process, ``export_with_hierarchy``
  (what ``optimum-cli export onnx --hierarchy`` runs) over Optimum's ``main_export`` with the same
  arguments, without and with ``optimize="O2"``;
* ``passes``: annotating the plain export's file in place (``annotate_file``: read, attribute,
  write atomically) over one ``onnx.load`` + ``onnx.save`` of the same file; and the same for a
  copy of the file with its weights in external data (``load_external_data=False``);
* ``latency``: ONNX Runtime (CPU) inference of the annotated file over the plain one, same inputs;
* ``size``: file size overhead of the annotated file, in percent;
* ``retriever``: ``HierarchyRetriever(path)`` (load and index) over a bare
  ``onnx.load(path, load_external_data=False)``; and the time of one subtree query.

Scaling: GPT-2 configs of hidden size 64 with 12, 48, 96 and 192 layers (3k to 50k nodes); the
attribution pass (``annotate_proto`` on the loaded graph, I/O excluded) in microseconds per
node, and a module query on the largest one.

``--dynamo`` adds, for BERT and GPT-2 (no past), torch's dynamo exporter: wall time and peak RSS of
``HierarchyPreservingExporter(...).export_with_hierarchy(..., dynamo=True)`` over a plain
``torch.onnx.export(..., dynamo=True)`` + ``save`` in fresh processes (both with onnxscript's
optimizer, the default), and annotating the plain dynamo file after the fact (``annotate_hierarchy``)
over one ``onnx.load`` + ``onnx.save`` of it.

``--large`` adds a GPT-2 of about 3.3 GB (hidden size 1600, 24 layers), whose export writes its
weights as external data: export wall time and peak memory, the passes against a load without
external data + save, the retriever, and the size overhead, one pair each.

``--tiny`` runs everything on the tests' tiny models instead: a smoke test of the script, not a
measurement.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from reattribution import MODELS, build_model, log, onnx_size

SCALING_LAYERS = (12, 48, 96, 192)
LARGE = {"n_embd": 1600, "n_layer": 24, "n_head": 25}
TARGETS = {
    "export wall": (None, 1.05),
    "export peak RSS": (None, 1.05),
    "export O2 wall": (None, 1.05),
    "export O2 peak RSS": (None, 1.05),
    "passes / load+save": (None, 1.3),
    "passes / load+save (external data)": (None, 1.3),
    "inference latency": (0.98, 1.02),
    "retriever / bare load": (None, 1.2),
    "dynamo export wall": (None, 1.05),
    "dynamo export peak RSS": (None, 1.05),
    "annotate dynamo file / load+save": (None, 1.3),
}


# --- the child process: one export --------------------------------------------------------------


def child_export(model_dir: str, out: str, task: str, hierarchy: bool, optimize: str | None) -> None:
    """One export in this (fresh) process; prints its wall time and peak RSS as JSON."""
    import resource

    start = time.perf_counter()
    kwargs: dict[str, Any] = {"task": task}
    if optimize:
        kwargs["optimize"] = optimize
    if hierarchy:
        from optimum_hierarchy import export_with_hierarchy

        export_with_hierarchy(model_dir, out, **kwargs)
    else:
        from optimum.exporters.onnx import main_export

        main_export(model_dir, out, **kwargs)
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"wall": wall, "peak_mb": peak_kb / 1024}))


def child_dynamo_export(model_dir: str, out: str, hierarchy: bool) -> None:
    """One dynamo export in this (fresh) process; prints its wall time and peak RSS as JSON."""
    import resource

    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(model_dir)
    model = getattr(transformers, config.architectures[0]).from_pretrained(model_dir).eval()
    model.config.use_cache = False  # torch.export cannot take the default cache: no past
    ids = torch.randint(0, 1000, (2, 16))
    start = time.perf_counter()
    if hierarchy:
        from optimum_hierarchy import HierarchyPreservingExporter

        HierarchyPreservingExporter().export_with_hierarchy(model, (ids,), out, dynamo=True)
    else:
        with torch.no_grad():
            torch.onnx.export(model, (ids,), dynamo=True).save(out)
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"wall": wall, "peak_mb": peak_kb / 1024}))


def measure_dynamo(name: str, model_dir: Path, work: Path, repeats: int) -> dict[str, Any]:
    """Dynamo export with the hierarchy over the plain dynamo export; annotating the plain file over load+save."""
    results: dict[str, list[dict[str, float]]] = {"plain": [], "hierarchy": []}
    for i in range(repeats):
        for hierarchy in (False, True) if i % 2 == 0 else (True, False):
            side = "hierarchy" if hierarchy else "plain"
            out = work / f"dynamo_{side}.onnx"
            args = [sys.executable, __file__, "_dynamo", str(model_dir), str(out), "1" if hierarchy else "0"]
            completed = subprocess.run(
                args, capture_output=True, text=True, check=False, env=dict(os.environ, PYTHONWARNINGS="ignore")
            )
            if completed.returncode != 0:
                raise RuntimeError(f"dynamo export failed: {' '.join(args)}\n{completed.stderr[-3000:]}")
            record = json.loads(completed.stdout.strip().splitlines()[-1])
            results[side].append(record)
            log(f"    dynamo {side}: {record['wall']:.2f} s, {record['peak_mb']:.0f} MB")
    row: dict[str, Any] = {}
    for key, field in (("dynamo export wall", "wall"), ("dynamo export peak RSS", "peak_mb")):
        ratios = [h[field] / p[field] for p, h in zip(results["plain"], results["hierarchy"], strict=True)]
        row[key] = {
            **summary(ratios),
            "plain": statistics.median(r[field] for r in results["plain"]),
            "hierarchy": statistics.median(r[field] for r in results["hierarchy"]),
        }
    import onnx

    from optimum_hierarchy import annotate_hierarchy

    plain = work / "dynamo_plain.onnx"
    scratch = work / "dynamo_scratch"
    scratch.mkdir(exist_ok=True)

    def load_save() -> float:
        target = scratch / "copy.onnx"
        return timed(lambda: onnx.save(onnx.load(str(plain)), str(target)))

    def annotate() -> float:
        target = scratch / "model.onnx"
        shutil.copy(plain, target)
        return timed(lambda: annotate_hierarchy(target))

    row["annotate dynamo file / load+save"] = paired(repeats, load_save, annotate)
    return row


def run_export(model_dir: Path, out: Path, task: str, hierarchy: bool, optimize: str | None) -> dict[str, float]:
    if out.exists():
        shutil.rmtree(out)
    args = [sys.executable, __file__, "_export", str(model_dir), str(out), task, "1" if hierarchy else "0"]
    args.append(optimize or "")
    start = time.perf_counter()
    completed = subprocess.run(
        args, capture_output=True, text=True, check=False, env=dict(os.environ, PYTHONWARNINGS="ignore")
    )
    total = time.perf_counter() - start
    if completed.returncode != 0:
        raise RuntimeError(f"export failed: {' '.join(args)}\n{completed.stderr[-3000:]}")
    record = json.loads(completed.stdout.strip().splitlines()[-1])
    record["process_wall"] = total
    return dict(record)


# --- statistics -----------------------------------------------------------------------------------


def summary(ratios: list[float]) -> dict[str, float]:
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "n": len(ratios)}


def paired(repeats: int, first: Callable[[], float], second: Callable[[], float]) -> dict[str, Any]:
    """``repeats`` pairs measured alternately; the ratio second / first of each pair, and the raw values."""
    a: list[float] = []
    b: list[float] = []
    for i in range(repeats):
        # Alternate which side goes first, so that warm caches favour neither.
        if i % 2 == 0:
            a.append(first())
            b.append(second())
        else:
            b.append(second())
            a.append(first())
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    return {**summary(ratios), "plain": statistics.median(a), "hierarchy": statistics.median(b)}


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


# --- measurements ---------------------------------------------------------------------------------


def measure_exports(name: str, model_dir: Path, work: Path, repeats: int, optimize: str | None) -> dict[str, Any]:
    task = MODELS[name][2]
    results: dict[str, list[dict[str, float]]] = {"plain": [], "hierarchy": []}
    suffix = f"_{optimize}" if optimize else ""
    for i in range(repeats):
        order = (False, True) if i % 2 == 0 else (True, False)
        for hierarchy in order:
            side = "hierarchy" if hierarchy else "plain"
            out = work / f"export_{side}{suffix}"
            record = run_export(model_dir, out, task, hierarchy, optimize)
            results[side].append(record)
            log(f"    {side}{suffix}: {record['wall']:.2f} s, {record['peak_mb']:.0f} MB")
    wall = [h["wall"] / p["wall"] for p, h in zip(results["plain"], results["hierarchy"], strict=True)]
    rss = [h["peak_mb"] / p["peak_mb"] for p, h in zip(results["plain"], results["hierarchy"], strict=True)]
    return {
        "wall": {
            **summary(wall),
            "plain": statistics.median(r["wall"] for r in results["plain"]),
            "hierarchy": statistics.median(r["wall"] for r in results["hierarchy"]),
        },
        "peak_rss": {
            **summary(rss),
            "plain": statistics.median(r["peak_mb"] for r in results["plain"]),
            "hierarchy": statistics.median(r["peak_mb"] for r in results["hierarchy"]),
        },
        "plain_dir": str(work / f"export_plain{suffix}"),
        "hierarchy_dir": str(work / f"export_hierarchy{suffix}"),
    }


def single_onnx(directory: Path) -> Path:
    files = sorted(directory.glob("*.onnx"))
    if len(files) != 1:
        raise RuntimeError(f"{directory}: expected one .onnx file, found {[f.name for f in files]}")
    return files[0]


def measure_passes(plain: Path, model_dir: Path, scratch: Path, repeats: int, *, external: bool) -> dict[str, Any]:
    """Annotating a copy of the plain file in place vs one load + save of it (optionally with external data)."""
    import onnx

    from optimum_hierarchy.annotation.file import annotate_file
    from optimum_hierarchy.schema import ExportInfo
    from optimum_hierarchy.trees.config import tree_from_config

    tree, model_type, model_class = tree_from_config(model_dir / "config.json")
    export = ExportInfo(model_type=model_type, model_class=model_class)
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    source = scratch / "source.onnx"
    if external:
        proto = onnx.load(str(plain))
        onnx.save(proto, str(source), save_as_external_data=True, location="source.onnx_data")
        del proto
    else:
        shutil.copyfile(plain, source)
    target = scratch / "annotated.onnx"
    saved = scratch / "saved.onnx"

    def fresh_copy() -> None:
        shutil.copyfile(source, target)  # same directory: external data references still resolve

    def floor() -> float:
        def load_save() -> None:
            proto = onnx.load(str(source), load_external_data=False)
            onnx.save(proto, str(saved))

        return timed(load_save)

    def passes() -> float:
        fresh_copy()
        return timed(lambda: annotate_file(target, tree, export))

    result = paired(repeats, floor, passes)
    for path in (source, target, saved):
        path.unlink(missing_ok=True)
    (scratch / "source.onnx_data").unlink(missing_ok=True)
    return result


def measure_latency(plain: Path, annotated: Path, model_dir: Path, repeats: int, runs: int = 50) -> dict[str, Any]:
    import onnxruntime as ort

    from optimum_hierarchy.tools.inputs import generate_inputs

    feeds = generate_inputs(plain, config=model_dir / "config.json", shapes={"batch_size": 1})
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {
        "plain": ort.InferenceSession(str(plain), options, providers=["CPUExecutionProvider"]),
        "hierarchy": ort.InferenceSession(str(annotated), options, providers=["CPUExecutionProvider"]),
    }
    for session in sessions.values():
        session.run(None, feeds)

    ratios: list[float] = []
    medians: dict[str, list[float]] = {"plain": [], "hierarchy": []}
    for _ in range(repeats):
        # One run of each, alternately, so that load changes on the machine hit both sides alike.
        times: dict[str, list[float]] = {"plain": [], "hierarchy": []}
        for i in range(2 * runs):
            side = ("plain", "hierarchy")[(i + i // 2) % 2]  # p h h p p h h p ...: neither always goes first
            start = time.perf_counter()
            sessions[side].run(None, feeds)
            times[side].append(time.perf_counter() - start)
        plain_median, hierarchy_median = statistics.median(times["plain"]), statistics.median(times["hierarchy"])
        ratios.append(hierarchy_median / plain_median)
        medians["plain"].append(plain_median)
        medians["hierarchy"].append(hierarchy_median)
    return {
        **summary(ratios),
        "plain": statistics.median(medians["plain"]),
        "hierarchy": statistics.median(medians["hierarchy"]),
    }


def measure_retriever(annotated: Path, repeats: int) -> dict[str, Any]:
    import onnx

    from optimum_hierarchy import HierarchyRetriever

    def bare() -> float:
        return timed(lambda: onnx.load(str(annotated), load_external_data=False))

    retrievers: list[Any] = []

    def ours() -> float:
        start = time.perf_counter()
        retrievers.append(HierarchyRetriever(annotated))
        return time.perf_counter() - start

    result = paired(repeats, bare, ours)
    retriever = retrievers[-1]
    result["query_us"] = query_time(retriever)
    result["nodes"] = len(retriever.nodes)
    return result


def query_time(retriever: Any, depth: int = 3) -> float:
    """Median microseconds of a subtree query on the module of ``depth`` with the most nodes.

    Depth 3 is one block (``transformer.h.0``, ``encoder.layer.0``); depth 1 or 2 a whole stack.
    """
    modules = [m.path for m in retriever.get_modules_by_depth(depth)] or [""]
    path = max(modules, key=lambda p: len(retriever.get_nodes_by_module(p, subtree=True)))
    times = []
    for _ in range(200):
        start = time.perf_counter()
        retriever.get_nodes_by_module(path, subtree=True)
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def measure_large(work: Path, repeats: int) -> dict[str, Any]:
    """A GPT-2 over protobuf's 2 GB limit: exported with external data, then the same rows as the others."""
    import torch
    import transformers

    model_dir = work / "model"
    if not (model_dir / "config.json").is_file():
        log("  building the large GPT-2")
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**LARGE))
        model.save_pretrained(model_dir)
        del model
    row: dict[str, Any] = {}
    measured = measure_exports("gpt2", model_dir, work, 1, None)
    row["export wall"], row["export peak RSS"] = measured["wall"], measured["peak_rss"]
    plain, annotated = single_onnx(work / "export_plain"), single_onnx(work / "export_hierarchy")
    row["weights GB"] = (onnx_size(plain) - plain.stat().st_size) / 1e9
    row["passes / load+save (external data)"] = measure_passes_in_place(plain, model_dir, repeats)
    row["size overhead %"] = 100.0 * (onnx_size(annotated) - onnx_size(plain)) / onnx_size(plain)
    retriever = measure_retriever(annotated, repeats)
    row["retriever / bare load"] = retriever
    row["query us"], row["nodes"] = retriever["query_us"], retriever["nodes"]
    return row


def measure_passes_in_place(plain: Path, model_dir: Path, repeats: int) -> dict[str, Any]:
    """For a file with external data: annotate a copy of the graph file beside the data (never copied)."""
    import onnx

    from optimum_hierarchy.annotation.file import annotate_file
    from optimum_hierarchy.schema import ExportInfo
    from optimum_hierarchy.trees.config import tree_from_config

    tree, model_type, model_class = tree_from_config(model_dir / "config.json")
    export = ExportInfo(model_type=model_type, model_class=model_class)
    target = plain.with_name("annotated_copy.onnx")
    saved = plain.with_name("saved_copy.onnx")

    def floor() -> float:
        def load_save() -> None:
            onnx.save(onnx.load(str(plain), load_external_data=False), str(saved))

        return timed(load_save)

    def passes() -> float:
        shutil.copyfile(plain, target)
        return timed(lambda: annotate_file(target, tree, export))

    result = paired(repeats, floor, passes)
    target.unlink(missing_ok=True)
    saved.unlink(missing_ok=True)
    return result


def measure_scaling(work: Path, layers: tuple[int, ...], repeats: int) -> list[dict[str, Any]]:
    from optimum.exporters.onnx import main_export

    from optimum_hierarchy import HierarchyRetriever
    from optimum_hierarchy.annotation.file import annotate_file, annotate_proto
    from optimum_hierarchy.demo import build_tiny_model
    from optimum_hierarchy.schema import ExportInfo
    from optimum_hierarchy.trees.live_model import capture_module_tree
    from optimum_hierarchy.wire import read_model_file

    rows = []
    for n in layers:
        model_dir = work / f"gpt2_{n}"
        out = work / f"gpt2_{n}_plain"
        if not (out / "model.onnx").is_file():
            log(f"  scaling: exporting GPT-2 with {n} layers")
            build_tiny_model("gpt2", model_dir, num_hidden_layers=n)
            main_export(str(model_dir), str(out), task="text-generation-with-past")
        import transformers

        model = transformers.GPT2LMHeadModel.from_pretrained(model_dir)
        tree = capture_module_tree(model)
        del model
        export = ExportInfo(model_type="gpt2")
        times = []
        nodes = 0
        for _ in range(repeats):
            with read_model_file(out / "model.onnx") as source:
                nodes = len(source.proto.graph.node)
                start = time.perf_counter()
                annotate_proto(source.proto, tree, export)
                times.append(time.perf_counter() - start)
        annotated = work / f"gpt2_{n}_annotated.onnx"
        shutil.copyfile(out / "model.onnx", annotated)
        annotate_file(annotated, tree, export)
        retriever = HierarchyRetriever(annotated)
        row = {
            "layers": n,
            "nodes": nodes,
            "pass_s": statistics.median(times),
            "us_per_node": 1e6 * statistics.median(times) / nodes,
            "query_us": query_time(retriever),
            "stack_query_us": query_time(retriever, depth=2),
        }
        log(f"    {n} layers, {nodes} nodes: {row['us_per_node']:.1f} us/node, query {row['query_us']:.1f} us")
        rows.append(row)
    return rows


# --- the report -----------------------------------------------------------------------------------


def fmt(r: dict[str, Any], digits: int = 3) -> str:
    return f"{r['median']:.{digits}f} ({r['min']:.{digits}f}-{r['max']:.{digits}f})"


def verdict(name: str, r: dict[str, Any]) -> str:
    low, high = TARGETS.get(name, (None, None))
    if high is None:
        return ""
    ok = r["median"] <= high and (low is None or r["median"] >= low)
    bound = f"{low:.2f}-{high:.2f}" if low is not None else f"<= {high:.2f}"
    return f"{'met' if ok else 'MISSED'} ({bound})"


def report(results: dict[str, Any]) -> str:
    lines = [
        f"Machine: {results['machine']}; commit {results['commit']}; {results['date']}; repeats {results['repeats']}.",
        "",
        "| model | measurement | ratio: median (min-max) | plain | hierarchy | target |",
        "|---|---|---|---|---|---|",
    ]
    for name, model in results["models"].items():
        for key, label, unit, scale in (
            ("export wall", "export wall", "s", 1.0),
            ("export peak RSS", "export peak RSS", "MB", 1.0),
            ("export O2 wall", "export O2 wall", "s", 1.0),
            ("export O2 peak RSS", "export O2 peak RSS", "MB", 1.0),
            ("passes / load+save", "passes / load+save", "s", 1.0),
            ("passes / load+save (external data)", "passes / load+save (external data)", "s", 1.0),
            ("inference latency", "inference latency", "ms", 1e3),
            ("retriever / bare load", "retriever / bare load", "s", 1.0),
            ("dynamo export wall", "dynamo export wall", "s", 1.0),
            ("dynamo export peak RSS", "dynamo export peak RSS", "MB", 1.0),
            ("annotate dynamo file / load+save", "annotate dynamo file / load+save", "s", 1.0),
        ):
            if key not in model:
                continue
            r = model[key]
            lines.append(
                f"| {name} | {label} | {fmt(r)} | {r['plain'] * scale:.3f} {unit} "
                f"| {r['hierarchy'] * scale:.3f} {unit} | {verdict(key, r)} |"
            )
        if "weights GB" in model:
            lines.append(f"| {name} | weights in external data | {model['weights GB']:.2f} GB | | | |")
        if "size overhead %" in model:
            lines.append(f"| {name} | file size overhead | {model['size overhead %']:.3f} % | | | <= 0.5 % |")
        if "query us" in model:
            lines.append(
                f"| {name} | subtree query, one block ({model['nodes']} nodes) | {model['query us']:.1f} us | | "
                "| < 1000 us |"
            )
    if results.get("scaling"):
        lines += [
            "",
            "| layers | nodes | pass (s) | us per node | query: one block (us) | query: all blocks (us) |",
            "|---|---|---|---|---|---|",
        ]
        for row in results["scaling"]:
            lines.append(
                f"| {row['layers']} | {row['nodes']} | {row['pass_s']:.3f} | {row['us_per_node']:.1f} "
                f"| {row['query_us']:.1f} | {row['stack_query_us']:.1f} |"
            )
    return "\n".join(lines)


def git_commit() -> str:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=True,
        )
        return completed.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_dynamo":
        child_dynamo_export(argv[1], argv[2], argv[3] == "1")
        return 0
    if argv and argv[0] == "_export":
        model_dir, out, task, hierarchy, optimize = argv[1:6]
        child_export(model_dir, out, task, hierarchy == "1", optimize or None)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="Directory for models and exports (reused).")
    parser.add_argument("--models", default="vit,bert,gpt2")
    parser.add_argument("--repeats", type=int, default=3, help="Pairs measured per ratio (3).")
    parser.add_argument("--no-export", action="store_true", help="Skip the export timings (reuse earlier exports).")
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--scaling-layers", default=",".join(map(str, SCALING_LAYERS)))
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    parser.add_argument("--tiny", action="store_true", help="Tiny models: a smoke test of this script.")
    parser.add_argument("--large", action="store_true", help="Also a GPT-2 of 3.3 GB, with external data.")
    parser.add_argument(
        "--dynamo", action="store_true", help="Also torch's dynamo exporter (BERT and GPT-2 among --models)."
    )
    parser.add_argument("--only-dynamo", action="store_true", help="Only the dynamo rows (implies --dynamo).")
    args = parser.parse_args(argv)

    import onnxruntime
    import torch
    import transformers

    import optimum

    results: dict[str, Any] = {
        "machine": machine(),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "repeats": args.repeats,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "optimum": getattr(optimum, "__version__", "?"),
            "onnxruntime": onnxruntime.__version__,
        },
        "models": {},
    }
    for name in filter(None, args.models.split(",")):
        log(f"{name}")
        if args.only_dynamo:
            break
        work = args.work / name
        model_dir = work / "model"
        if not (model_dir / "config.json").is_file():
            build_model(name, model_dir, tiny=args.tiny)
        row: dict[str, Any] = {}
        for optimize, label in ((None, "export"), ("O2", "export O2")):
            done = (work / f"export_plain{'_' + optimize if optimize else ''}").is_dir()
            if not args.no_export or not done:
                measured = measure_exports(name, model_dir, work, args.repeats, optimize)
                row[f"{label} wall"] = measured["wall"]
                row[f"{label} peak RSS"] = measured["peak_rss"]
        plain = single_onnx(work / "export_plain")
        annotated = single_onnx(work / "export_hierarchy")
        log("  passes")
        row["passes / load+save"] = measure_passes(plain, model_dir, work / "passes", args.repeats, external=False)
        row["passes / load+save (external data)"] = measure_passes(
            plain, model_dir, work / "passes", args.repeats, external=True
        )
        log("  latency")
        row["inference latency"] = measure_latency(plain, annotated, model_dir, args.repeats)
        row["size overhead %"] = 100.0 * (onnx_size(annotated) - onnx_size(plain)) / onnx_size(plain)
        log("  retriever")
        retriever = measure_retriever(annotated, args.repeats)
        row["retriever / bare load"] = retriever
        row["query us"], row["nodes"] = retriever["query_us"], retriever["nodes"]
        results["models"][name] = row
        if args.json is not None:  # what is measured so far, in case the run is cut short
            args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(report(results), flush=True)
    if args.dynamo or args.only_dynamo:
        for name in [m for m in args.models.split(",") if m in ("bert", "gpt2")]:
            log(f"{name}: dynamo")
            work = args.work / name
            model_dir = work / "model"
            if not (model_dir / "config.json").is_file():
                build_model(name, model_dir, tiny=args.tiny)
            results["models"].setdefault(name, {}).update(measure_dynamo(name, model_dir, work, args.repeats))
            if args.json is not None:
                args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.large:
        log("large GPT-2 (external data)")
        results["models"]["gpt2-3.3GB"] = measure_large(args.work / "large", args.repeats)
    if not args.no_scaling:
        log("scaling")
        layers = tuple(int(n) for n in args.scaling_layers.split(","))
        results["scaling"] = measure_scaling(args.work / "scaling", layers if not args.tiny else (2, 4), args.repeats)
    text = report(results)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
