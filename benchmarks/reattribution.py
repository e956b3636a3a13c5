"""Benchmark: how well the module hierarchy survives ONNX Runtime optimization and quantization.

Run by hand (it is not part of the tests; base-size models, several minutes per model on a small CPU)::

    .venv/bin/python benchmarks/reattribution.py --work /tmp/bench
    .venv/bin/python benchmarks/reattribution.py --work /tmp/bench --models bert --levels O2 --json /tmp/bert.json

Results are kept in ``benchmarks/RESULTS-reattribution.md``.

For each model (base-size ViT and BERT, ``feature-extraction``; GPT-2, ``text-generation-with-past``),
built from its transformers config with seeded random weights (``torch.manual_seed(0)``, every
parameter drawn from N(0, 0.02)) and saved with ``save_pretrained`` (no hub, no network):

* it is exported with :func:`optimum_hierarchy.export_with_hierarchy`, unoptimized and with
  ``optimize=level`` for each level, and with Optimum's plain ``main_export`` with the same
  arguments (the reference for file sizes and ONNX Runtime outputs);
* the unoptimized exports (``--quantize`` can add optimized ones) are quantized dynamically with
  ``ORTQuantizer`` (avx2, per tensor); the annotated one is then re-attributed with
  :func:`optimum_hierarchy.annotation.hierarchy.annotate_hierarchy`;
* the plain O2 export is annotated after the fact (retrofit), once with the module tree rebuilt
  from the graph's names (no ``config.json``) and once with the model's config, and its nodes'
  modules are compared with those of the annotated O2 export (the exact answer).

For every annotated file the table gives: nodes, % attributed, nodes by attribution source, nodes
that replaced several export-time nodes (``pkg.optimum_hierarchy.sources`` present), the size
overhead over the plain file, whether ONNX Runtime (CPU) gives bit-identical outputs for both
files on the same random inputs (and the largest difference), and the time ``annotate_hierarchy``
takes on the file with its node metadata removed (what ONNX Runtime's optimizer leaves) against
one ``onnx.load`` + ``onnx.save`` of it.

Everything is kept under ``--work``: a rerun with the same directory reuses the saved models,
exports and quantizations, and only measures again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optimum_hierarchy.walk import iter_proto_nodes

# name -> (transformers config class, model class, task)
MODELS: dict[str, tuple[str, str, str]] = {
    "vit": ("ViTConfig", "ViTModel", "feature-extraction"),
    "bert": ("BertConfig", "BertModel", "feature-extraction"),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", "text-generation-with-past"),
}
LEVELS = ("O1", "O2", "O3")
SOURCES = ("fusion", "rule", "name", "scope", "context", "parameter")
RETROFIT_LEVEL = "O2"
SEQUENCE_LENGTH = {"vit": 16, "bert": 16, "gpt2": 8}
PAST_LENGTH = 1
# Keys this package writes on nodes (see optimum_hierarchy.schema).
PREFIX = "pkg.optimum_hierarchy."
MODULE_KEY = PREFIX + "module"
SOURCE_KEY = PREFIX + "source"
SOURCES_KEY = PREFIX + "sources"
NAMESPACE_KEY = "namespace"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def error_text(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return text if len(text) <= 600 else text[:600] + " ..."


# --- models and cached steps --------------------------------------------------------------------


def build_model(name: str, model_dir: Path, *, tiny: bool) -> None:
    """Build ``name`` with distinct seeded random weights and ``save_pretrained`` it into ``model_dir``."""
    import torch
    import transformers

    config_class, model_class, _ = MODELS[name]
    kwargs: dict[str, Any] = {}
    if tiny:
        from optimum_hierarchy.demo import TINY_MODELS

        kwargs = {k: v for k, v in TINY_MODELS[name][3].items() if k != "num_labels"}
    config = getattr(transformers, config_class)(**kwargs)
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.eval()
    model.save_pretrained(model_dir)


class Work:
    """The work directory of one model: each step runs once, its record is kept in ``.done/<step>.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.done = root / ".done"
        self.done.mkdir(parents=True, exist_ok=True)

    def step(self, name: str, run: Callable[[Path], dict[str, Any] | None]) -> tuple[Path, dict[str, Any]]:
        """Run ``run(directory)`` unless a previous run completed it; returns the directory and the step's record."""
        directory = self.root / name
        marker = self.done / f"{name}.json"
        if marker.is_file() and directory.exists():
            log(f"  reuse {directory}")
            return directory, json.loads(marker.read_text())
        if directory.exists():
            shutil.rmtree(directory)
        log(f"  {name} ...")
        start = time.perf_counter()
        record = dict(run(directory) or {})
        record["seconds"] = round(time.perf_counter() - start, 2)
        marker.write_text(json.dumps(record, indent=1))
        log(f"  {name} done in {record['seconds']:.1f} s")
        return directory, record


# --- reading files ---------------------------------------------------------------------------------


def onnx_file(directory: Path) -> Path:
    files = sorted(directory.glob("*.onnx"))
    if len(files) != 1:
        raise RuntimeError(f"{directory}: expected one .onnx file, found {[f.name for f in files]}")
    return files[0]


def onnx_size(path: Path) -> int:
    """Size of an ONNX file and of its external data file, if it has one."""
    data = path.with_name(path.name + "_data")
    return os.path.getsize(path) + (os.path.getsize(data) if data.is_file() else 0)


def node_records(path: Path) -> list[tuple[str, str, dict[str, str]]]:
    """(name, op type, our metadata) of every node of the file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return [
        (node.name, node.op_type, {p.key: p.value for p in node.metadata_props if p.key.startswith(PREFIX)})
        for node, _ in iter_proto_nodes(proto.graph)
    ]


def file_stats(path: Path) -> dict[str, Any]:
    """Counts read from the node metadata of an annotated file."""
    records = node_records(path)
    by_source: dict[str, int] = {}
    attributed = multi_source = 0
    for _, _, meta in records:
        if MODULE_KEY in meta:
            attributed += 1
        source = meta.get(SOURCE_KEY, "none")
        by_source[source] = by_source.get(source, 0) + 1
        if SOURCES_KEY in meta:
            multi_source += 1
    return {
        "nodes": len(records),
        "attributed": attributed,
        "attributed_pct": 100.0 * attributed / len(records) if records else 100.0,
        "by_source": dict(sorted(by_source.items())),
        "fused": by_source.get("fusion", 0),
        "with_sources": multi_source,
    }


def modules_by_name(path: Path) -> dict[str, str | None]:
    modules: dict[str, str | None] = {}
    for name, _, meta in node_records(path):
        modules.setdefault(name, meta.get(MODULE_KEY))
    return modules


def compare_modules(candidate: Path, reference: Path) -> dict[str, Any]:
    """Agreement of each node's module in ``candidate`` with the same-named node of ``reference``."""
    exact = modules_by_name(reference)
    records = node_records(candidate)
    matched = agree = attributed = 0
    disagreements: list[dict[str, Any]] = []
    for name, op_type, meta in records:
        module = meta.get(MODULE_KEY)
        attributed += module is not None
        if name not in exact:
            continue
        matched += 1
        if module == exact[name]:
            agree += 1
        elif len(disagreements) < 20:
            disagreements.append(
                {"node": name, "op_type": op_type, "got": module, "exact": exact[name], "source": meta.get(SOURCE_KEY)}
            )
    return {
        "nodes": len(records),
        "attributed": attributed,
        "matched_by_name": matched,
        "agree": agree,
        "agreement_pct": 100.0 * agree / matched if matched else None,
        "first_disagreements": disagreements,
    }


# --- ONNX Runtime ------------------------------------------------------------------------------------


_NUMPY_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
}


def make_inputs(session: Any, model: str, config: dict[str, Any]) -> dict[str, Any]:
    """Random inputs for every input of ``session``, with the symbolic dimensions fixed from their names."""
    import numpy as np

    rng = np.random.default_rng(0)
    sequence = SEQUENCE_LENGTH[model]
    has_past = any(i.name.startswith("past_key_values") for i in session.get_inputs())
    past = PAST_LENGTH if has_past else 0

    def dim(d: Any, name: str) -> int:
        if isinstance(d, int):
            return d
        text = str(d).lower()
        if "batch" in text:
            return 1
        if ("past" in text and "+" in text) or "total" in text:
            return past + sequence
        if "past" in text:
            return past
        if "sequence" in text:
            return sequence
        raise ValueError(f"input {name}: cannot choose a size for dimension {d!r}")

    feeds: dict[str, Any] = {}
    for spec in session.get_inputs():
        name, dtype = spec.name, _NUMPY_TYPES.get(spec.type)
        if dtype is None:
            raise ValueError(f"input {name}: unsupported type {spec.type}")
        if name == "pixel_values":
            size = config.get("image_size", 224)
            shape = [1, config.get("num_channels", 3), size, size]
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif name == "input_ids":
            feeds[name] = rng.integers(0, config["vocab_size"], size=(1, sequence)).astype(dtype)
        elif name == "token_type_ids":
            feeds[name] = rng.integers(0, config.get("type_vocab_size", 2), size=(1, sequence)).astype(dtype)
        elif name == "attention_mask":
            feeds[name] = np.ones((1, past + sequence), dtype=dtype)
        elif name == "position_ids":
            feeds[name] = np.arange(past, past + sequence, dtype=dtype)[None, :]
        else:
            shape = [dim(d, name) for d in spec.shape]
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def compare_outputs(annotated: Path, plain: Path, model: str, config: dict[str, Any]) -> dict[str, Any]:
    """Run both files on the same random inputs with ONNX Runtime (CPU)."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = [
        ort.InferenceSession(str(p), sess_options=options, providers=["CPUExecutionProvider"])
        for p in (annotated, plain)
    ]
    feeds = make_inputs(sessions[0], model, config)
    names = [o.name for o in sessions[0].get_outputs()]
    plain_names = [o.name for o in sessions[1].get_outputs()]
    if names != plain_names:
        return {"identical": False, "max_abs_diff": None, "error": f"outputs differ: {names} vs {plain_names}"}
    results = [s.run(names, feeds) for s in sessions]
    identical = True
    max_diff = 0.0
    for a, b in zip(*results, strict=True):
        if a.shape != b.shape or a.dtype != b.dtype:
            return {"identical": False, "max_abs_diff": None, "error": f"shape/dtype {a.shape} vs {b.shape}"}
        identical = identical and bool(np.array_equal(a, b))
        if a.size:
            max_diff = max(max_diff, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
    return {"identical": identical, "max_abs_diff": max_diff, "inputs": {k: list(v.shape) for k, v in feeds.items()}}


# --- timing -----------------------------------------------------------------------------------------------


def strip_node_metadata(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` without this package's node metadata (model metadata kept)."""
    import onnx

    proto = onnx.load(str(source))
    for node, _ in iter_proto_nodes(proto.graph):
        kept = [(p.key, p.value) for p in node.metadata_props if not p.key.startswith(PREFIX) and p.key != "namespace"]
        del node.metadata_props[:]
        for key, value in kept:
            node.metadata_props.add(key=key, value=value)
    target.parent.mkdir(parents=True, exist_ok=True)
    large = proto.ByteSize() > 2**31 - 2**20
    onnx.save(proto, str(target), save_as_external_data=large, location=target.name + "_data")


def time_restore(annotated: Path, scratch: Path) -> dict[str, Any]:
    """Time ``annotate_hierarchy`` on ``annotated`` stripped of its node metadata, against one load + save."""
    import onnx

    from optimum_hierarchy.annotation.hierarchy import annotate_hierarchy

    if scratch.exists():
        shutil.rmtree(scratch)
    target = scratch / annotated.name
    strip_node_metadata(annotated, target)
    start = time.perf_counter()
    annotate_hierarchy(target)
    restore_s = time.perf_counter() - start

    start = time.perf_counter()
    proto = onnx.load(str(target))
    onnx.save(proto, str(scratch / "copy.onnx"))
    load_save_s = time.perf_counter() - start
    del proto
    same = compare_modules(target, annotated)
    shutil.rmtree(scratch)
    return {
        "restore_s": restore_s,
        "load_save_s": load_save_s,
        "ratio": restore_s / load_save_s if load_save_s else None,
        "restore_reproduces_pct": same["agreement_pct"],
    }


# --- one model ---------------------------------------------------------------------------------------------


def quantize(export_dir: Path, out: Path) -> None:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    quantizer = ORTQuantizer.from_pretrained(export_dir, file_name=onnx_file(export_dir).name)
    quantizer.quantize(AutoQuantizationConfig.avx2(is_static=False, per_channel=False), out)


def run_model(name: str, work_root: Path, levels: list[str], quantize_from: list[str], tiny: bool) -> dict[str, Any]:
    from optimum.exporters.onnx import main_export

    from optimum_hierarchy import export_with_hierarchy
    from optimum_hierarchy.annotation.hierarchy import annotate_hierarchy

    _, _, task = MODELS[name]
    work = Work(work_root / name)
    result: dict[str, Any] = {"model": name, "task": task, "rows": [], "retrofit": None, "error": None}
    export_kwargs: dict[str, Any] = {"task": task, "do_validation": False}

    try:
        model_dir, _ = work.step("model", lambda d: build_model(name, d, tiny=tiny))
        config = json.loads((model_dir / "config.json").read_text())
    except Exception as e:
        traceback.print_exc()
        result["error"] = f"building the model: {error_text(e)}"
        return result

    def hierarchy_export(level: str | None) -> Callable[[Path], dict[str, Any]]:
        def run(out: Path) -> dict[str, Any]:
            kwargs = dict(export_kwargs, optimize=level) if level else export_kwargs
            exported = export_with_hierarchy(model_dir, out, **kwargs)
            return {"nodes": exported.nodes, "attributed": exported.attributed, "by_source": exported.by_source}

        return run

    def plain_export(level: str | None) -> Callable[[Path], None]:
        def run(out: Path) -> None:
            kwargs = dict(export_kwargs, optimize=level) if level else export_kwargs
            main_export(str(model_dir), out, **kwargs)

        return run

    def quantize_annotated(source: Path) -> Callable[[Path], dict[str, Any]]:
        def run(out: Path) -> dict[str, Any]:
            quantize(source, out)
            start = time.perf_counter()
            files = annotate_hierarchy(out)
            seconds = time.perf_counter() - start
            return {
                "restore_s": seconds,
                "files": [
                    {
                        "path": str(f.path),
                        "nodes": f.summary.nodes,
                        "attributed": f.summary.attributed,
                        "by_source": dict(f.summary.by_source),
                    }
                    for f in files
                ],
            }

        return run

    def measure(variant: str, annotated_dir: Path, plain_dir: Path, extra: dict[str, Any]) -> None:
        row: dict[str, Any] = {"variant": variant, **extra}
        try:
            annotated = onnx_file(annotated_dir)
            plain = onnx_file(plain_dir)
            row["file"] = str(annotated)
            row.update(file_stats(annotated))
            row["size"] = onnx_size(annotated)
            row["plain_size"] = onnx_size(plain)
            row["size_overhead_pct"] = 100.0 * (row["size"] - row["plain_size"]) / row["plain_size"]
            log(f"  {variant}: ONNX Runtime outputs ...")
            row["outputs"] = compare_outputs(annotated, plain, name, config)
            log(f"  {variant}: timing annotate_hierarchy ...")
            row["timing"] = time_restore(annotated, work.root / "timing")
        except Exception as e:
            traceback.print_exc()
            row["error"] = error_text(e)
        result["rows"].append(row)

    export_dirs: dict[str, tuple[Path, Path]] = {}
    for level in ["base", *levels]:
        variant = "export" if level == "base" else level
        suffix = "base" if level == "base" else level
        try:
            hier_dir, record = work.step(f"hier-{suffix}", hierarchy_export(None if level == "base" else level))
            plain_dir, _ = work.step(f"plain-{suffix}", plain_export(None if level == "base" else level))
        except Exception as e:
            traceback.print_exc()
            result["rows"].append({"variant": variant, "error": error_text(e)})
            continue
        export_dirs[level] = (hier_dir, plain_dir)
        measure(variant, hier_dir, plain_dir, {"export_result": record})

    for level in quantize_from:
        variant = "quant" if level == "base" else f"{level}+quant"
        if level not in export_dirs:
            result["rows"].append({"variant": variant, "error": f"no {level} export to quantize (it failed)"})
            continue
        hier_dir, plain_dir = export_dirs[level]
        try:
            qh_dir, record = work.step(f"quant-hier-{level}", quantize_annotated(hier_dir))
            qp_dir, _ = work.step(f"quant-plain-{level}", lambda out, src=plain_dir: quantize(src, out))
        except Exception as e:
            traceback.print_exc()
            result["rows"].append({"variant": variant, "error": error_text(e)})
            continue
        measure(variant, qh_dir, qp_dir, {"quantize_record": record})

    result["retrofit"] = retrofit(work, export_dirs, model_dir, annotate_hierarchy)
    return result


def retrofit(
    work: Work, export_dirs: dict[str, tuple[Path, Path]], model_dir: Path, restore: Callable[..., Any]
) -> dict[str, Any]:
    """Annotate the plain O2 export after the fact and compare with the annotated O2 export."""
    out: dict[str, Any] = {"level": RETROFIT_LEVEL}
    if RETROFIT_LEVEL not in export_dirs:
        out["error"] = f"no {RETROFIT_LEVEL} export (not requested or failed)"
        return out
    hier_dir, plain_dir = export_dirs[RETROFIT_LEVEL]

    def copy_plain(target: Path) -> Path:
        target.mkdir(parents=True)
        for f in plain_dir.iterdir():
            if f.name.endswith((".onnx", ".onnx_data")):
                shutil.copy2(f, target / f.name)
        return onnx_file(target)

    def run(with_config: bool) -> Callable[[Path], dict[str, Any]]:
        def step(target: Path) -> dict[str, Any]:
            copy_plain(target)
            start = time.perf_counter()
            if with_config:
                restore(target, config=model_dir)
            else:
                restore(target)
            return {"restore_s": time.perf_counter() - start}

        return step

    for key, with_config in (("names", False), ("config", True)):
        try:
            directory, record = work.step(f"retrofit-{key}-{RETROFIT_LEVEL}", run(with_config))
            out[key] = {**compare_modules(onnx_file(directory), onnx_file(hier_dir)), **record}
            out[key].update({k: v for k, v in file_stats(onnx_file(directory)).items() if k == "by_source"})
        except Exception as e:
            traceback.print_exc()
            out[key] = {"error": error_text(e)}
    return out


# --- report ----------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("torch", "transformers", "optimum", "optimum-onnx", "onnxruntime", "onnx", "optimum-hierarchy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_tables(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal and console.width < 200:
        console = Console(width=200)

    table = Table(title="Hierarchy after ONNX Runtime optimization and quantization (annotated vs plain Optimum file)")
    for column in ("model", "file", "nodes", "attr %", *SOURCES, "other", "multi-src", "size +%", "outputs", "max |d|"):
        table.add_column(column, justify="left" if column in ("model", "file", "outputs") else "right")
    table.add_column("restore s", justify="right")
    table.add_column("load+save s", justify="right")
    table.add_column("ratio", justify="right")
    errors: list[str] = []
    for result in results:
        if result["error"]:
            table.add_row(result["model"], "-", "FAILED")
            errors.append(f"{result['model']}: {result['error']}")
        for row in result["rows"]:
            if "nodes" not in row:
                table.add_row(result["model"], row["variant"], "FAILED")
                errors.append(f"{result['model']} {row['variant']}: {row.get('error')}")
                continue
            by_source = row["by_source"]
            other = sum(n for s, n in by_source.items() if s not in SOURCES)
            outputs = row.get("outputs") or {}
            timing = row.get("timing") or {}
            verdict = {True: "identical", False: "DIFFER"}.get(outputs.get("identical"), "?")
            table.add_row(
                result["model"],
                row["variant"],
                str(row["nodes"]),
                pct(row["attributed_pct"]),
                *(str(by_source.get(s, 0)) for s in SOURCES),
                str(other),
                str(row["with_sources"]),
                pct(row["size_overhead_pct"], 2),
                verdict,
                "-" if outputs.get("max_abs_diff") is None else f"{outputs['max_abs_diff']:.3g}",
                pct(timing.get("restore_s"), 2),
                pct(timing.get("load_save_s"), 2),
                pct(timing.get("ratio"), 2),
            )
            if row.get("error"):
                errors.append(f"{result['model']} {row['variant']}: {row['error']}")
    console.print(table)

    retro = Table(title=f"Retrofit: plain {RETROFIT_LEVEL} export annotated after the fact vs the annotated export")
    for column in ("model", "tree from", "nodes", "attr %", "matched", "agree", "agreement %", "restore s", "sources"):
        retro.add_column(column, justify="left" if column in ("model", "tree from", "sources") else "right")
    for result in results:
        info = result.get("retrofit") or {}
        if "error" in info:
            errors.append(f"{result['model']} retrofit: {info['error']}")
            continue
        for key, label in (("names", "names only"), ("config", "config.json")):
            r = info.get(key)
            if r is None:
                continue
            if "error" in r:
                retro.add_row(result["model"], label, "FAILED")
                errors.append(f"{result['model']} retrofit ({label}): {r['error']}")
                continue
            retro.add_row(
                result["model"],
                label,
                str(r["nodes"]),
                pct(100.0 * r["attributed"] / r["nodes"] if r["nodes"] else None),
                str(r["matched_by_name"]),
                str(r["agree"]),
                pct(r["agreement_pct"], 2),
                pct(r.get("restore_s"), 2),
                " ".join(f"{s}={n}" for s, n in r.get("by_source", {}).items()),
            )
    console.print(retro)
    if errors:
        console.print("[bold red]Failures:[/]")
        for line in errors:
            console.print(f"  {line}", markup=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--work", type=Path, help="work directory, reused by a rerun (default: a new temp dir)")
    parser.add_argument("--models", default="vit,bert,gpt2", help="comma-separated, of: " + ",".join(MODELS))
    parser.add_argument("--levels", default=",".join(LEVELS), help="ONNX Runtime optimization levels (O1,O2,O3)")
    parser.add_argument(
        "--quantize",
        default="base",
        help="exports to quantize: 'base' (the unoptimized export) and/or levels, comma-separated; '' for none",
    )
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "reattribution.json")
    parser.add_argument("--tiny", action="store_true", help="smoke test: tiny configs instead of base size")
    args = parser.parse_args(argv)

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    levels = [lv.strip().upper() for lv in args.levels.split(",") if lv.strip()]
    quantize_from = [q.strip() for q in args.quantize.split(",") if q.strip()]
    quantize_from = [q if q == "base" else q.upper() for q in quantize_from]
    unknown = [m for m in models if m not in MODELS] + [lv for lv in levels if lv not in LEVELS]
    unknown += [q for q in quantize_from if q != "base" and q not in levels]
    if unknown:
        parser.error(f"unknown or not exported: {', '.join(unknown)}")
    work = args.work if args.work is not None else Path(tempfile.mkdtemp(prefix="reattribution-"))
    work = work.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    log(f"work directory: {work}")

    import logging

    logging.basicConfig(level=logging.WARNING)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    results = []
    for model in models:
        log(f"{model} ({MODELS[model][1]}, {MODELS[model][2]})")
        start = time.perf_counter()
        try:
            result = run_model(model, work, levels, quantize_from, args.tiny)
        except Exception as e:
            traceback.print_exc()
            result = {"model": model, "rows": [], "retrofit": None, "error": error_text(e)}
        result["seconds"] = round(time.perf_counter() - start, 1)
        results.append(result)
        log(f"{model}: {result['seconds']:.0f} s")

    print_tables(results)
    report = {
        "started": started,
        "work": str(work),
        "arguments": {"models": models, "levels": levels, "quantize": quantize_from, "tiny": args.tiny},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": versions(),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    log(f"wrote {args.json}")
    failed = any(r["error"] or any("error" in row for row in r["rows"]) for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
