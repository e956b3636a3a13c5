"""Hierarchy through ONNX Runtime optimization and quantization, checked against independent definitions.

Tiny ViT, BERT and GPT-2 with three layers (so that two layers are treated alike by the fusions
even where the first or last one is special) are exported once with hierarchy (the export-time
graph ``G0``), then optimized at O1/O2/O3 (CLI at O2, Python API at O1 and O3), O4 through
``ORTOptimizer``, and dynamically quantized. The fused-node definition is re-implemented here from
the two graphs, without calling the package.
"""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fusion_support import expected_fusions, graph_nodes, within
from support import MODELS, make_feeds, run_cli, task_of

from optimum_hierarchy import HierarchyRetriever, annotate_hierarchy, export_with_hierarchy, read_hierarchy
from optimum_hierarchy.demo import build_tiny_model

pytestmark = pytest.mark.optimum_onnx  # Optimum's export, ORTOptimizer and ORTQuantizer

LEVELS = ("O1", "O2", "O3")
ORT_CLASSES = {
    "vit": "ORTModelForImageClassification",
    "bert": "ORTModelForFeatureExtraction",
    "gpt2": "ORTModelForCausalLM",
}


# --- fixtures: each model exported once, each optimization run once -------------------------------


@pytest.fixture(scope="module")
def models3(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models3")
    for name in MODELS:
        build_tiny_model(name, root / name, num_hidden_layers=3)
    return {name: root / name for name in MODELS}


@pytest.fixture(scope="module")
def exports3(models3: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``G0``: the annotated, unoptimized export of each model (Python API)."""
    out = tmp_path_factory.mktemp("exports3")
    for name in MODELS:
        export_with_hierarchy(models3[name], out / name, task=task_of(name))
    return {name: out / name for name in MODELS}


@pytest.fixture(scope="module")
def plain3(models3: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from optimum.exporters.onnx import main_export

    out = tmp_path_factory.mktemp("plain3")
    for name in MODELS:
        main_export(str(models3[name]), out / name, task=task_of(name))
    return {name: out / name for name in MODELS}


@pytest.fixture(scope="module")
def optimized(models3: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """(model, level) -> model.onnx exported with hierarchy and --optimize: CLI at O2, Python API otherwise."""
    out = tmp_path_factory.mktemp("optimized")
    files = {}
    for name in MODELS:
        for level in LEVELS:
            target = out / f"{name}_{level}"
            if level == "O2":
                completed = run_cli(
                    "export", "onnx", "--model", str(models3[name]), "--task", task_of(name), "--hierarchy",
                    "--optimize", level, str(target),
                )  # fmt: skip
                (out / f"{name}_{level}.stdout").write_text(completed.stdout)
            else:
                export_with_hierarchy(models3[name], target, task=task_of(name), optimize=level)
            files[(name, level)] = target / "model.onnx"
    return files


def _ort_optimize(source_dir: Path, name: str, level: str, target: Path) -> Path:
    import optimum.onnxruntime as ortm
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    model = getattr(ortm, ORT_CLASSES[name]).from_pretrained(source_dir)
    ORTOptimizer.from_pretrained(model).optimize(AutoOptimizationConfig.with_optimization_level(level), target)
    return target / "model_optimized.onnx"


def _ort_quantize(source_dir: Path, target: Path) -> Path:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    quantizer = ORTQuantizer.from_pretrained(source_dir, file_name="model.onnx")
    quantizer.quantize(AutoQuantizationConfig.avx2(is_static=False, per_channel=False), target)
    return target / "model_quantized.onnx"


@pytest.fixture(scope="module")
def plain_optimized(plain3: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """The same optimizations of the plain export: what outputs must match."""
    out = tmp_path_factory.mktemp("plain_optimized")
    return {
        (name, level): _ort_optimize(plain3[name], name, level, out / f"{name}_{level}")
        for name in MODELS
        for level in LEVELS
    }


@pytest.fixture(scope="module")
def after_the_fact(exports3: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ORTOptimizer O4 and dynamic ORTQuantizer on annotated exports, then the one documented call."""
    out = tmp_path_factory.mktemp("after")
    files = {}
    for name in MODELS:
        files[f"{name}_O4"] = _ort_optimize(exports3[name], name, "O4", out / f"{name}_O4")
        files[f"{name}_quant"] = _ort_quantize(exports3[name], out / f"{name}_quant")
        for key in (f"{name}_O4", f"{name}_quant"):
            annotate_hierarchy(files[key].parent)
    return files


def _torch_parameter_owners(model_dir: Path, name: str) -> dict[str, str]:
    """Parameter name -> owning module path, from named_modules() of the PyTorch model."""
    import transformers

    from optimum_hierarchy.demo import TINY_MODELS

    model = getattr(transformers, TINY_MODELS[name][1]).from_pretrained(model_dir)
    owners = {}
    for path, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            owners[f"{path}.{pname}" if path else pname] = path
    return owners


def _all_optimized(optimized: dict[tuple[str, str], Path], after_the_fact: dict[str, Path]) -> list[tuple[str, Path]]:
    cases = [(f"{name}_{level}", path) for (name, level), path in sorted(optimized.items())]
    return cases + sorted(after_the_fact.items())


# --- tests ------------------------------------------------------------------------------------------


def test_every_node_of_every_optimized_or_quantized_model_is_attributed(
    optimized: dict[tuple[str, str], Path], after_the_fact: dict[str, Path]
) -> None:
    for case, path in _all_optimized(optimized, after_the_fact):
        hierarchy = read_hierarchy(path)
        missing = [n.name for n in hierarchy.nodes if n.module is None]
        assert not missing, f"{case}: unattributed {missing[:5]}"
        summary = hierarchy.metadata.summary
        assert summary is not None and summary.coverage == 1.0, case
        assert all(n.module in hierarchy.tree for n in hierarchy.nodes), case


def test_fused_nodes_are_the_lca_of_what_they_replaced(
    exports3: dict[str, Path], optimized: dict[tuple[str, str], Path], after_the_fact: dict[str, Path]
) -> None:
    counted = collections.Counter()
    for case, path in _all_optimized(optimized, after_the_fact):
        g0 = graph_nodes(exports3[case.split("_")[0]] / "model.onnx")
        g1 = graph_nodes(path)
        expected = expected_fusions(g0, g1)
        for i, node in enumerate(g1):
            if node["source"] == "fusion":
                assert i in expected, f"{case}: {node['name']} claims a fusion the definition does not give"
                lca, modules = expected[i]
                assert node["module"] == lca, f"{case}: {node['name']} ({node['op']}) {node['module']!r} != {lca!r}"
                assert set(node["sources"] or [node["module"]]) == modules, f"{case}: {node['name']} sources"
                counted[case] += 1
            elif node["source"] in {"rule", "name"} and i in expected:
                # narrowed inside the definition's answer, never outside it
                assert within(node["module"], expected[i][0]), f"{case}: {node['name']} narrowed outside"
    # Fusions happen at O2 and above and in quantization, for every model.
    for name in MODELS:
        for level in ("O2", "O3", "O4", "quant"):
            assert counted[f"{name}_{level}"] > 0, f"{name}_{level}: no fused node checked"


def test_unfused_nodes_keep_their_attribution(
    exports3: dict[str, Path], optimized: dict[tuple[str, str], Path], after_the_fact: dict[str, Path]
) -> None:
    for case, path in _all_optimized(optimized, after_the_fact):
        before = {n["name"]: n for n in graph_nodes(exports3[case.split("_")[0]] / "model.onnx")}
        kept = 0
        for node in graph_nodes(path):
            old = before.get(node["name"])
            if old is not None and old["op"] == node["op"]:
                assert node["module"] == old["module"], f"{case}: {node['name']} moved"
                kept += 1
        assert kept > 0, case


def test_created_nodes_reading_a_parameter_stay_inside_its_module(
    models3: dict[str, Path], optimized: dict[tuple[str, str], Path], after_the_fact: dict[str, Path]
) -> None:
    """PyTorch semantics: a MatMul/Gemm reading nn.Linear/Conv1D weight W is in W's module; any node
    reading a parameter is in (an ancestor of) the parameter's module."""
    owners = {name: _torch_parameter_owners(models3[name], name) for name in MODELS}
    checked = 0
    for case, path in _all_optimized(optimized, after_the_fact):
        name = case.split("_")[0]
        for node in graph_nodes(path):
            params = [owners[name][t] for t in node["inputs"] if t in owners[name]]
            if not params:
                continue
            assert all(within(p, node["module"]) for p in params), f"{case}: {node['name']} outside {params}"
            if node["op"] in {"MatMul", "Gemm"} and node["inputs"][1] in owners[name]:
                assert node["module"] == owners[name][node["inputs"][1]], f"{case}: {node['name']}"
                checked += 1
    assert checked > 0


def test_quantized_matmuls_belong_to_their_linear(exports3: dict[str, Path], after_the_fact: dict[str, Path]) -> None:
    """One MatMulInteger per quantized MatMul, in the module of the MatMul it replaced."""
    for name in MODELS:
        before = {n["name"]: n for n in graph_nodes(exports3[name] / "model.onnx")}
        quantized = [n for n in graph_nodes(after_the_fact[f"{name}_quant"]) if n["op"] == "MatMulInteger"]
        assert quantized, name
        for node in quantized:
            # ORT's quantizer names it after the node it replaced (a Gemm first becomes "<Gemm>_MatMul")
            stem = node["name"].removesuffix("_quant")
            original = before.get(stem) or before[stem.removesuffix("_MatMul")]
            assert original["op"] in {"MatMul", "Gemm"}
            assert node["module"] == original["module"], node["name"]


def _block_key(path: str, pattern: str) -> tuple[str, str] | None:
    prefix = pattern.split("*", maxsplit=1)[0]
    if not path.startswith(prefix):
        return None
    index, _, rest = path[len(prefix) :].partition(".")
    return (index, rest) if index.isdigit() else None


BLOCKS = {"vit": "vit.encoder.layer.*", "bert": "encoder.layer.*", "gpt2": "transformer.h.*"}


def test_repeated_blocks_treated_alike_stay_alike(
    exports3: dict[str, Path], optimized: dict[tuple[str, str], Path]
) -> None:
    compared = 0
    for (name, level), path in sorted(optimized.items()):
        g0 = graph_nodes(exports3[name] / "model.onnx")
        g1 = graph_nodes(path)
        kept_names = {n["name"] for n in g1}
        removed = collections.defaultdict(collections.Counter)  # what the optimizer did to each block
        for n in g0:
            key = _block_key(n["module"], BLOCKS[name])
            if key is not None and n["name"] not in kept_names:
                removed[key[0]][(key[1], n["op"])] += 1
        after = collections.defaultdict(collections.Counter)
        for n in g1:
            key = _block_key(n["module"], BLOCKS[name])
            if key is not None:
                after[key[0]][(key[1], n["op"])] += 1
        blocks = sorted(after, key=int)
        for a in blocks:
            for b in blocks:
                if a < b and removed[a] == removed[b]:
                    assert after[a] == after[b], f"{name} {level}: blocks {a} and {b}"
                    compared += 1
    assert compared >= len(MODELS)  # at least one pair per model (layers 1 and 2 at least)


def test_optimized_models_are_valid_and_match_the_plain_optimization(
    optimized: dict[tuple[str, str], Path], plain_optimized: dict[tuple[str, str], Path]
) -> None:
    for key, path in sorted(optimized.items()):
        onnx.checker.check_model(str(path), full_check=False)
        annotated = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        plain = ort.InferenceSession(str(plain_optimized[key]), providers=["CPUExecutionProvider"])
        feeds = make_feeds(plain)
        for a, b in zip(annotated.run(None, feeds), plain.run(None, feeds), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=str(key))


def test_o4_and_quantized_models_load_and_run(after_the_fact: dict[str, Path], exports3: dict[str, Path]) -> None:
    for key, path in sorted(after_the_fact.items()):
        onnx.checker.check_model(str(path), full_check=False)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs = session.run(None, make_feeds(session))
        assert all(np.isfinite(o).all() for o in outputs if o.dtype.kind == "f"), key


def test_quantization_gives_the_same_outputs_as_quantizing_the_plain_export(
    exports3: dict[str, Path], plain3: dict[str, Path], after_the_fact: dict[str, Path], tmp_path: Path
) -> None:
    for name in MODELS:
        plain_quantized = _ort_quantize(plain3[name], tmp_path / name)
        a = ort.InferenceSession(str(after_the_fact[f"{name}_quant"]), providers=["CPUExecutionProvider"])
        b = ort.InferenceSession(str(plain_quantized), providers=["CPUExecutionProvider"])
        feeds = make_feeds(b)
        for x, y in zip(a.run(None, feeds), b.run(None, feeds), strict=True):
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_spanning_nodes_can_be_included_or_excluded(optimized: dict[tuple[str, str], Path]) -> None:
    """GPT-2 at O2: the residual Add of block 0 and ln_1 of block 1 fuse into one SkipLayerNormalization."""
    hierarchy = HierarchyRetriever(optimized[("gpt2", "O2")])
    spanning = [n for n in hierarchy.nodes if n.spanning and n.op_type == "SkipLayerNormalization"]
    assert spanning
    node = next(n for n in spanning if n.module == "transformer.h")
    assert any(s.startswith("transformer.h.0") for s in node.sources)
    assert any(s.startswith("transformer.h.1") for s in node.sources)
    assert node not in hierarchy.get_nodes_by_module("transformer.h.1", subtree=True)
    assert node in hierarchy.get_nodes_by_module("transformer.h.1", subtree=True, spanning=True)
    assert node in hierarchy.get_nodes_by_module("transformer.h.0", subtree=True, spanning=True)
    # without spanning, each node is counted once: blocks partition what is attributed inside them
    blocks = ("0", "1", "2")
    inside = [n.name for b in blocks for n in hierarchy.get_nodes_by_module(f"transformer.h.{b}", subtree=True)]
    assert len(inside) == len(set(inside))


def test_cli_prints_the_reattribution(optimized: dict[tuple[str, str], Path]) -> None:
    stdout = (optimized[("bert", "O2")].parent.parent / "bert_O2.stdout").read_text()
    assert "fusion" in stdout and "100.0%" in stdout


def test_onnxruntime_cli_commands_keep_the_hierarchy(exports3: dict[str, Path], tmp_path: Path) -> None:
    run_cli("onnxruntime", "optimize", "--onnx_model", str(exports3["bert"]), "-o", str(tmp_path / "o"), "-O2")
    run_cli("onnxruntime", "quantize", "--onnx_model", str(exports3["gpt2"]), "-o", str(tmp_path / "q"), "--avx2")
    for path in (tmp_path / "o" / "model_optimized.onnx", tmp_path / "q" / "model_quantized.onnx"):
        hierarchy = read_hierarchy(path)
        assert all(n.module is not None for n in hierarchy.nodes), path
        assert any(n.source == "fusion" for n in hierarchy.nodes), path


def test_o4_export_on_cpu_is_refused_by_optimum(models3: dict[str, Path], tmp_path: Path) -> None:
    """Documented: --optimize O4 (fp16) needs --device cuda in Optimum; ORTOptimizer O4 is covered above."""
    completed = run_cli(
        "export", "onnx", "--model", str(models3["bert"]), "--task", "feature-extraction", "--hierarchy",
        "--optimize", "O4", str(tmp_path / "o4"), check=False,
    )  # fmt: skip
    assert completed.returncode != 0
    assert "GPU" in completed.stdout + completed.stderr
    assert not list((tmp_path / "o4").glob("*.onnx"))


# --- files nobody annotated ------------------------------------------------------------------------


def test_unannotated_optimized_export_is_annotated_from_names(
    models3: dict[str, Path],
    optimized: dict[tuple[str, str], Path],
    plain_optimized: dict[tuple[str, str], Path],
    tmp_path: Path,
) -> None:
    for name in MODELS:
        exact = {n["name"]: n["module"] for n in graph_nodes(optimized[(name, "O2")])}
        for with_config in (False, True):
            target = tmp_path / f"{name}_{with_config}"
            target.mkdir()
            shutil.copy(plain_optimized[(name, "O2")], target / "model.onnx")
            if with_config:
                run_cli("hierarchy", "annotate", str(target), "--config", str(models3[name]))
            else:
                annotate_hierarchy(target)
            nodes = graph_nodes(target / "model.onnx")
            # Left unattributed only where nothing but the root, spread from neighbours, was around: nodes
            # the provenance itself puts at the root (BERT's attention-mask ReduceSum after O2).
            unplaced = [n for n in nodes if n["module"] is None]
            assert all(n["source"] == "unattributed" and exact[n["name"]] == "" for n in unplaced), (name, unplaced)
            assert len(unplaced) <= 0.05 * len(nodes), (name, with_config, len(unplaced))
            assert {n["source"] for n in nodes} <= {"name", "rule", "context", "parameter", "unattributed"}
            agree = sum(exact[n["name"]] == n["module"] for n in nodes)
            if with_config:
                # with the model's config the tree is the real one: same answer as the provenance
                wrong = [
                    (n["name"], n["module"], exact[n["name"]])
                    for n in nodes
                    if n["module"] is not None and exact[n["name"]] != n["module"]
                ]
                assert not wrong, (name, wrong[:5])
            else:
                assert agree >= 0.9 * len(nodes), (name, agree, len(nodes))


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_static_quantization_qdq_and_qlinear(
    fmt: str, exports3: dict[str, Path], plain3: dict[str, Path], tmp_path: Path
) -> None:
    """QuantizeLinear/DequantizeLinear pairs (QDQ) and QLinear* operators (QOperator), then the one call."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self, model: Path) -> None:
            session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
            self.items = iter([make_feeds(session, seed) for seed in range(3)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    outputs = []
    for label, source in (("annotated", exports3["bert"]), ("plain", plain3["bert"])):
        target = tmp_path / label / "model.onnx"
        target.parent.mkdir()
        quantize_static(
            str(source / "model.onnx"), str(target), Reader(source / "model.onnx"),
            quant_format=getattr(QuantFormat, fmt), activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
        session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, make_feeds(session)))
    for a, b in zip(*outputs, strict=True):
        np.testing.assert_array_equal(a, b)

    annotate_hierarchy(tmp_path / "annotated")
    before = {n["name"]: n for n in graph_nodes(exports3["bert"] / "model.onnx")}
    nodes = graph_nodes(tmp_path / "annotated" / "model.onnx")
    assert all(n["module"] is not None for n in nodes)
    quant_ops = [n for n in nodes if n["op"] in {"QuantizeLinear", "DequantizeLinear"} or n["op"].startswith("QLinear")]
    assert quant_ops
    for node in nodes:
        if node["op"] == "QLinearMatMul":  # named after the MatMul it replaced
            assert node["module"] == before[node["name"].removesuffix("_quant")]["module"], node["name"]
