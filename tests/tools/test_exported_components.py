"""The module tools on component files of transformers' exporter (``prefill.onnx`` + ``prefill.onnx.data``).

Checked against the PyTorch model (``nn.Linear`` census from torch's own ``name_scopes``), the inputs the
export was traced with (``export.json``), and ONNX Runtime running what the tools wrote.
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import torch
from generation_support import NAME_SCOPES, component_files, props_of

MODULE_KEY = "pkg.optimum_hierarchy.module"


def _called_linears(path: Path, model: Any) -> set[str]:
    linears = {p for p, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    called = set()
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        called |= {s for s in ast.literal_eval(props_of(node).get(NAME_SCOPES, "[]"))[:-1] if s in linears}
    return called


def test_profile_takes_the_traced_shapes_and_a_cache_length(generation_exports: dict[str, Any]) -> None:
    from optimum_hierarchy.tools.inputs import DEFAULT_PAST_SEQUENCE_LENGTH
    from optimum_hierarchy.tools.profile import profile_model

    export = generation_exports["llama"]
    files = component_files(export.annotated)
    prefill = profile_model(files["prefill"], runs=1, warmup=0)
    assert prefill.inputs["input_ids"] == tuple(export.case.inputs["input_ids"].shape)  # (1, 6), as traced
    decode = profile_model(files["decode"], runs=1, warmup=0)
    cache = next(name for name in decode.inputs if name.endswith("layers.0.keys"))
    assert decode.inputs[cache][2] == DEFAULT_PAST_SEQUENCE_LENGTH


def test_int4_fp16_and_error_on_a_component(generation_exports: dict[str, Any], tmp_path: Path) -> None:
    from optimum_hierarchy.tools.error import module_errors
    from optimum_hierarchy.tools.fp16 import convert_fp16
    from optimum_hierarchy.tools.int4 import quantize_int4

    export = generation_exports["llama"]
    prefill = component_files(export.annotated)["prefill"]
    (tmp_path / "int4").mkdir()
    (tmp_path / "fp16").mkdir()
    quantized = quantize_int4(prefill, tmp_path / "int4" / "prefill.onnx", block_size=32, exclude_modules=["lm_head"])
    graph = onnx.load(str(quantized.output), load_external_data=False).graph
    modules = collections.Counter(props_of(n).get(MODULE_KEY) for n in graph.node if n.op_type == "MatMulNBits")
    expected = _called_linears(prefill, export.case.model) - {"lm_head"}
    assert dict(modules) == dict.fromkeys(expected, 1)
    ort.InferenceSession(str(quantized.output), providers=["CPUExecutionProvider"])

    half = convert_fp16(prefill, tmp_path / "fp16" / "prefill.onnx", keep_fp32_modules=["model.norm"])
    assert half.initializers.get("float16", 0) > 0
    ort.InferenceSession(str(half.output), providers=["CPUExecutionProvider"])

    report = module_errors(prefill, quantized.output, depth=3)
    by_module = {e.module: e for e in report.modules}
    compared = [e for e in by_module.values() if e.accumulated is not None]
    assert compared, "no module compared"
    assert by_module["model.layers.0"].accumulated is not None
    assert by_module["model.layers.0"].accumulated.max_abs > 0  # int4 weights change the layer's output


def test_query_commands_on_a_component(generation_exports: dict[str, Any]) -> None:
    """A LLaVA ``language_model`` component: its nodes sit under ``model.language_model`` of the whole model."""
    from support import run_cli

    component = component_files(generation_exports["llava"].annotated)["language_model"]
    tree = " ".join(run_cli("hierarchy", "tree", str(component)).stdout.split())
    assert "language_model" in tree and "LlamaModel" in tree
    nodes = run_cli("hierarchy", "nodes", str(component), "model.language_model.layers.0.self_attn", "--json").stdout
    assert '"model.language_model.layers.0.self_attn' in nodes
