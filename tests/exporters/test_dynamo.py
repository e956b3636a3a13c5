"""torch's dynamo exporter with the hierarchy, checked against the exporter's own name_scopes, named_modules(),
one MatMul/Gemm per nn.Linear, the plain export's outputs, and the nodes onnxscript's optimizer replaced."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from dynamo_cases import KINDS, TORCHSCRIPT_KINDS, DynamoCase
from dynamo_support import (
    created_regions,
    lca,
    load,
    module_of,
    name_scope_module,
    source_of,
    sources_of,
    within,
)
from support import run_cli
from torch import nn

from optimum_hierarchy import read_hierarchy


def _qualified(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _feeds(case: DynamoCase, session: ort.InferenceSession) -> dict[str, np.ndarray]:
    values = [a.numpy() for a in case.args]
    return {i.name: v for i, v in zip(session.get_inputs(), values, strict=True)}


def _run(path: Any, case: DynamoCase) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, _feeds(case, session))


@pytest.mark.parametrize("kind", KINDS)
def test_every_node_is_at_the_deepest_module_of_its_name_scopes(dynamo_cases: dict[str, DynamoCase], kind: str) -> None:
    case = dynamo_cases[kind]
    plain, annotated = load(case.plain), load(case.annotated)
    assert [n.name for n in annotated.graph.node] == [n.name for n in plain.graph.node]
    assert len(plain.graph.node) > 5
    tree = read_hierarchy(case.annotated).tree
    for before, after in zip(plain.graph.node, annotated.graph.node, strict=True):
        expected = name_scope_module(before)
        assert expected is not None, f"{before.name} has no name_scopes"
        assert expected in tree, expected
        assert (module_of(after), source_of(after)) == (expected, "metadata"), after.name


@pytest.mark.parametrize("kind", KINDS)
def test_the_stored_tree_is_named_modules_with_classes(dynamo_cases: dict[str, DynamoCase], kind: str) -> None:
    case = dynamo_cases[kind]
    expected = [(path, _qualified(m)) for path, m in case.model.named_modules()]
    for path in (case.annotated, case.annotated_optimized):
        tree = read_hierarchy(path).tree
        assert [(p, tree[p].class_name) for p in tree] == expected


@pytest.mark.parametrize("kind", TORCHSCRIPT_KINDS)
def test_the_tree_is_the_torchscript_exports_tree(dynamo_cases: dict[str, DynamoCase], kind: str) -> None:
    case = dynamo_cases[kind]
    assert read_hierarchy(case.annotated_optimized).tree == read_hierarchy(case.torchscript).tree


@pytest.mark.parametrize("kind", KINDS)
def test_one_matmul_or_gemm_per_linear_and_one_conv_per_conv(dynamo_cases: dict[str, DynamoCase], kind: str) -> None:
    case = dynamo_cases[kind]
    linears = [p for p, m in case.model.named_modules() if isinstance(m, nn.Linear)]
    convs = [p for p, m in case.model.named_modules() if isinstance(m, nn.Conv2d)]
    assert linears, "the model has no nn.Linear"
    for path in (case.annotated, case.annotated_optimized):
        counts = collections.Counter((module_of(n), n.op_type) for n in load(path).graph.node)
        for linear in linears:  # each is called once in these models
            assert counts[(linear, "MatMul")] + counts[(linear, "Gemm")] == 1, (path.name, linear)
    counts = collections.Counter((module_of(n), n.op_type) for n in load(case.annotated).graph.node)
    for conv in convs:
        assert counts[(conv, "Conv")] == 1, conv
    # onnxscript folds each BatchNorm into its Conv: that Conv stands for both modules (at their LCA, tested
    # below against the replaced nodes), so each Conv2d is found in exactly one Conv's own or replaced modules.
    optimized = [n for n in load(case.annotated_optimized).graph.node if n.op_type == "Conv"]
    for conv in convs:
        holders = [n for n in optimized if conv == module_of(n) or conv in json.loads(sources_of(n) or "[]")]
        assert len(holders) == 1, conv


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_are_identical_to_the_plain_dynamo_export(dynamo_cases: dict[str, DynamoCase], kind: str) -> None:
    case = dynamo_cases[kind]
    for ours, plain in ((case.annotated, case.plain), (case.annotated_optimized, case.plain_optimized)):
        onnx.checker.check_model(str(ours), full_check=True)
        got, want = _run(ours, case), _run(plain, case)
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert np.array_equal(a, b)
    with torch.no_grad():
        reference = case.model(*case.args)
    first = reference if isinstance(reference, torch.Tensor) else reference[0]
    np.testing.assert_allclose(_run(case.annotated_optimized, case)[0], first.numpy(), atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_onnxscript_fusions_sit_at_the_lca_of_what_they_replaced(
    dynamo_cases: dict[str, DynamoCase], kind: str
) -> None:
    """Kept nodes keep their name_scopes module; a created node is at the LCA of the name_scopes modules of the
    nodes of the unoptimized export it replaced (computed here from the two graphs)."""
    case = dynamo_cases[kind]
    before, after = load(case.plain), load(case.annotated_optimized)
    modules = {n.name: name_scope_module(n) for n in before.graph.node}
    kept = {(n.name, n.op_type) for n in before.graph.node}
    checked_kept = 0
    for node in after.graph.node:
        assert source_of(node) != "unattributed", node.name
        if (node.name, node.op_type) in kept:
            assert module_of(node) == modules[node.name], node.name
            checked_kept += 1
    assert checked_kept > 0
    for nodes, replaced in created_regions(before, after):
        if not replaced:
            continue
        expected = lca(modules[name] or "" for name in replaced)
        for node in nodes:
            found = module_of(node)
            assert found is not None and within(found, expected), (node.name, found, expected)
            if len(nodes) == 1:
                assert found == expected, (node.name, found, expected, sorted(replaced))


def test_decoder_trees_are_optimums_torchscript_exports_trees(
    dynamo_cases: dict[str, DynamoCase], cli_exports: dict[str, Path], model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """GPT-2 and Llama: the TorchScript exporter needs Optimum's patcher for transformers' masks, so the trees are
    compared with `optimum-cli export onnx --hierarchy` (TorchScript) of a model of the same config."""
    from optimum_hierarchy.demo import build_tiny_model

    assert (
        read_hierarchy(dynamo_cases["gpt2"].annotated_optimized).tree
        == read_hierarchy(cli_exports["gpt2"] / "model.onnx").tree
    )
    llama = tmp_path / "llama"
    build_tiny_model("llama", llama)
    run_cli("export", "onnx", "--model", str(llama), "--task", "text-generation", "--hierarchy", str(tmp_path / "out"))
    assert (
        read_hierarchy(dynamo_cases["llama"].annotated_optimized).tree
        == read_hierarchy(tmp_path / "out" / "model.onnx").tree
    )
