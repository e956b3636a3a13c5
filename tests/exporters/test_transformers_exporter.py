"""``HierarchyOnnxExporter``: transformers' own exporter, each component annotated with paths of the whole model.

Checked against definitions that are not the package's output: torch's own ``name_scopes`` of each
node (parsed here with ``ast``), ``named_modules()`` of the PyTorch model, one MatMul per
``nn.Linear`` call, transformers' plain ``OnnxExporter`` (outputs bit for bit), PyTorch's
``generate``, and the fusion definition of ``tests/fusion_support.py`` on the same export without
``ort_fusions``.
"""

from __future__ import annotations

import ast
import collections
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fusion_support import expected_fusions, graph_nodes, within
from generation_cases import GENERATION_CASES, RUNS, RUNS_ON_CPU
from generation_support import (
    MODULE_KEY,
    NAME_SCOPES,
    check_nodes,
    component_files,
    component_roots,
    join,
    load,
    props_of,
)


@pytest.mark.parametrize("run", RUNS)
def test_every_node_at_its_own_name_scopes_module(generation_exports: dict[str, Any], run: str) -> None:
    export = generation_exports[run]
    files = component_files(export.annotated)
    check_nodes(files, export.case.model, component_roots(export.case.model, list(files)))


@pytest.mark.parametrize("run", GENERATION_CASES)
def test_annotate_after_the_fact_on_transformers_export(
    generation_exports: dict[str, Any], run: str, tmp_path: Path
) -> None:
    """``annotate_hierarchy(DIR)`` on transformers' own export: the root of each file from export.json and the
    nodes' records, never the config's guess (a Llama config alone builds a LlamaModel)."""
    from optimum_hierarchy import annotate_hierarchy, read_hierarchy

    export = generation_exports[run]
    directory = tmp_path / run
    shutil.copytree(export.plain, directory)
    annotate_hierarchy(directory)
    files = component_files(directory)
    roots = component_roots(export.case.model, list(files))
    check_nodes(files, export.case.model, roots)
    for name, path in files.items():
        assert read_hierarchy(path).export.root == roots[name]


@pytest.mark.parametrize("run", RUNS)
def test_one_matmul_per_linear_call(generation_exports: dict[str, Any], run: str) -> None:
    """Every ``nn.Linear`` a component calls (as torch recorded it in the plain export) has exactly one MatMul or
    Gemm at its path, unless a fusion packed several Linears into one node (then the node is at their parent)."""
    import torch

    export = generation_exports[run]
    model = export.case.model
    linears = {path for path, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    plain_files = component_files(export.plain)
    for name, path in component_files(export.annotated).items():
        root = component_roots(model, [name])[name]
        called = set()
        for node in load(plain_files[name]).graph.node:
            stack = ast.literal_eval(props_of(node).get(NAME_SCOPES, "[]"))[:-1]
            called |= {join(root, s) for s in stack if join(root, s) in linears}
        counts = collections.Counter(
            props_of(n).get(MODULE_KEY)
            for n in load(path).graph.node
            if n.op_type in ("MatMul", "Gemm", "MatMulNBits", "MatMulInteger")
        )
        packed = {m for m in counts if m is not None and m not in linears}
        for linear in sorted(called):
            if counts[linear] == 0:
                assert any(within(linear, m) for m in packed), (name, linear, "no MatMul and no packed parent")
            else:
                assert counts[linear] == 1, (name, linear, counts[linear])


def traced_feeds(case: Any) -> dict[str, Any]:
    """Each component's inputs as ``export_for_generation`` captured them from ``generate``, by ONNX input name."""
    import copy

    from transformers.exporters.utils import decompose_for_generation, onnx_feed

    components = decompose_for_generation(case.model, copy.deepcopy(case.inputs))
    return {name: (lambda names, sample=sample: onnx_feed(names, sample)) for name, (_, sample) in components.items()}


@pytest.mark.parametrize("run", RUNS)
def test_same_graph_and_outputs_bit_for_bit_as_transformers_exporter(
    generation_exports: dict[str, Any], run: str
) -> None:
    export = generation_exports[run]
    plain_files = component_files(export.plain)
    feeders = traced_feeds(export.case)
    for name, path in component_files(export.annotated).items():
        ours, theirs = load(path), load(plain_files[name])
        shape = [(n.name, n.op_type, list(n.input), list(n.output)) for n in ours.graph.node]
        assert shape == [(n.name, n.op_type, list(n.input), list(n.output)) for n in theirs.graph.node], name
        if run not in RUNS_ON_CPU:  # fused for another provider: same graph, same weights (checked by name and bytes)
            weights = {i.name: i.SerializeToString() for i in onnx.load(str(plain_files[name])).graph.initializer}
            assert {i.name: i.SerializeToString() for i in onnx.load(str(path)).graph.initializer} == weights
            continue
        a = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        b = ort.InferenceSession(str(plain_files[name]), providers=["CPUExecutionProvider"])
        feeds = feeders[name]([value.name for value in b.get_inputs()])
        assert len(feeds) == len(b.get_inputs()), (name, sorted(feeds))
        for x, y in zip(a.run(None, feeds), b.run(None, feeds), strict=True):
            assert np.array_equal(x, y, equal_nan=True), name


@pytest.mark.parametrize("run", [r for r in RUNS_ON_CPU if r != "llama-int8"])  # int8 may change a token
def test_greedy_generation_equals_pytorch(generation_exports: dict[str, Any], run: str) -> None:
    from transformers.exporters import ExportedModel

    from optimum_hierarchy.exporters.generation import check_generation

    export = generation_exports[run]
    loaded = ExportedModel.from_pretrained(export.annotated)
    check = check_generation(export.case.model, loaded, export.case.inputs, max_new_tokens=5)
    assert check.ok, check.describe()
    assert len(check.reference[0]) >= 5


@pytest.mark.parametrize("run", ["llama-fused", "llama-cuda", "llama-webgpu", "llama-dml", "llama-int8"])
def test_fusions_and_quantization_at_the_lca_of_what_they_replaced(
    generation_exports: dict[str, Any], run: str
) -> None:
    """Every node ``ort_fusions`` or the quantizer created sits at the LCA of the nodes it replaced in the same export
    without them (the fusion definition of tests/fusion_support.py); each GroupQueryAttention at a layer's
    ``self_attn``; each MatMulInteger at the Linear whose MatMul it replaced."""
    unfused, fused = generation_exports["llama"], generation_exports[run]
    seen: collections.Counter[str] = collections.Counter()
    for name, path in component_files(fused.annotated).items():
        g0 = graph_nodes(component_files(unfused.annotated)[name])
        g1 = graph_nodes(path)
        expected = expected_fusions(g0, g1)
        assert expected, (name, "no created node")
        for i, (lca, _modules) in expected.items():
            node = g1[i]
            seen[node["op"]] += 1
            assert node["module"] == lca, (name, node["name"], node["op"], node["module"], expected[i])
        for node in g1:
            if node["op"] in ("GroupQueryAttention", "MultiHeadAttention"):
                assert node["module"].startswith("model.layers.") and node["module"].endswith(".self_attn"), node
    fused_ops = {"GroupQueryAttention", "MultiHeadAttention", "SkipSimplifiedLayerNormalization", "MatMulInteger"}
    assert fused_ops & set(seen), seen


def test_read_hierarchy_of_an_exported_model_and_its_directory(generation_exports: dict[str, Any]) -> None:
    from transformers.exporters import ExportedModel

    from optimum_hierarchy import read_hierarchy
    from optimum_hierarchy.errors import HierarchyError
    from optimum_hierarchy.read import read_export_hierarchy

    export = generation_exports["llava"]
    in_memory = read_export_hierarchy(export.exported)
    from_dir = read_export_hierarchy(export.annotated)
    loaded = ExportedModel.from_pretrained(export.annotated)
    assert set(in_memory) == set(from_dir) == set(loaded.components) == {"language_model", "lm_head", "decode"}
    for name in in_memory:
        expected = {(n.name, n.module) for n in in_memory[name].nodes}
        assert {(n.name, n.module) for n in from_dir[name].nodes} == expected
        assert {(n.name, n.module) for n in read_hierarchy(loaded, component=name).nodes} == expected
        raw = {n.name: props_of(n).get(MODULE_KEY) for n in load(component_files(export.annotated)[name]).graph.node}
        assert dict(expected) == raw
    assert read_hierarchy(export.annotated, component="lm_head").export.root == "lm_head"
    with pytest.raises(HierarchyError, match="language_model, lm_head, decode"):
        read_hierarchy(loaded)


def test_stored_tree_is_the_whole_models_with_the_component_root(generation_exports: dict[str, Any]) -> None:
    from optimum_hierarchy import read_hierarchy

    export = generation_exports["llava"]
    model = export.case.model
    files = component_files(export.annotated)
    roots = component_roots(model, list(files))
    assert roots["language_model"] == "model.language_model"
    for name, path in files.items():
        meta = read_hierarchy(path)
        assert meta.export.root == roots[name]
        assert set(meta.tree) == {p for p, _ in model.named_modules(remove_duplicate=False)} | set(meta.tree)
        assert {p for p, _ in model.named_modules()} <= set(meta.tree)
        assert meta.export.model_class is not None and meta.export.model_class.endswith("LlavaForConditionalGeneration")


def test_hooks_leave_other_threads_exports_alone() -> None:
    """While the hooks are in place, ``torch.onnx.export`` in another thread runs onnxscript's optimizer as usual and
    its nodes get no hierarchy (they would get this export's tree otherwise)."""
    import threading

    import torch
    from generation_cases import has_transformers_exporters

    if not has_transformers_exporters():
        pytest.skip("needs transformers.exporters")
    from optimum_hierarchy.exporters.dynamo import StagedAnnotation
    from optimum_hierarchy.exporters.transformers_exporter import _hooked_steps
    from optimum_hierarchy.modules import ModuleInfo, ModuleTree
    from optimum_hierarchy.schema import ExportInfo

    staged = StagedAnnotation(ModuleTree([ModuleInfo(path="", class_name="")]), ExportInfo())
    found: dict[str, Any] = {}

    def other() -> None:
        program = torch.onnx.export(torch.nn.Linear(4, 3), (torch.randn(2, 4),), dynamo=True)
        found["keys"] = {k for node in program.model.graph for k in node.metadata_props}

    with _hooked_steps(staged):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert found["keys"] and not any(k.startswith("pkg.optimum_hierarchy") for k in found["keys"])
    assert not staged.started
