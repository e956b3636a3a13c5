"""Hierarchy through Optimum's own entry points: custom OnnxConfigs, generic configs, submodels, optimization."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from support import make_feeds, require_optimum_onnx_module, run_cli

require_optimum_onnx_module()

from optimum_hierarchy import read_hierarchy  # noqa: E402
from optimum_hierarchy.exporters import export_model_with_hierarchy, export_with_hierarchy  # noqa: E402
from optimum_hierarchy.exporters.onnx_config import (  # noqa: E402
    BertHierarchyOnnxConfig,
    GPT2HierarchyOnnxConfig,
    HierarchyOnnxConfigMixin,
    ViTHierarchyOnnxConfig,
    hierarchy_onnx_config,
)
from optimum_hierarchy.passes.attribute_nodes import AttributeNodesPass  # noqa: E402


def test_named_configs_are_optimums_configs() -> None:
    from optimum.exporters.onnx.model_configs import BertOnnxConfig, GPT2OnnxConfig, T5OnnxConfig, ViTOnnxConfig

    assert hierarchy_onnx_config(BertOnnxConfig) is BertHierarchyOnnxConfig
    assert hierarchy_onnx_config(GPT2OnnxConfig) is GPT2HierarchyOnnxConfig
    assert hierarchy_onnx_config(ViTOnnxConfig) is ViTHierarchyOnnxConfig
    generic = hierarchy_onnx_config(T5OnnxConfig)
    assert issubclass(generic, T5OnnxConfig)
    assert hierarchy_onnx_config(T5OnnxConfig) is generic
    assert hierarchy_onnx_config(generic) is generic


def test_named_configs_are_the_generic_subclass_under_its_name() -> None:
    """The named configs are what hierarchy_onnx_config builds; their instances pickle (found by name)."""
    from optimum.exporters.onnx.model_configs import BertOnnxConfig
    from transformers import BertConfig

    for named in (BertHierarchyOnnxConfig, GPT2HierarchyOnnxConfig, ViTHierarchyOnnxConfig):
        assert named.__name__ == named.__qualname__ and named.__module__ == hierarchy_onnx_config.__module__
        assert issubclass(named, HierarchyOnnxConfigMixin)
    config = BertHierarchyOnnxConfig(BertConfig(num_hidden_layers=2), task="feature-extraction")
    assert isinstance(config, BertOnnxConfig) and isinstance(config, HierarchyOnnxConfigMixin)
    assert BertHierarchyOnnxConfig.__name__ == "BertHierarchyOnnxConfig"
    copy = pickle.loads(pickle.dumps(config))
    assert type(copy) is BertHierarchyOnnxConfig and copy.task == "feature-extraction"


def test_main_export_with_custom_onnx_config(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    """A user of Optimum's own main_export gets the hierarchy from the custom config alone."""
    from optimum.exporters.onnx import main_export
    from transformers import AutoConfig

    config = BertHierarchyOnnxConfig(AutoConfig.from_pretrained(model_dirs["bert"]), task="feature-extraction")
    main_export(str(model_dirs["bert"]), tmp_path, task="feature-extraction", custom_onnx_configs={"model": config})
    hierarchy = read_hierarchy(tmp_path / "model.onnx")
    assert hierarchy.nodes and all(n.module is not None for n in hierarchy.nodes)
    assert hierarchy.export.rules == "bert"
    assert hierarchy.tree.root.class_name.endswith("BertModel")


def test_in_memory_model_export(tmp_path: Path) -> None:
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    model = DistilBertModel(DistilBertConfig(vocab_size=256, dim=32, n_layers=2, n_heads=2, hidden_dim=64))
    result = export_model_with_hierarchy(model, tmp_path / "out", task="feature-extraction")
    assert result.nodes > 50 and result.attributed == result.nodes
    (file,) = result.files
    assert file.rules is None  # no rules file for distilbert: the generic mechanism alone
    nodes = read_hierarchy(file.path).nodes
    modules = dict(model.named_modules())
    for node in nodes:
        if node.name.startswith("/"):
            assert node.module == ".".join(node.name.split("/")[1:-1])
        assert node.module in modules


@pytest.fixture(scope="module")
def t5_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, object]:
    from transformers import T5Config, T5ForConditionalGeneration

    root = tmp_path_factory.mktemp("t5")
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(
        T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0)
    )
    model.save_pretrained(root / "pt")
    completed = run_cli(
        "export",
        "onnx",
        "--model",
        str(root / "pt"),
        "--task",
        "text2text-generation-with-past",
        "--hierarchy",
        str(root / "onnx"),
    )
    return root / "onnx", completed.stdout, model


def test_encoder_decoder_files_keep_full_model_paths(t5_export: tuple[Path, str, object]) -> None:
    out, stdout, model = t5_export
    modules = dict(model.named_modules())  # type: ignore[attr-defined]
    encoder_prefix = next(p for p, m in modules.items() if m is model.get_encoder())  # type: ignore[attr-defined]
    assert encoder_prefix == "encoder"
    files = sorted(p.name for p in out.glob("*.onnx"))
    assert "encoder_model.onnx" in files and "decoder_model_merged.onnx" in files
    for name in files:
        hierarchy = read_hierarchy(out / name)
        prefix = encoder_prefix if name.startswith("encoder") else ""
        assert hierarchy.export.root == prefix
        assert list(hierarchy.tree) == list(modules)
        assert all(n.module is not None for n in hierarchy.nodes), name
        for node in hierarchy.nodes:
            assert node.module in modules
            if node.name.startswith("/") and node.source == "scope":
                segments = node.name.split("/")[1:-1]
                joined = ".".join(p for p in (prefix, *segments) if p)
                if joined in modules:
                    assert node.module == joined, (name, node.name)
                else:
                    # A shared module (T5's `shared` embedding, also `encoder.embed_tokens`): the scope
                    # names one of its other paths, and the node is at the module itself.
                    alias = ".".join(p for p in (prefix, *segments) if p)
                    try:
                        called = model.get_submodule(alias)  # type: ignore[attr-defined]
                    except AttributeError:  # called from elsewhere: its own named_modules() name
                        called = modules[".".join(p for p in (prefix, segments[-1]) if p)]
                    assert modules[node.module] is called, (name, node.name, node.module)
    merged = read_hierarchy(out / "decoder_model_merged.onnx")
    in_subgraphs = [
        n
        for n in merged.nodes
        if n.graph != onnx.load(str(out / "decoder_model_merged.onnx"), load_external_data=False).graph.name
    ]
    assert len(in_subgraphs) > 100  # the If branches are attributed too
    assert "Notice: no architecture rules" in stdout


def test_optimize_keeps_every_node_attributed(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    args = ("export", "onnx", "--model", str(model_dirs["bert"]), "--task", "feature-extraction", "--optimize", "O2")
    completed = run_cli(*args, "--hierarchy", str(tmp_path / "h"))
    run_cli(*args, str(tmp_path / "plain"))
    assert "--optimize O2" in completed.stdout
    path = tmp_path / "h" / "model.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    hierarchy = read_hierarchy(path)
    fused = [n for n in hierarchy.nodes if n.op_type in {"Attention", "SkipLayerNormalization", "BiasGelu"}]
    assert fused  # O2 did fuse
    assert all(n.module is not None for n in hierarchy.nodes)
    for node in hierarchy.nodes:
        if node.source == "scope":
            assert node.module == ".".join(node.name.split("/")[1:-1])
    sessions = [ort.InferenceSession(str(p / "model.onnx")) for p in (tmp_path / "h", tmp_path / "plain")]
    feeds = make_feeds(sessions[0])
    for a, b in zip(*(s.run(None, feeds) for s in sessions), strict=True):
        assert np.array_equal(a, b)


def test_failure_leaves_no_model_file(
    model_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: AttributeNodesPass, model: object) -> object:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(AttributeNodesPass, "call", broken)
    with pytest.raises(RuntimeError, match="injected failure"):
        export_with_hierarchy(model_dirs["vit"], tmp_path / "out", task="image-classification")
    assert (tmp_path / "out").is_dir()  # Optimum created it before exporting
    assert not list((tmp_path / "out").rglob("*.onnx*"))
    assert not list((tmp_path / "out").rglob(".*.tmp"))
