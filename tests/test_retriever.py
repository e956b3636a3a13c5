"""HierarchyRetriever against named_modules() and the TorchScript scopes (never against itself)."""

from __future__ import annotations

import collections
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from support import MODELS, load_torch_model

from optimum_hierarchy import HierarchyRetriever, capture_module_tree
from optimum_hierarchy.errors import MissingHierarchyError, SchemaError
from optimum_hierarchy.schema import ExportInfo, HierarchyMetadata, encode_model_metadata


def _scope(name: str) -> str | None:
    """Module path spelled by a TorchScript node name, for names without exporter quirks."""
    if not name.startswith("/"):
        return None
    return ".".join(name.split("/")[1:-1])


@pytest.fixture(scope="module")
def torch_models(model_dirs: dict[str, Path]) -> dict[str, object]:
    return {name: load_torch_model(name, model_dirs[name]) for name in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_the_four_design_methods(name: str, cli_exports: dict[str, Path], torch_models: dict[str, object]) -> None:
    retriever = HierarchyRetriever(cli_exports[name] / "model.onnx")
    model = torch_models[name]
    paths = [p for p, _ in model.named_modules()]  # type: ignore[attr-defined]

    # get_modules_by_depth(1): exactly the model's top-level children, in order
    assert [m.path for m in retriever.get_modules_by_depth(1)] == [n for n, _ in model.named_children()]  # type: ignore[attr-defined]
    for depth in range(6):
        assert [m.path for m in retriever.get_modules_by_depth(depth)] == [
            p for p in paths if (p.count(".") + 1 if p else 0) == depth
        ]

    # get_module_subtree: the module and its descendants as named_modules() lists them
    for path in paths:
        expected = [p for p in paths if path in {"", p} or p.startswith(path + ".")]
        assert [m.path for m in retriever.get_module_subtree(path)] == expected

    # get_nodes_by_module: every scoped node is among the nodes of the module its name spells
    scoped = 0
    for node in retriever.nodes:
        module = _scope(node.name)
        if node.source == "scope" and module in retriever.tree:
            assert node in retriever.get_nodes_by_module(module)
            assert node in retriever.get_nodes_by_module("", subtree=True)
            scoped += 1
    assert scoped > 0.8 * len(retriever.nodes)

    # group_operations_by_hierarchy: every node exactly once, at any depth
    for depth in (None, 0, 1, 2, 3):
        groups = retriever.group_operations_by_hierarchy(depth)
        names = [id(n) for nodes in groups.values() for n in nodes]
        assert sorted(names) == sorted(id(n) for n in retriever.nodes)
        assert all(key in retriever.tree for key in groups)
        if depth is not None:
            assert all((k.count(".") + 1 if k else 0) <= depth for k in groups)


@pytest.mark.parametrize("name", MODELS)
def test_statistics_match_pytorch(name: str, cli_exports: dict[str, Path], torch_models: dict[str, object]) -> None:
    retriever = HierarchyRetriever(cli_exports[name] / "model.onnx")
    model = torch_models[name]
    # a tied weight (GPT-2's lm_head.weight is wte.weight) counts for its first owner only
    first = {n for n, _ in model.named_parameters()}  # type: ignore[attr-defined]
    for path, module in model.named_modules():  # type: ignore[attr-defined]
        stats = retriever.get_module_stats(path)
        prefix = f"{path}." if path else ""
        own = [(n, p) for n, p in module.named_parameters(recurse=False) if prefix + n in first]
        assert stats.own_parameters == sum(p.numel() for _, p in own), path
        assert stats.own_parameter_bytes == sum(p.numel() * p.element_size() for _, p in own), path
        below = [p for n, p in module.named_parameters() if prefix + n in first]
        assert stats.subtree_parameters == sum(p.numel() for p in below), path
        nodes = retriever.get_nodes_by_module(path, subtree=True)
        assert stats.subtree_nodes == len(nodes)
        assert stats.subtree_op_types == dict(sorted(collections.Counter(n.op_type for n in nodes).items()))


def test_class_and_glob_queries(cli_exports: dict[str, Path], torch_models: dict[str, object]) -> None:
    import torch

    retriever = HierarchyRetriever(cli_exports["bert"] / "model.onnx")
    model = torch_models["bert"]
    linears = [p for p, m in model.named_modules() if isinstance(m, torch.nn.Linear)]  # type: ignore[attr-defined]
    assert [m.path for m in retriever.get_modules_by_class("Linear")] == linears
    assert [m.path for m in retriever.get_modules_by_class("torch.nn.modules.linear.Linear")] == linears
    assert [m.path for m in retriever.find_modules("encoder.layer.*.attention")] == [
        "encoder.layer.0.attention",
        "encoder.layer.1.attention",
    ]
    assert [m.path for m in retriever.find_modules("**.dense")] == [p for p in linears if p.endswith(".dense")]
    assert retriever.find_modules("encoder.*") == [retriever.tree["encoder.layer"]]


def test_node_queries(cli_exports: dict[str, Path]) -> None:
    from optimum.onnxruntime import ORTModelForFeatureExtraction

    retriever = HierarchyRetriever(ORTModelForFeatureExtraction.from_pretrained(cli_exports["bert"]))
    assert retriever.nodes == HierarchyRetriever(cli_exports["bert"] / "model.onnx").nodes
    name = "/encoder/layer.1/attention/self/query/MatMul"
    assert retriever.get_module_of_node(name) == retriever.tree["encoder.layer.1.attention.self.query"]
    assert retriever.get_node_path(name) == [
        "encoder.layer.1.attention.self.query",
        "encoder.layer.1.attention.self",
        "encoder.layer.1.attention",
        "encoder.layer.1",
        "encoder.layer",
        "encoder",
        "",
    ]
    assert retriever.get_source_modules(name) == ("encoder.layer.1.attention.self.query",)
    with pytest.raises(KeyError, match="no node named"):
        retriever.get_node("nope")
    with pytest.raises(KeyError, match="not a module"):
        retriever.get_nodes_by_module("nope")


def test_diff_counts_nodes_per_module(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    from optimum_hierarchy import annotate_hierarchy

    model = ORTModelForFeatureExtraction.from_pretrained(cli_exports["bert"])
    ORTOptimizer.from_pretrained(model).optimize(AutoOptimizationConfig.O2(), tmp_path)
    annotate_hierarchy(tmp_path)
    before = HierarchyRetriever(cli_exports["bert"] / "model.onnx")
    after = HierarchyRetriever(tmp_path / "model_optimized.onnx")
    rows = {d.path: d for d in before.diff(after)}
    assert rows[""].nodes_before == len(before.nodes) and rows[""].nodes_after == len(after.nodes)
    self_attention = rows["encoder.layer.0.attention.self"]
    assert self_attention.op_types_after.get("Attention") == 1
    assert "Softmax" in self_attention.op_types_before and "Softmax" not in self_attention.op_types_after
    # fused nodes spanning modules are found from each of them only on request
    spanning = [n for n in after.nodes if n.spanning]
    assert spanning
    node = spanning[0]
    source = next(s for s in node.sources if s != node.module)
    assert node not in after.get_nodes_by_module(source, subtree=True)
    assert node in after.get_nodes_by_module(source, subtree=True, spanning=True)


def test_vit_base_tree_from_its_config() -> None:
    """vit-base (ViTConfig()): every module of named_modules(), and each top-level subtree as it gives it."""
    import torch
    from transformers import ViTConfig, ViTModel

    with torch.device("meta"):
        model = ViTModel(ViTConfig())
    tree = capture_module_tree(model)
    meta = HierarchyMetadata(tree=tree, export=ExportInfo(model_type="vit"))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"], name="/Identity")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    proto = helper.make_model(graph)
    for key, value in encode_model_metadata(meta).items():
        proto.metadata_props.add(key=key, value=value)
    retriever = HierarchyRetriever(proto)
    paths = [p for p, _ in model.named_modules()]
    assert len(paths) > 150  # 215 (transformers 4: encoder.layer.N), 166 (5: layers.N)
    assert [m.path for m in retriever.get_module_subtree("")] == paths
    for name, child in model.named_children():
        expected = [p for p in paths if p == name or p.startswith(name + ".")]
        assert [m.path for m in retriever.get_module_subtree(name)] == expected
        assert len(expected) == len(list(child.named_modules()))


def test_clear_errors(plain_exports: dict[str, Path], cli_exports: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(MissingHierarchyError, match="optimum-cli hierarchy annotate"):
        HierarchyRetriever(plain_exports["bert"] / "model.onnx")
    proto = onnx.load(str(cli_exports["bert"] / "model.onnx"))
    for prop in proto.metadata_props:
        if prop.key == "pkg.optimum_hierarchy.schema_version":
            prop.value = "99"
    with pytest.raises(SchemaError, match="schema version 99"):
        HierarchyRetriever(proto)
