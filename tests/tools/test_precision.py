"""``module_precisions`` and ``hierarchy precision``: each module's precision in files the project's tools wrote.

What each module must be is defined here, independently of the tool: the PyTorch model built from the
export's config.json gives the modules with parameters and which are ``nn.Linear``; the module globs
passed to the quantizer or converter give which were kept, matched here with their documented meaning
(``*`` one path segment, ``**`` any number; a module is selected with its whole subtree).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import onnx
import pytest
import torch
from support import run_cli
from task_cases import TASK_CASES
from transformers import AutoConfig, AutoModel

from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.tools.fp16 import convert_fp16
from optimum_hierarchy.tools.int4 import quantize_int4
from optimum_hierarchy.tools.precision import module_precisions

SVG = "{http://www.w3.org/2000/svg}"


def _torch_modules(export_dir: Path) -> tuple[set[str], set[str]]:
    """(modules with parameters of their own that compute something in the export, the nn.Linear among them)."""
    model = AutoModel.from_config(AutoConfig.from_pretrained(export_dir))
    unused = set(TASK_CASES["bert"].unused_linears)
    named = [(n, m) for n, m in model.named_modules() if n not in unused]
    with_parameters = {n for n, m in named if any(True for _ in m.parameters(recurse=False))}
    linears = {n for n, m in named if isinstance(m, torch.nn.Linear)}
    return with_parameters, linears


def _selected(module: str, globs: list[str]) -> bool:
    parts = module.split(".")
    for glob in globs:
        pattern = re.compile(
            "^" + r"\.".join(".+" if g == "**" else re.escape(g).replace(r"\*", "[^.]+") for g in glob.split(".")) + "$"
        )
        if any(pattern.match(".".join(parts[:k])) for k in range(1, len(parts) + 1)):
            return True
    return False


@pytest.fixture(scope="module")
def bert_files(task_exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    model = task_exports["bert"] / "model.onnx"
    out = tmp_path_factory.mktemp("precision")
    quantize_int4(model, out / "int4.onnx", block_size=32, exclude_modules=["encoder.layer.0.*", "embeddings"])
    convert_fp16(model, out / "fp16.onnx", keep_fp32_modules=["encoder.layer.1.*"])
    return {"float": model, "int4": out / "int4.onnx", "fp16": out / "fp16.onnx"}


def test_float_int4_and_fp16_by_module(task_exports: dict[str, Path], bert_files: dict[str, Path]) -> None:
    with_parameters, linears = _torch_modules(task_exports["bert"])
    assert len(with_parameters) >= 20 and len(linears) == 12

    assert module_precisions(bert_files["float"]) == dict.fromkeys(with_parameters, "fp32")

    excluded = ["encoder.layer.0.*", "embeddings"]
    int4 = {m for m in linears if not _selected(m, excluded)}
    assert len(int4) == 6  # layer 1's six Linear
    assert module_precisions(bert_files["int4"]) == {m: "int4" if m in int4 else "fp32" for m in with_parameters}

    kept = {m for m in with_parameters if _selected(m, ["encoder.layer.1.*"])}
    assert len(kept) == 8  # layer 1's six Linear and two LayerNorm
    assert module_precisions(bert_files["fp16"]) == {m: "fp32" if m in kept else "fp16" for m in with_parameters}


def test_order_is_the_module_tree(bert_files: dict[str, Path]) -> None:
    modules = list(module_precisions(bert_files["int4"]))
    layers = [int(m.split(".")[2]) for m in modules if m.startswith("encoder.layer.")]
    assert modules[0].startswith("embeddings.") and layers == sorted(layers)


def test_cli_json_and_plot(bert_files: dict[str, Path], tmp_path: Path) -> None:
    plot = tmp_path / "map.svg"
    completed = run_cli("hierarchy", "precision", str(bert_files["int4"]), "--json", "--plot", str(plot))
    data = json.loads(completed.stdout)
    expected = module_precisions(bert_files["int4"])
    assert data["modules"] == expected
    assert data["counts"] == {"int4": 6, "fp32": len(expected) - 6}
    cells = [g for g in ET.parse(plot).getroot().iter(f"{SVG}g") if g.get("id", "").startswith("oh-precision-cell-")]
    titles = [g.findtext(f"{SVG}title") for g in cells]
    assert sorted(t for t in titles if t) == sorted(f"{m}: {p}" for m, p in expected.items())

    png = tmp_path / "map.png"
    table = run_cli("hierarchy", "precision", str(bert_files["fp16"]), "--plot", str(png))
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "encoder.layer.1.output.LayerNorm" in table.stdout and "fp16 12, fp32 8" in table.stdout


def test_bad_input_exit_1_nothing_written(bert_files: dict[str, Path], tmp_path: Path) -> None:
    plain = tmp_path / "plain.onnx"
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph), plain)
    with pytest.raises(HierarchyError, match="no hierarchy metadata"):
        module_precisions(plain)
    for model, plot, message in (
        (plain, tmp_path / "a.svg", "no hierarchy metadata"),
        (tmp_path / "missing.onnx", tmp_path / "b.svg", "no such file"),
        (bert_files["int4"], tmp_path / "c.pdf", ".svg or .png"),
    ):
        completed = run_cli("hierarchy", "precision", str(model), "--plot", str(plot), check=False)
        assert completed.returncode == 1 and "Traceback" not in completed.stderr
        assert message in " ".join(completed.stderr.split()) and not plot.exists()
