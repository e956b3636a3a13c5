"""Tiny models exported with torch's dynamo exporter, once per session: plain and with the hierarchy."""

from __future__ import annotations

import pytest
import torch
from dynamo_cases import KINDS, TORCHSCRIPT_KINDS, DynamoCase, build_case_model

from optimum_hierarchy import HierarchyPreservingExporter


@pytest.fixture(scope="session")
def dynamo_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DynamoCase]:
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
