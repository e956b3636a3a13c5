"""``hierarchy sensitivity --int4|--int8|--fp16``: the ranking and the local errors equal a brute-force reference.

The reference converts each candidate module alone, one file per module, runs it and the float file with
ONNX Runtime and measures with numpy: int4 with ``quantize_int4(include_modules=[module])``; int8 with
``quantize_dynamic(nodes_to_quantize=<the module's MatMul nodes>)``; fp16 by cutting the module's nodes out
of the float model (``onnx.utils.Extractor``), converting them with ONNX Runtime's float16 converter
(``keep_io_types``) and running the rest of the float model on what they compute. A module's nodes are read
from the raw node metadata, its boundary outputs worked out here. The tool's metrics at the outputs and its
local errors (at the module's boundary outputs) must equal the reference for every module, and its
ranking must be the same.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from dynamo_support import module_of
from explorer_support import check_with_model_explorer, load_node_data
from support import run_cli

from optimum_hierarchy.tools.inputs import generate_inputs


def _run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, feeds)]


def _rel_l2(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    r = np.concatenate([a.astype(np.float64).ravel() for a in reference if a.dtype.kind == "f"])
    c = np.concatenate([a.astype(np.float64).ravel() for a in candidate if a.dtype.kind == "f"])
    return float(np.linalg.norm(c - r) / np.linalg.norm(r))


def _kl(reference: np.ndarray, candidate: np.ndarray) -> float:
    p = torch.softmax(torch.from_numpy(reference.astype(np.float64)), -1)
    log_q = torch.log_softmax(torch.from_numpy(candidate.astype(np.float64)), -1)
    return float(torch.sum(p * (torch.log(p) - log_q), -1).mean())


@pytest.mark.parametrize(("case", "metric"), [("llama", "kl"), ("bert", "rel_l2")])
def test_ranking_equals_quantizing_each_module_alone(
    task_exports: dict[str, Path], tmp_path: Path, case: str, metric: str
) -> None:
    from optimum_hierarchy.tools.int4 import quantize_int4
    from optimum_hierarchy.tools.sensitivity import module_sensitivity

    model = task_exports[case] / "model.onnx"
    report = module_sensitivity(model, metric=metric, block_size=32)
    linears = {n.name for n in onnx.load(str(model), load_external_data=False).graph.node if n.op_type == "MatMul"}
    assert report.modules and not report.skipped
    assert len(report.modules) >= 8, [m.module for m in report.modules]

    feeds = generate_inputs(model)
    names = [o.name for o in onnx.load(str(model), load_external_data=False).graph.output]
    reference = _run(model, feeds)
    brute = {}
    for row in report.modules:
        out = tmp_path / f"{row.module}.onnx"
        quantize_int4(model, out, block_size=32, include_modules=[row.module])
        values = _run(out, feeds)
        if metric == "kl":
            k = names.index("logits")
            brute[row.module] = _kl(reference[k], values[k])
        else:
            brute[row.module] = _rel_l2(reference, values)
        assert row.metrics[metric] == pytest.approx(brute[row.module], rel=1e-6, abs=1e-12), row.module
        assert set(row.nodes) <= {f"{name}_Q4" for name in linears}
    assert [r.module for r in report.modules] == sorted(brute, key=lambda m: (-brute[m], m))


def test_blocks_and_the_cli(task_exports: dict[str, Path]) -> None:
    model = task_exports["llama"] / "model.onnx"
    completed = run_cli("hierarchy", "sensitivity", str(model), "--int4", "--granularity", "block", "--json")
    report = json.loads(completed.stdout)
    assert [m["module"] for m in report["modules"]] in (
        ["model.layers.0", "model.layers.1"],
        ["model.layers.1", "model.layers.0"],
    )
    assert all(m["metrics"]["rel_l2"] > 0 for m in report["modules"])
    # a block's error comes from its own Linears only: each block's weights are its 7 Linears'
    assert all(m["weights"] > 0 for m in report["modules"])
    table = run_cli("hierarchy", "sensitivity", str(model), "--int4", "--metric", "top1").stdout
    assert "model.layers.0.self_attn.q_proj" in " ".join(table.split())


def test_bad_input_is_a_clear_error(task_exports: dict[str, Path], tmp_path: Path) -> None:
    model = task_exports["bert"] / "model.onnx"
    no_logits = run_cli("hierarchy", "sensitivity", str(model), "--int4", "--metric", "kl", check=False)
    assert no_logits.returncode == 1 and "needs an output named logits" in " ".join(no_logits.stderr.split())
    missing = run_cli("hierarchy", "sensitivity", str(tmp_path / "nope.onnx"), "--int4", check=False)
    assert missing.returncode == 1 and "no such ONNX file" in missing.stderr
    assert "Traceback" not in no_logits.stderr + missing.stderr


# --- int8 and fp16 against one conversion per module, and the local errors of all three ------------------


_LINEAR = ("MatMul", "Gemm")


def _members(proto: onnx.ModelProto, module: str, *, block: bool) -> list[onnx.NodeProto]:
    """The module's nodes, from the raw metadata: its own (a Linear), or its subtree (a block)."""
    found = []
    for node in proto.graph.node:
        owner = module_of(node)
        if owner is not None and (owner == module or (block and owner.startswith(module + "."))):
            found.append(node)
    return found


def _boundary(proto: onnx.ModelProto, members: list[onnx.NodeProto]) -> tuple[list[str], list[str]]:
    """The tensors the members read from outside (not initializers) and those they hand to other nodes or out."""
    mine = {id(n) for n in members}
    produced = {t for n in members for t in n.output if t}
    initializers = {t.name for t in proto.graph.initializer}
    read_outside = {t for n in proto.graph.node if id(n) not in mine for t in n.input} | {
        o.name for o in proto.graph.output
    }
    inputs = sorted({t for n in members for t in n.input if t and t not in produced and t not in initializers})
    return inputs, sorted(produced & read_outside)


def _values(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    existing = {o.name for o in copy.graph.output}
    copy.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in existing)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(copy.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    return dict(zip(names, session.run(names, {k: v for k, v in feeds.items() if k in wanted}), strict=True))


def _measure(metric: str, names: list[str], reference: dict[str, np.ndarray], values: dict[str, np.ndarray]) -> float:
    if metric == "kl":
        return _kl(reference["logits"], values["logits"])
    return _rel_l2([reference[n] for n in names], [values[n] for n in names])


def _fp16_alone(
    float_proto: onnx.ModelProto,
    members: list[onnx.NodeProto],
    feeds: dict[str, np.ndarray],
    outputs: list[str],
    reference: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """The float model with only ``members`` in float16: cut out, converted, the rest run on what they compute."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    inputs, local = _boundary(float_proto, members)
    sub = onnx.utils.Extractor(float_proto).extract_model(inputs, local)
    converted = convert_float_to_float16(sub, keep_io_types=True)
    values = _values(converted, {**feeds, **{t: reference[t] for t in inputs}}, local)
    rest_outputs = [o for o in outputs if o not in values]
    if rest_outputs:
        graph_inputs = [i.name for i in float_proto.graph.input]
        rest = onnx.utils.Extractor(float_proto).extract_model([*graph_inputs, *local], rest_outputs)
        values.update(_values(rest, {**feeds, **values}, rest_outputs))
    return values


@pytest.mark.parametrize(
    "spec",
    [
        ("int8", "llama", "kl", "linear"),
        ("int8", "bert", "rel_l2", "linear"),
        ("int8", "llama", "rel_l2", "block"),
        ("int8", "gpt2", "rel_l2", "linear"),  # Conv1D: Gemm nodes
        ("fp16", "llama", "rel_l2", "linear"),
        ("fp16", "bert", "rel_l2", "linear"),
        ("fp16", "bert", "rel_l2", "block"),
        ("int4", "bert", "rel_l2", "linear"),
    ],
)
def test_each_precision_equals_converting_each_module_alone(
    task_exports: dict[str, Path], tmp_path: Path, spec: tuple[str, str, str, str]
) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from optimum_hierarchy.tools.int4 import quantize_int4
    from optimum_hierarchy.tools.sensitivity import module_sensitivity

    precision, case, metric, granularity = spec
    model = task_exports[case] / "model.onnx"
    report = module_sensitivity(model, precision=precision, granularity=granularity, metric=metric, block_size=32)
    assert report.modules and not report.skipped
    assert len(report.modules) >= (2 if granularity == "block" else 8), [m.module for m in report.modules]
    float_proto = onnx.load(str(model))
    outputs = [o.name for o in float_proto.graph.output]
    feeds = generate_inputs(model)
    boundaries = [
        _boundary(float_proto, _members(float_proto, m.module, block=granularity == "block")) for m in report.modules
    ]
    every = sorted(
        {t for inputs, local in boundaries for t in (*inputs, *local) if t not in outputs and t not in feeds}
    )
    reference = _values(float_proto, feeds, [*outputs, *every])
    brute, compared_local = {}, 0
    for row in report.modules:
        members = _members(float_proto, row.module, block=granularity == "block")
        _, local = _boundary(float_proto, members)
        local = [t for t in local if reference[t].dtype.kind == "f"]
        assert sorted(row.local_tensors) == local, row.module
        if precision == "fp16":
            values = _fp16_alone(float_proto, members, feeds, outputs, reference)
        else:
            out = tmp_path / f"{row.module}.onnx"
            if precision == "int8":
                # quantize_dynamic first rewrites every Gemm as <name>_MatMul + <name>_Add, then selects by name
                matmuls = [n.name + ("_MatMul" if n.op_type == "Gemm" else "") for n in members if n.op_type in _LINEAR]
                quantize_dynamic(
                    model, out, op_types_to_quantize=["MatMul"], nodes_to_quantize=matmuls, weight_type=QuantType.QInt8
                )
            else:
                quantize_int4(model, out, block_size=32, include_modules=[row.module])
            values = _values(onnx.load(str(out)), feeds, [*outputs, *(t for t in local if t not in outputs)])
        brute[row.module] = _measure(metric, outputs, reference, values)
        assert row.metrics[metric] == pytest.approx(brute[row.module], rel=1e-6, abs=1e-12), row.module
        local_rel_l2 = _rel_l2([reference[t] for t in local], [values[t] for t in local])
        assert row.local["rel_l2"] == pytest.approx(local_rel_l2, rel=1e-6, abs=1e-12), row.module
        compared_local += local_rel_l2 > 0
    assert compared_local == len(report.modules)  # every module's own outputs moved, and were measured
    if metric == "kl":  # int8 of q/k_proj moves the logits' KL by ~1e-17, float64 noise: ties in any order
        ranked = [brute[r.module] for r in report.modules]
        assert all(a >= b - max(1e-12, 1e-6 * abs(b)) for a, b in itertools.pairwise(ranked))
        assert ranked[0] > 1e-9  # the most sensitive (lm_head) far above the noise
    else:
        assert [r.module for r in report.modules] == sorted(brute, key=lambda m: (-brute[m], m))


def test_fp16_and_model_explorer_through_the_cli(task_exports: dict[str, Path], tmp_path: Path) -> None:
    model = task_exports["bert"] / "model.onnx"
    explorer = tmp_path / "sensitivity.json"
    completed = run_cli(
        "hierarchy", "sensitivity", str(model), "--fp16", "--json", "--model-explorer", str(explorer),
        "--model-explorer-metric", "local_rel_l2",
    )  # fmt: skip
    report = json.loads(completed.stdout)
    assert report["precision"] == "fp16" and report["block_size"] is None and "spliced" in report["method"]
    rows = report["modules"]
    assert len(rows) == 12 and all(r["local"]["rel_l2"] > 0 and r["local_tensors"] for r in rows)
    data = load_node_data(explorer)
    check_with_model_explorer(model, data)
    (results,) = [entry["results"] for entry in data.values()]
    proto = onnx.load(str(model), load_external_data=False)
    placed = 0
    for row in rows:
        members = _members(proto, row["module"], block=False)
        assert members
        for node in members:
            assert results[node.name]["value"] == pytest.approx(row["local"]["rel_l2"]), node.name
            placed += 1
    assert set(results) == {n.name for r in rows for n in _members(proto, r["module"], block=False)}
    assert placed == len(results)
    table = run_cli("hierarchy", "sensitivity", str(model), "--int8", "--top", "3").stdout
    assert "dynamic int8 sensitivity" in table and "local rel_l2" in table and "encoder.layer" in table


def test_unknown_metric_writes_nothing(task_exports: dict[str, Path], tmp_path: Path) -> None:
    model = task_exports["bert"] / "model.onnx"
    explorer = tmp_path / "out.json"
    completed = run_cli(
        "hierarchy", "sensitivity", str(model), "--int8", "--metric", "top1", "--model-explorer", str(explorer),
        check=False,
    )  # fmt: skip
    message = " ".join(completed.stderr.split())
    assert completed.returncode == 1 and "--metric top1: needs an output named logits" in message
    assert "last_hidden_state" in message and "Traceback" not in completed.stderr
    assert not explorer.exists()
