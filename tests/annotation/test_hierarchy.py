"""annotate_hierarchy / `optimum-cli hierarchy annotate` on files nobody annotated, and bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from support import run_cli

from optimum_hierarchy import annotate_hierarchy, read_hierarchy
from optimum_hierarchy.errors import HierarchyError, InvalidModelFileError
from optimum_hierarchy.rules import RULES_PATH_ENV
from optimum_hierarchy.trees.names import tree_from_names


def _copy(source: Path, target: Path, *, config: bool) -> Path:
    target.mkdir()
    shutil.copy(source / "model.onnx", target / "model.onnx")
    if config:
        shutil.copy(source / "config.json", target / "config.json")
    return target / "model.onnx"


@pytest.mark.parametrize("name", ["vit", "bert", "gpt2"])
@pytest.mark.parametrize("config", [False, True], ids=["names-only", "config-beside"])
def test_plain_export_gets_the_same_modules_as_an_export_with_hierarchy(
    name: str, config: bool, plain_exports: dict[str, Path], cli_exports: dict[str, Path], tmp_path: Path
) -> None:
    path = _copy(plain_exports[name], tmp_path / name, config=config)
    (record,) = annotate_hierarchy(path)
    assert record.summary.coverage == 1.0
    assert set(record.summary.by_source) <= {"name", "rule", "context", "parameter"}
    exact = {n.name: n.module for n in read_hierarchy(cli_exports[name] / "model.onnx").nodes}
    nodes = read_hierarchy(path).nodes
    scoped = [n for n in nodes if n.name.startswith("/")]
    assert all(n.module == exact[n.name] for n in scoped)
    agree = sum(n.module == exact[n.name] for n in nodes)
    assert agree >= 0.95 * len(nodes), (agree, len(nodes))
    if config:  # the real tree: classes known
        assert (
            read_hierarchy(path).tree["" if name == "bert" else "transformer" if name == "gpt2" else "vit"].class_name
        )


def test_a_users_rules_file_applies_without_code(
    plain_exports: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    optimized = tmp_path / "o2"
    model = ORTModelForFeatureExtraction.from_pretrained(plain_exports["bert"])
    ORTOptimizer.from_pretrained(model).optimize(AutoOptimizationConfig.O2(), optimized)
    shipped = {n.name: n.module for n in _annotated_copy(optimized, tmp_path / "shipped").nodes}
    assert shipped["BiasGelu"] == "encoder.layer.0.intermediate"

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "mine.json").write_text(
        json.dumps(
            {
                "name": "my-bert",
                "model_types": ["bert"],
                "fused_nodes": [{"op_types": ["BiasGelu"], "module": ["input:1"], "why": "count it as the Linear"}],
            }
        )
    )
    monkeypatch.setenv(RULES_PATH_ENV, str(rules))
    mine = _annotated_copy(optimized, tmp_path / "mine")
    node = next(n for n in mine.nodes if n.name == "BiasGelu")
    assert (node.module, node.source) == ("encoder.layer.0.intermediate.dense", "rule")
    assert mine.export.rules == "my-bert"


def _annotated_copy(source: Path, target: Path):
    shutil.copytree(source, target)
    annotate_hierarchy(target)
    return read_hierarchy(target / "model_optimized.onnx")


def test_tree_from_names_undoes_the_exporters_quirks() -> None:
    init = [
        helper.make_tensor("layer1.0.conv1.weight", TensorProto.FLOAT, [1], [1.0]),
        helper.make_tensor("act.scale", TensorProto.FLOAT, [1], [1.0]),
    ]
    hidden = "/layer1/layer1.0/conv1/Mul_output_0"
    nodes = [
        helper.make_node("Mul", ["x", "layer1.0.conv1.weight"], [hidden], name="/layer1/layer1.0/conv1/Mul"),
        helper.make_node("Mul", [hidden, "act.scale"], ["y"], name="/act_1/Mul"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        init,
    )
    tree = tree_from_names(helper.make_model(graph))
    assert set(tree) == {"", "layer1", "layer1.0", "layer1.0.conv1", "act"}
    assert [p.name for p in tree["layer1.0.conv1"].parameters] == ["weight"]


def test_bad_input(tmp_path: Path, plain_exports: dict[str, Path]) -> None:
    with pytest.raises(InvalidModelFileError, match="no such file or directory"):
        annotate_hierarchy(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidModelFileError, match=r"no \.onnx file"):
        annotate_hierarchy(tmp_path / "empty")
    path = _copy(plain_exports["bert"], tmp_path / "bert", config=False)
    before = path.read_bytes()
    with pytest.raises(HierarchyError, match=r"no config\.json there"):
        annotate_hierarchy(path, config=tmp_path / "empty")
    assert path.read_bytes() == before
    completed = run_cli("hierarchy", "annotate", str(tmp_path / "missing"), check=False)
    assert completed.returncode == 1
    assert "error:" in completed.stderr and "missing" in completed.stderr


def test_cli_annotate_prints_a_table(plain_exports: dict[str, Path], tmp_path: Path) -> None:
    path = _copy(plain_exports["vit"], tmp_path / "vit", config=True)
    completed = run_cli("hierarchy", "annotate", str(path.parent))
    assert "model.onnx" in completed.stdout and "100.0%" in completed.stdout
    assert onnx.load(str(path)).metadata_props


@pytest.fixture(scope="module")
def o2_bert(cli_exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The annotated tiny BERT after ONNX Runtime's O2 optimizer, annotated again (copy it before changing it)."""
    from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    out = tmp_path_factory.mktemp("o2_bert")
    model = ORTModelForFeatureExtraction.from_pretrained(cli_exports["bert"])
    ORTOptimizer.from_pretrained(model).optimize(AutoOptimizationConfig.O2(), out)
    annotate_hierarchy(out / "model_optimized.onnx")
    return out


def test_scope_names_option_renames_fused_nodes_after_their_module(o2_bert: Path, tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime as ort
    from support import make_feeds

    path = Path(shutil.copytree(o2_bert, tmp_path / "o2")) / "model_optimized.onnx"
    before = read_hierarchy(path).nodes
    outputs = ort.InferenceSession(str(path)).run(None, make_feeds(ort.InferenceSession(str(path))))
    assert any(not n.name.startswith("/") for n in before)

    run_cli("hierarchy", "annotate", str(path), "--scope-names")
    after = read_hierarchy(path).nodes
    assert [(n.op_type, n.module) for n in after] == [(n.op_type, n.module) for n in before]
    assert len({n.name for n in after}) == len(after)
    for old, new in zip(before, after, strict=True):
        if old.name.startswith("/"):
            assert new.name == old.name
        else:  # a scope before the old name; an unnamed node is named after its op type
            assert new.name.startswith("/") and new.name.rpartition("/")[2].startswith(old.name or old.op_type)
    session = ort.InferenceSession(str(path))
    for a, b in zip(session.run(None, make_feeds(session)), outputs, strict=True):
        np.testing.assert_array_equal(a, b)
    content = path.read_bytes()
    annotate_hierarchy(path, scope_names=True)  # idempotent
    assert path.read_bytes() == content


def test_scope_names_spell_each_scope_as_the_exporter_did(o2_bert: Path, tmp_path: Path) -> None:
    """Renamed nodes take the scope the file's own names give their module (`layer.0` is one segment)."""
    module_key = "pkg.optimum_hierarchy.module"
    path = Path(shutil.copytree(o2_bert, tmp_path / "o2")) / "model_optimized.onnx"
    before = [n.name for n in onnx.load(str(path)).graph.node]
    annotate_hierarchy(path, scope_names=True)
    nodes = onnx.load(str(path)).graph.node
    modules = [{p.key: p.value for p in n.metadata_props}[module_key] for n in nodes]
    names = [n.name for n in nodes]
    renamed = [i for i, (old, new) in enumerate(zip(before, names, strict=True)) if old != new]
    assert len(renamed) >= 8, renamed  # per layer: Attention, 2 SkipLayerNorm, BiasGelu
    assert not [n for n in names if re.search(r"/layer/\d+/", n)]
    assert len(set(names)) == len(names)

    def prefix(name: str) -> str:
        return name[: name.rindex("/") + 1]

    kept = [i for i in range(len(nodes)) if i not in renamed and names[i].startswith("/")]
    own: dict[str, set[str]] = {}
    for i in kept:
        own.setdefault(modules[i], set()).add(prefix(names[i]))
    checked = 0
    for i in renamed:
        module = modules[i]
        if module in own:  # the scope the exporter gave this module's kept nodes
            assert prefix(names[i]) in own[module], (names[i], own[module])
            checked += 1
        else:  # all its nodes were fused: its submodules' kept nodes, or the exporter's names of what it replaced
            # (ONNX Runtime keeps the names of the fused subgraph's outputs: `/.../self/Reshape_3_output_0`)
            carriers = [names[k] for k in kept if modules[k].startswith(f"{module}.")] + list(nodes[i].output)
            assert any(c.startswith(prefix(names[i])) for c in carriers), (names[i], carriers)
    assert checked, "no renamed node of a module with kept nodes: the check above checked nothing"

    # The names alone place the renamed nodes again: their scopes are torch's spelling.
    names_only = tmp_path / "names_only"
    names_only.mkdir()
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save(model, str(names_only / "model.onnx"))
    shutil.copy(path.parent / "config.json", names_only / "config.json")
    annotate_hierarchy(names_only)
    again = {n.name: (n.module, n.source) for n in read_hierarchy(names_only / "model.onnx").nodes}
    assert [again[names[i]] for i in renamed] == [(modules[i], "name") for i in renamed]


def test_scope_names_of_a_dynamo_export_are_the_torchscript_exporters(
    task_exports: dict[str, Path], task_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """A dynamo export's names carry no scope (`node_MatMul_12`); renamed, each node takes the scope that
    torch's TorchScript exporter writes for its module, read here from a TorchScript export of the same
    model (an independent definition: the exporter's own names, not the package's rule)."""
    import torch
    from task_cases import load_task_model

    from optimum_hierarchy import HierarchyPreservingExporter

    module_key = "pkg.optimum_hierarchy.module"
    model = load_task_model("bert", task_model_dirs["bert"])
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    torchscript = tmp_path / "torchscript.onnx"
    HierarchyPreservingExporter().export_with_hierarchy(model, (ids, torch.ones_like(ids)), torchscript, dynamo=False)
    spelled: dict[str, set[str]] = {}  # module -> the scopes its nodes' names carry in the TorchScript export
    for node in onnx.load(str(torchscript)).graph.node:
        module = {p.key: p.value for p in node.metadata_props}.get(module_key)
        if module and node.name.startswith("/"):
            spelled.setdefault(module, set()).add(node.name[: node.name.rindex("/") + 1])

    path = Path(shutil.copytree(task_exports["bert"], tmp_path / "dynamo")) / "model.onnx"
    assert not [n.name for n in onnx.load(str(path)).graph.node if n.name.startswith("/")]  # no scopes yet
    annotate_hierarchy(path, scope_names=True)
    nodes = onnx.load(str(path)).graph.node
    names = [n.name for n in nodes]
    assert len(set(names)) == len(names)
    assert not [n for n in names if re.search(r"/layer/\d+/", n)]
    checked = 0
    for node in nodes:
        module = {p.key: p.value for p in node.metadata_props}.get(module_key)
        if module and module in spelled:
            assert node.name[: node.name.rindex("/") + 1] in spelled[module], (node.name, spelled[module])
            checked += 1
    assert checked >= len(nodes) // 2, (checked, len(nodes))
