"""`optimum-cli export onnx --hierarchy --dynamo` (subprocess), then ONNX Runtime's optimizers and quantizer on
dynamo exports: every node attributed, kept nodes keep their module, created nodes at the LCA of what they
replaced (computed here from the graphs before and after)."""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from dynamo_cases import DynamoCase
from dynamo_support import created_regions, lca, load, module_of, name_scope_module, source_of, sources_of, within
from support import load_torch_model, run_cli

from optimum_hierarchy import annotate_hierarchy, read_hierarchy

pytestmark = [pytest.mark.cli, pytest.mark.optimum_onnx]  # optimum-cli export onnx --dynamo

CLI_CASES = {"bert": "feature-extraction", "gpt2": "text-generation"}


@pytest.fixture(scope="session")
def dynamo_cli_exports(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("cli_dynamo")
    exports = {}
    for name, task in CLI_CASES.items():
        target = out / name
        completed = run_cli(
            "export", "onnx", "--model", str(model_dirs[name]), "--task", task, "--hierarchy", "--dynamo", str(target)
        )
        (out / f"{name}.stdout").write_text(completed.stdout)
        exports[name] = target
    target = out / "bert_O2"
    run_cli(
        "export", "onnx", "--model", str(model_dirs["bert"]), "--task", "feature-extraction", "--hierarchy",
        "--dynamo", "--optimize", "O2", str(target),
    )  # fmt: skip
    exports["bert_O2"] = target
    return exports


def _modules_before(model: onnx.ModelProto) -> dict[str, set[str]]:
    """Per node of an annotated dynamo export: the modules it stands for (its name_scopes module, or for a node
    onnxscript fused, the modules it replaced)."""
    out = {}
    for node in model.graph.node:
        if source_of(node) == "fusion":
            out[node.name] = set(json.loads(sources_of(node) or "[]")) or {module_of(node) or ""}
        else:
            module = name_scope_module(node)
            assert module is not None and module == module_of(node), node.name
            out[node.name] = {module}
    return out


def _check_against(before: onnx.ModelProto, after: onnx.ModelProto) -> int:
    """Every node of ``after`` attributed; kept ones keep their module; created ones inside the LCA of what they
    replaced (equal to it for a node that is a region alone). Returns the number of created nodes checked."""
    modules = _modules_before(before)
    kept = {(n.name, n.op_type): module_of(n) for n in before.graph.node}
    for node in after.graph.node:
        assert source_of(node) != "unattributed", node.name
        if (node.name, node.op_type) in kept:
            assert module_of(node) == kept[(node.name, node.op_type)], node.name
    checked = 0
    for nodes, replaced in created_regions(before, after):
        if not replaced:
            continue
        expected = lca(m for name in replaced for m in modules[name])
        for node in nodes:
            found = module_of(node)
            assert found is not None and within(found, expected), (node.name, found, expected, sorted(replaced))
            if len(nodes) == 1:
                assert found == expected, (node.name, found, expected)
            checked += 1
    return checked


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_cli_dynamo_export_is_attributed_from_the_exporters_metadata(
    dynamo_cli_exports: dict[str, Path], model_dirs: dict[str, Path], name: str
) -> None:
    model = load(dynamo_cli_exports[name] / "model.onnx")
    assert model.graph.node
    sources = [source_of(n) for n in model.graph.node]
    assert "unattributed" not in sources
    assert sources.count("metadata") > 0.9 * len(sources)
    for node in model.graph.node:
        if source_of(node) == "metadata":
            assert module_of(node) == name_scope_module(node), node.name
    stdout = (dynamo_cli_exports[name].parent / f"{name}.stdout").read_text()
    assert f"{len(sources)}/{len(sources)} nodes" in stdout.replace("Attributed ", "")
    torch_model = load_torch_model(name, model_dirs[name])
    counts = collections.Counter((module_of(n), n.op_type) for n in model.graph.node)
    with_nodes = {module_of(n) for n in model.graph.node}
    linears = [p for p, m in torch_model.named_modules() if isinstance(m, torch.nn.Linear) and p in with_nodes]
    assert linears  # BERT's pooler is not in a feature-extraction export: a Linear without nodes is skipped
    for linear in linears:
        assert counts[(linear, "MatMul")] + counts[(linear, "Gemm")] == 1, linear
    tree = read_hierarchy(dynamo_cli_exports[name] / "model.onnx").tree
    assert [(p, tree[p].class_name) for p in tree] == [
        (p, f"{type(m).__module__}.{type(m).__qualname__}") for p, m in torch_model.named_modules()
    ]


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_cli_dynamo_export_runs_at_another_shape_and_matches_pytorch(
    dynamo_cli_exports: dict[str, Path], model_dirs: dict[str, Path], name: str
) -> None:
    """Exported at Optimum's dummy shape (2 x 16); run at batch 3 and sequence 11."""
    session = ort.InferenceSession(str(dynamo_cli_exports[name] / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 500, size=(3, 11), dtype=np.int64)
    feeds = {}
    for i in session.get_inputs():
        if i.name == "input_ids":
            feeds[i.name] = ids
        elif i.name == "position_ids":
            feeds[i.name] = np.tile(np.arange(11, dtype=np.int64), (3, 1))
        elif i.name == "token_type_ids":
            feeds[i.name] = np.zeros((3, 11), dtype=np.int64)
        else:
            feeds[i.name] = np.ones((3, 11), dtype=np.int64)
    got = session.run(None, feeds)[0]
    model = load_torch_model(name, model_dirs[name])
    with torch.no_grad():
        kwargs = {k: torch.from_numpy(v) for k, v in feeds.items()}
        if name == "gpt2":
            kwargs["use_cache"] = False  # type: ignore[assignment]
        want = model(**kwargs)[0].numpy()
    assert got.shape == want.shape == (3, 11, want.shape[-1])
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_ort_optimizer_on_a_dynamo_export(dynamo_cli_exports: dict[str, Path]) -> None:
    """`--dynamo --optimize O2`: ORTOptimizer accepts the file; its fusions sit at the LCA of what they replaced."""
    before = load(dynamo_cli_exports["bert"] / "model.onnx")
    after = load(dynamo_cli_exports["bert_O2"] / "model.onnx")
    assert any(n.domain == "com.microsoft" for n in after.graph.node), "ORTOptimizer fused nothing"
    assert _check_against(before, after) > 0


@pytest.mark.parametrize(("kind", "model_type"), [("bert", "bert"), ("gpt2", "gpt2")])
def test_onnxruntime_transformers_optimizer_on_a_dynamo_export(
    dynamo_cases: dict[str, DynamoCase], tmp_path: Path, kind: str, model_type: str
) -> None:
    from onnxruntime.transformers.optimizer import optimize_model

    case = dynamo_cases[kind]
    target = tmp_path / "model.onnx"
    optimized = optimize_model(str(case.annotated_optimized), model_type=model_type, num_heads=4, hidden_size=64)
    optimized.save_model_to_file(str(target))
    annotate_hierarchy(target)
    before, after = load(case.annotated_optimized), load(target)
    assert {(n.name, n.op_type) for n in after.graph.node} != {(n.name, n.op_type) for n in before.graph.node}
    _check_against(before, after)


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_dynamic_int8_quantization_of_a_dynamo_export(
    dynamo_cases: dict[str, DynamoCase], tmp_path: Path, kind: str
) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    case = dynamo_cases[kind]
    source = tmp_path / "in.onnx"
    shutil.copy(case.annotated_optimized, source)
    target = tmp_path / "model.onnx"
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    annotate_hierarchy(target)
    before, after = load(case.annotated_optimized), load(target)
    assert any(n.op_type == "MatMulInteger" for n in after.graph.node)
    assert _check_against(before, after) > 0
    for node in after.graph.node:  # a quantized MatMul stays in its Linear (or Conv1D) module
        if node.op_type == "MatMulInteger":
            assert module_of(node) in dict(case.model.named_modules()), node.name


def test_cli_dynamo_with_past_is_refused_clearly(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    completed = run_cli(
        "export", "onnx", "--model", str(model_dirs["gpt2"]), "--task", "text-generation-with-past", "--hierarchy",
        "--dynamo", str(out), check=False,
    )  # fmt: skip
    assert completed.returncode == 1
    assert "-with-past" in completed.stderr and "Traceback" not in completed.stderr
    assert not list(out.glob("*.onnx"))


def test_cli_dynamo_without_hierarchy_is_refused(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    completed = run_cli(
        "export", "onnx", "--model", str(model_dirs["bert"]), "--dynamo", str(tmp_path / "out"), check=False
    )
    assert completed.returncode == 2 and "--dynamo" in completed.stderr
