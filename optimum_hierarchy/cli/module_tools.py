"""``optimum-cli hierarchy extract`` and ``optimum-cli hierarchy compare``: parsing and printing only.

Import-light: heavy imports are in ``run``.
"""

from __future__ import annotations

__all__ = ["CompareCommand", "ExtractCommand", "compare_data", "extract_data", "render_compare", "render_extract"]

import math
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from optimum.commands.base import BaseOptimumCLICommand

from optimum_hierarchy.cli.common import json_argument, optimization_level_argument, query, shape_argument


def _model_file(path: Path) -> Path:
    from optimum_hierarchy.tools.runtime import model_file

    return model_file(path)


def extract_data(extracted: Any, output: Path) -> dict[str, Any]:
    return {
        "module": extracted.module,
        "output": str(output),
        "nodes": len(extracted.model.graph.node),
        "inputs": list(extracted.inputs),
        "outputs": list(extracted.outputs),
        "initializers": list(extracted.boundary.initializers),
    }


def render_extract(data: dict[str, Any]) -> str:
    return (
        f"Wrote {data['output']}: module [bold]{data['module']}[/bold], {data['nodes']} nodes, "
        f"{len(data['initializers'])} initializers\n"
        f"  inputs:  {', '.join(data['inputs']) or '(none)'}\n"
        f"  outputs: {', '.join(data['outputs'])}"
    )


class ExtractCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        parser.add_argument("model", type=Path, help="An annotated .onnx file (or its directory).")
        parser.add_argument("module", help="The module to cut out, e.g. encoder.layer.3 ('' is the root).")
        parser.add_argument(
            "-o", "--output", type=Path, required=True, help="The .onnx file to write (never the input file)."
        )
        json_argument(parser)

    def run(self) -> None:
        from optimum_hierarchy.tools.extract import write_extracted_module

        def produce(a: Any) -> dict[str, Any]:
            return extract_data(write_extracted_module(_model_file(a.model), a.module, a.output), a.output)

        query(self, produce, render_extract)


def _number(value: float | None) -> float | str | None:
    """JSON has no infinity: an infinite relative error (zero reference, non-zero difference) is "inf"."""
    return "inf" if value is not None and math.isinf(value) else value


def compare_data(comparison: Any, *, everything: bool = False) -> dict[str, Any]:
    def row(r: Any) -> dict[str, Any]:
        return {
            "module": r.module,
            "class": r.class_name,
            "order": r.order,
            "status": r.status,
            "tensor": r.tensor,
            "shape": list(r.shape),
            "max_abs": r.max_abs,
            "max_rel": _number(r.max_rel),
            "added": _number(r.added),
            "exceeds": r.exceeds,
        }

    shown = [r for r in comparison.modules if everything or r.status == "compared"]
    return {
        "atol": comparison.atol,
        "rtol": comparison.rtol,
        "compared": len(comparison.compared),
        "modules": [row(r) for r in shown],
        "first_divergence": row(comparison.first_divergence) if comparison.first_divergence else None,
        "worst": row(comparison.worst) if comparison.worst else None,
    }


def render_compare(data: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="ONNX vs PyTorch by module (in the order modules finish)")
    table.add_column("module", overflow="fold")
    table.add_column("class", overflow="fold")
    table.add_column("max abs", justify="right", no_wrap=True)
    table.add_column("max rel", justify="right", no_wrap=True)
    table.add_column("status", overflow="fold")
    first = data["first_divergence"]["module"] if data["first_divergence"] else None

    def fmt(value: Any) -> str:
        return "" if value is None else (value if isinstance(value, str) else f"{value:.2e}")

    for r in data["modules"]:
        style = "bold red" if r["module"] == first else ("red" if r["exceeds"] else None)
        status = "over" if r["exceeds"] else ("ok" if r["status"] == "compared" else r["status"])
        table.add_row(
            r["module"] or "(root)",
            r["class"].rpartition(".")[2],
            fmt(r["max_abs"]),
            fmt(r["max_rel"]),
            status,
            style=style,
        )
    tolerance = f"atol {data['atol']:g} + rtol {data['rtol']:g} x max|reference|"
    if data["first_divergence"]:
        d = data["first_divergence"]
        summary = Text.from_markup(
            f"First divergence: [bold red]{d['module'] or '(root)'}[/bold red] ({d['class'].rpartition('.')[2]}), "
            f"max abs {d['max_abs']:.3e} > {tolerance}, tensor {d['tensor']}"
        )
    else:
        summary = Text(f"All {data['compared']} compared modules are within {tolerance}.")
    parts: list[Any] = [table, summary]
    if data["worst"]:
        w = data["worst"]
        parts.append(Text(f"Largest added error: {w['module'] or '(root)'} (relative error +{fmt(w['added'])})"))
    return Group(*parts)


class CompareCommand(BaseOptimumCLICommand):  # type: ignore[misc]  # optimum is untyped
    @staticmethod
    def parse_args(parser: ArgumentParser) -> None:
        parser.add_argument(
            "onnx_model", type=Path, help="An annotated .onnx file (or its directory): plain, optimized or quantized."
        )
        parser.add_argument(
            "--model",
            type=Path,
            required=True,
            help="The PyTorch model directory it was exported from (config.json and weights).",
        )
        parser.add_argument("--atol", type=float, default=1e-4, help="Absolute tolerance (1e-4).")
        parser.add_argument(
            "--rtol", type=float, default=1e-4, help="Relative tolerance, times the output's largest magnitude (1e-4)."
        )
        shape_argument(
            parser, "Value of a symbolic input dimension, e.g. --shape batch_size=1 --shape sequence_length=128."
        )
        parser.add_argument("--seed", type=int, default=0, help="Seed of the generated inputs (0).")
        optimization_level_argument(parser, "ONNX Runtime's graph optimization level for the run (all).")
        parser.add_argument("--all", action="store_true", help="Also list modules that could not be compared.")
        parser.add_argument(
            "--check", action="store_true", help="Exit with status 2 when a module is over the tolerance."
        )
        json_argument(parser)

    def run(self) -> None:
        import sys

        from optimum_hierarchy.tools.compare import compare_with_pytorch
        from optimum_hierarchy.tools.inputs import parse_shapes

        result: dict[str, Any] = {}

        def produce(a: Any) -> dict[str, Any]:
            comparison = compare_with_pytorch(
                _model_file(a.onnx_model),
                a.model,
                shapes=parse_shapes(a.shape),
                seed=a.seed,
                atol=a.atol,
                rtol=a.rtol,
                optimization_level=a.optimization_level,
            )
            result.update(compare_data(comparison, everything=a.all))
            return result

        query(self, produce, render_compare)
        if self.args.check and result.get("first_divergence"):
            sys.exit(2)
