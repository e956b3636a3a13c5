"""Session-scoped tiny models and exports, built once and shared by the tests."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from dynamo_cases import KINDS, TORCHSCRIPT_KINDS, DynamoCase, build_case_model
from generation_cases import RUNS as GENERATION_RUNS
from generation_cases import GenerationCase, build_generation_case, case_of, has_transformers_exporters, onnx_config
from support import MODELS, run_cli, task_of, without_optimum_onnx_reason
from sweep_cases import SWEEP_CASES, SweepExport, export_sweep_case
from task_cases import TASK_CASES

from optimum_hierarchy import HierarchyPreservingExporter
from optimum_hierarchy.demo import build_tiny_model

# Fixtures made with Optimum's ONNX exporter: a test using one needs the `onnx` extra.
OPTIMUM_ONNX_FIXTURES = frozenset({"cli_exports", "plain_exports", "sweep_exports"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without optimum-onnx, skip (with the reason) the tests that use it or a fixture made with it."""
    reason = without_optimum_onnx_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if item.get_closest_marker("optimum_onnx") or OPTIMUM_ONNX_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    for name in MODELS:
        build_tiny_model(name, root / name)
    return {name: root / name for name in MODELS}


@pytest.fixture(scope="session")
def cli_exports(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`optimum-cli export onnx --hierarchy` of each tiny model (subprocess, installed package)."""
    out = tmp_path_factory.mktemp("cli_hierarchy")
    for name in MODELS:
        completed = run_cli(
            "export", "onnx", "--model", str(model_dirs[name]), "--task", task_of(name), "--hierarchy", str(out / name)
        )
        (out / f"{name}.stdout").write_text(completed.stdout)
    return {name: out / name for name in MODELS}


@pytest.fixture(scope="session")
def plain_exports(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same exports without --hierarchy."""
    out = tmp_path_factory.mktemp("cli_plain")
    for name in MODELS:
        run_cli("export", "onnx", "--model", str(model_dirs[name]), "--task", task_of(name), str(out / name))
    return {name: out / name for name in MODELS}


@pytest.fixture(scope="session")
def task_model_dirs(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The saved tiny model of each `hierarchy export` case (those of model_dirs reused)."""
    root = tmp_path_factory.mktemp("task_models")
    dirs = {}
    for case in TASK_CASES.values():
        if case.tiny in model_dirs:
            dirs[case.tiny] = model_dirs[case.tiny]
        else:
            build_tiny_model(case.tiny, root / case.tiny)
            dirs[case.tiny] = root / case.tiny
    return dirs


@pytest.fixture(scope="session")
def task_exports(task_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`optimum-cli hierarchy export` of each case (subprocess), and of BERT with --no-optimize."""
    out = tmp_path_factory.mktemp("hierarchy_export")
    runs = {name: (name, []) for name in TASK_CASES}
    runs["bert-no-optimize"] = ("bert", ["--no-optimize"])
    for name, (case, extra) in runs.items():
        model_dir = str(task_model_dirs[case])
        run_cli("hierarchy", "export", "--model", model_dir, "--task", TASK_CASES[case].task, *extra, str(out / name))
    return {name: out / name for name in runs}


@pytest.fixture(scope="session")
def sweep_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SweepExport]:
    """Each sweep architecture: saved, exported plain, with the hierarchy, and with it and --optimize O2."""
    root = tmp_path_factory.mktemp("sweep")
    return {name: export_sweep_case(name, root / name) for name in sorted(SWEEP_CASES)}


@pytest.fixture(scope="session")
def dynamo_cases(  # tiny models exported with torch's dynamo exporter, plain and with the hierarchy
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, DynamoCase]:
    out = tmp_path_factory.mktemp("dynamo")
    cases = {}
    for kind in KINDS:
        model, args, kwargs = build_case_model(kind)
        case = DynamoCase(
            kind=kind,
            model=model,
            args=args,
            kwargs=kwargs,
            plain=out / f"{kind}.plain.onnx",
            plain_optimized=out / f"{kind}.plain_optimized.onnx",
            annotated=out / f"{kind}.annotated.onnx",
            annotated_optimized=out / f"{kind}.annotated_optimized.onnx",
            torchscript=out / f"{kind}.torchscript.onnx",
        )
        with torch.no_grad():
            torch.onnx.export(model, args, kwargs=kwargs, dynamo=True, optimize=False).save(case.plain)
            torch.onnx.export(model, args, kwargs=kwargs, dynamo=True).save(case.plain_optimized)
        exporter = HierarchyPreservingExporter()
        exporter.export_with_hierarchy(model, args, case.annotated, kwargs=kwargs, dynamo=True, optimize=False)
        exporter.export_with_hierarchy(model, args, case.annotated_optimized, kwargs=kwargs)
        if kind in TORCHSCRIPT_KINDS:
            exporter.export_with_hierarchy(model, args, case.torchscript, dynamo=False)
        cases[kind] = case
    return cases


@dataclasses.dataclass
class GenerationExport:
    """One generation case exported by transformers' ``OnnxExporter`` and by ``HierarchyOnnxExporter``."""

    case: GenerationCase
    plain: Path
    """``OnnxExporter().export_for_generation(...).save_pretrained(plain)``."""
    annotated: Path
    """The same with ``HierarchyOnnxExporter``."""
    exported: Any
    """The ``ExportedModel`` ``HierarchyOnnxExporter`` returned."""


@pytest.fixture(scope="session")
def generation_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GenerationExport]:
    """Each generation run (the cases, and Llama's fused and quantized variants), exported once per session."""
    if not has_transformers_exporters():
        pytest.skip("needs transformers.exporters with ort_fusions (transformers >= 5.23), which this stack lacks")
    from transformers.exporters import OnnxExporter

    from optimum_hierarchy.exporters.transformers_exporter import HierarchyOnnxExporter

    out = tmp_path_factory.mktemp("generation")
    exports = {}
    cases: dict[str, GenerationCase] = {}
    for run in GENERATION_RUNS:
        name = case_of(run)
        case = cases.setdefault(name, build_generation_case(name))
        plain = OnnxExporter().export_for_generation(case.model, case.inputs, onnx_config(run))
        plain.save_pretrained(out / run / "plain")
        annotated = HierarchyOnnxExporter().export_for_generation(case.model, case.inputs, onnx_config(run))
        annotated.save_pretrained(out / run / "annotated")
        exports[run] = GenerationExport(case, out / run / "plain", out / run / "annotated", annotated)
    return exports


@pytest.fixture(autouse=True)
def _quiet_third_party_logs() -> None:
    for name in ("optimum", "transformers", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
