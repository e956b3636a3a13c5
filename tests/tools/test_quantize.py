"""Quantize by module, checked by an op-type census per module computed here without the package.

The census reads each node's module (``pkg.optimum_hierarchy.module``) and the modules it replaced
(``pkg.optimum_hierarchy.sources``) with plain ``onnx``, and takes the Linear modules (``nn.Linear``,
GPT-2's ``Conv1D``) from the PyTorch model's ``named_modules()``. A Linear's ops are the nodes
attributed to it or that replaced part of it. The documented rule, restated here: a Linear stays
float when one of its float ops touches an excluded subtree (as its module or one of its sources),
or, with include globs, when one of them is attributed outside the included subtrees.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper
from onnx import helper as oh
from reliability.faults import RESTRICTED, run_restricted_cli
from support import load_torch_model, make_feeds, run_cli, task_of
from transformers.pytorch_utils import Conv1D

from optimum_hierarchy import annotate_hierarchy, export_with_hierarchy
from optimum_hierarchy.errors import HierarchyError, MissingHierarchyError

pytestmark = pytest.mark.optimum_onnx  # Optimum's ONNX export and ORT integration

MODULE_KEY = "pkg.optimum_hierarchy.module"
SOURCES_KEY = "pkg.optimum_hierarchy.sources"
FLOAT_OPS = {"MatMul", "Gemm", "Attention"}
QUANT_OPS = {"MatMulInteger", "QAttention", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "ConvInteger", "QGemm"}


def _quantized_op(op_type: str) -> bool:
    return op_type in QUANT_OPS or op_type.startswith("QLinear")


# --- the census, independent of the package -----------------------------------------------------------


def _walk(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                yield from _walk(sub)


Record = tuple[str, str, str | None, tuple[str, ...]]  # name, op type, module, sources


def records(path: Path) -> list[Record]:
    out = []
    for node in _walk(onnx.load(str(path), load_external_data=False).graph):
        props = {p.key: p.value for p in node.metadata_props}
        sources = tuple(json.loads(props[SOURCES_KEY])) if SOURCES_KEY in props else ()
        out.append((node.name, node.op_type, props.get(MODULE_KEY), sources))
    return out


def linear_modules(name: str, model_dir: Path) -> set[str]:
    model = load_torch_model(name, model_dir)
    return {path for path, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}


def ops_of(recs: list[Record], module: str) -> list[Record]:
    """The nodes standing for ``module``: attributed to it, or replaced some of it."""
    return [r for r in recs if r[2] == module or module in r[3]]


def inside(path: str | None, roots: tuple[str, ...]) -> bool:
    return path is not None and any(root in ("", path) or path.startswith(root + ".") for root in roots)


def expected_float(before: list[Record], linear: str, excluded: tuple[str, ...], included: tuple[str, ...]) -> bool:
    for _, op, module, sources in ops_of(before, linear):
        if op not in FLOAT_OPS:
            continue
        if inside(module, excluded) or any(inside(s, excluded) for s in sources):
            return True
        if included and not inside(module, included):
            return True
    return False


def census(
    before_path: Path, after_path: Path, linears: set[str], excluded: tuple[str, ...], included: tuple[str, ...] = ()
) -> tuple[set[str], set[str]]:
    """Check every Linear present in the float file; returns (kept float, quantized)."""
    before, after = records(before_path), records(after_path)
    present = {m for m in linears if any(op in FLOAT_OPS for _, op, _, _ in ops_of(before, m))}
    assert present, "no Linear module has a MatMul/Gemm/Attention in the float file"
    kept, quantized = set(), set()
    for linear in sorted(present):
        ops_after = collections.Counter(op for _, op, _, _ in ops_of(after, linear))
        float_ops = sum(n for op, n in ops_after.items() if op in FLOAT_OPS)
        quant_ops = sum(n for op, n in ops_after.items() if _quantized_op(op))
        if expected_float(before, linear, excluded, included):
            assert float_ops and not quant_ops, f"{linear} should stay float: {dict(ops_after)}"
            kept.add(linear)
        else:
            assert quant_ops and not float_ops, f"{linear} should be quantized: {dict(ops_after)}"
            assert ops_after["MatMulInteger"] + ops_after["QAttention"], linear
            quantized.add(linear)
    for name, op, module, sources in after:
        if _quantized_op(op) and excluded:
            assert not inside(module, excluded), f"{name} ({op}) quantized inside an excluded module: {module}"
            assert not any(inside(s, excluded) for s in sources), f"{name} ({op}) replaced excluded {sources}"
        if _quantized_op(op) and included:
            assert inside(module, included), f"{name} ({op}) quantized outside the included modules: {module}"
    return kept, quantized


def run_model(path: Path) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, make_feeds(session))
    assert outputs and all(np.isfinite(o).all() for o in outputs if o.dtype.kind == "f")
    return outputs


def _config() -> Any:
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    return AutoQuantizationConfig.avx512(is_static=False, per_channel=False)


def _quantize(directory: Path, out: Path, **kwargs: object) -> Path:
    from optimum_hierarchy.tools.quantize import ModuleQuantizer

    ModuleQuantizer.from_pretrained(directory, file_name="model.onnx").quantize(_config(), out, **kwargs)
    return out / "model_quantized.onnx"


# --- Python API on the three tiny exports --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    model: str
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    """The subtree roots the exclude globs stand for, written out here."""
    included: tuple[str, ...] = ()
    counts: tuple[int, int] = (0, 0)
    """Linear modules (kept float, quantized)."""


CASES = [
    Case("bert", exclude=("encoder.layer.1.*", "encoder.layer.0.attention.self.query"),
         excluded=("encoder.layer.1.attention", "encoder.layer.1.intermediate", "encoder.layer.1.output",
                   "encoder.layer.0.attention.self.query"), counts=(7, 5)),
    Case("gpt2", exclude=("transformer.h.1.*", "lm_head"),
         excluded=("transformer.h.1.ln_1", "transformer.h.1.attn", "transformer.h.1.ln_2", "transformer.h.1.mlp",
                   "lm_head"), counts=(5, 4)),
    Case("vit", exclude=("vit.encoder.layer.0.**", "classifier"), excluded=("vit.encoder.layer.0", "classifier"),
         counts=(7, 6)),
    Case("bert", include=("encoder.layer.0.attention.*",),
         included=("encoder.layer.0.attention.self", "encoder.layer.0.attention.output"), counts=(8, 4)),
    Case("gpt2", include=("transformer.h.0.mlp.*", "lm_head"),
         included=("transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj", "transformer.h.0.mlp.act",
                   "transformer.h.0.mlp.dropout", "lm_head"), counts=(6, 3)),
    Case("vit", exclude=("vit.encoder.layer.1.intermediate",), include=("vit.encoder.**",),
         excluded=("vit.encoder.layer.1.intermediate",), included=("vit.encoder",), counts=(2, 11)),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.model}-{'+'.join(c.include) or '-'.join(c.exclude)}")
def test_census_per_module(
    case: Case, cli_exports: dict[str, Path], model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    before = cli_exports[case.model] / "model.onnx"
    after = _quantize(
        cli_exports[case.model], tmp_path / "q", exclude_modules=case.exclude, include_modules=case.include
    )
    linears = linear_modules(case.model, model_dirs[case.model])
    kept, quantized = census(before, after, linears, case.excluded, case.included)
    assert (len(kept), len(quantized)) == case.counts
    run_model(after)
    # The output keeps its hierarchy: every node attributed.
    assert all(module is not None for _, _, module, _ in records(after))


def test_without_globs_everything_is_quantized(
    cli_exports: dict[str, Path], model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """The census's other side: with no globs, every Linear of the float file is quantized."""
    after = _quantize(cli_exports["gpt2"], tmp_path / "q")
    kept, quantized = census(cli_exports["gpt2"] / "model.onnx", after, linear_modules("gpt2", model_dirs["gpt2"]), ())
    assert not kept and len(quantized) == 9


# --- after optimization: fused, renamed nodes ------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_o2(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bert_o2") / "bert"
    export_with_hierarchy(model_dirs["bert"], out, task=task_of("bert"), optimize="O2")
    return out


O2_ROOTS = {
    "encoder.layer.1.*": ("encoder.layer.1.attention", "encoder.layer.1.intermediate", "encoder.layer.1.output"),
    "encoder.layer.1.output.*": ("encoder.layer.1.output.dense", "encoder.layer.1.output.LayerNorm",
                                 "encoder.layer.1.output.dropout"),
}  # fmt: skip
O2_CASES = [
    # query is fused into Attention_0 with key and value: excluding it keeps the whole Attention float.
    Case("bert", exclude=("encoder.layer.1.*", "encoder.layer.0.attention.self.query"), counts=(9, 3)),
    Case("bert", include=("encoder.layer.1.*",), counts=(6, 6)),
    # Attention_1 stands for query but is attributed above it: including only query leaves it float.
    Case("bert", include=("encoder.layer.1.attention.self.query", "encoder.layer.1.output.*"), counts=(11, 1)),
]


@pytest.mark.parametrize("case", O2_CASES, ids=lambda c: "+".join(c.include) or "-".join(c.exclude))
def test_census_after_o2_optimization(case: Case, bert_o2: Path, model_dirs: dict[str, Path], tmp_path: Path) -> None:
    before = bert_o2 / "model.onnx"
    names = {r[0] for r in records(before)}
    assert {"Attention_0", "Attention_1"} <= names and "/encoder/layer.0/attention/self/query/MatMul" not in names
    excluded = tuple(p for g in case.exclude for p in O2_ROOTS.get(g, (g,)))
    included = tuple(p for g in case.include for p in O2_ROOTS.get(g, (g,)))
    after = _quantize(bert_o2, tmp_path / "q", exclude_modules=case.exclude, include_modules=case.include)
    kept, quantized = census(before, after, linear_modules("bert", model_dirs["bert"]), excluded, included)
    assert (len(kept), len(quantized)) == case.counts
    run_model(after)


def test_stale_node_metadata_is_reattributed_in_memory(bert_o2: Path, tmp_path: Path) -> None:
    """ORTOptimizer drops node metadata: the selection must still be the one of the attributed file."""
    from optimum_hierarchy.tools.quantize import nodes_for_modules

    proto = onnx.load(str(bert_o2 / "model.onnx"))
    for node in _walk(proto.graph):
        del node.metadata_props[:]
    stale = tmp_path / "model.onnx"
    onnx.save(proto, str(stale))
    globs = {"exclude_modules": ["encoder.layer.0.attention.self.query"]}
    fresh = nodes_for_modules(bert_o2 / "model.onnx", **globs)
    again = nodes_for_modules(stale, **globs)
    assert "Attention_0" in fresh.nodes_to_exclude
    assert again.nodes_to_exclude == fresh.nodes_to_exclude
    assert again.float_nodes == fresh.float_nodes


# --- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["exclude_modules", "include_modules"])
def test_unmatched_glob_is_a_clear_error(where: str, cli_exports: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(HierarchyError) as info:
        _quantize(cli_exports["bert"], tmp_path / "q", **{where: ["encoder.layer.0.*", "encoder.layers.1.*"]})
    message = str(info.value)
    assert "'encoder.layers.1.*'" in message and "matches no module" in message
    assert "optimum-cli hierarchy tree" in message
    assert not (tmp_path / "q").exists()


def test_file_without_hierarchy_says_how_to_annotate(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    from optimum_hierarchy.tools.quantize import nodes_for_modules

    proto = onnx.load(str(cli_exports["bert"] / "model.onnx"))
    keep = [p for p in proto.metadata_props if not p.key.startswith("pkg.optimum_hierarchy.")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    onnx.save(proto, str(tmp_path / "model.onnx"))
    with pytest.raises(MissingHierarchyError, match="optimum-cli hierarchy annotate"):
        nodes_for_modules(tmp_path / "model.onnx", exclude_modules=["encoder"])


def test_selection_is_for_one_file(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    from optimum_hierarchy.tools.quantize import ModuleQuantizer, nodes_for_modules, quantize_by_module

    selection = nodes_for_modules(cli_exports["vit"] / "model.onnx", exclude_modules=["classifier"])
    quantizer = ModuleQuantizer.from_pretrained(cli_exports["bert"], file_name="model.onnx")
    with pytest.raises(HierarchyError, match="node names belong to one file"):
        quantize_by_module(quantizer, _config(), tmp_path, selection=selection)


# --- the config ---------------------------------------------------------------------------------------------


def test_config_merge_keeps_what_the_user_set(cli_exports: dict[str, Path]) -> None:
    from optimum_hierarchy.tools.quantize import nodes_for_modules, with_module_selection

    path = cli_exports["bert"] / "model.onnx"
    config = _config()
    config.nodes_to_exclude = ["user_node"]
    config.nodes_to_quantize = [
        "/encoder/layer.0/attention/self/query/MatMul",
        "/encoder/layer.1/attention/self/query/MatMul",
    ]
    selection = nodes_for_modules(
        path, include_modules=["encoder.layer.0.*"], exclude_modules=["encoder.layer.0.output"]
    )
    merged = with_module_selection(config, selection)
    assert config.nodes_to_exclude == ["user_node"] and len(config.nodes_to_quantize) == 2  # not changed
    assert merged.nodes_to_quantize == ["/encoder/layer.0/attention/self/query/MatMul"]  # both restrict
    assert merged.nodes_to_exclude[0] == "user_node"
    assert "/encoder/layer.0/output/dense/MatMul" in merged.nodes_to_exclude
    # Selected by the globs but dropped by the user's list: excluded, since [] would mean "all".
    assert "/encoder/layer.0/attention/self/key/MatMul" in merged.nodes_to_exclude
    assert selection.matched["encoder.layer.0.*"] == (
        "encoder.layer.0.attention",
        "encoder.layer.0.intermediate",
        "encoder.layer.0.output",
    )


# --- subgraphs --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def if_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ``If`` whose then-branch holds module ``a.lin`` and else-branch ``b.lin``, annotated from its names."""
    from optimum_hierarchy.annotation.file import annotate_proto
    from optimum_hierarchy.schema import ExportInfo, ModuleInfo, ModuleTree

    rng = np.random.default_rng(0)

    def branch(module: str) -> onnx.GraphProto:
        out = f"/{module}/lin/MatMul_output_0"
        node = oh.make_node("MatMul", ["X", f"{module}.lin.weight"], [out], name=f"/{module}/lin/MatMul")
        return oh.make_graph([node], f"{module}_body", [], [oh.make_tensor_value_info(out, TensorProto.FLOAT, [2, 8])])

    weights = [numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), f"{m}.lin.weight") for m in "ab"]
    graph = oh.make_graph(
        [oh.make_node("If", ["cond"], ["Y"], name="/If", then_branch=branch("a"), else_branch=branch("b"))],
        "main",
        [
            oh.make_tensor_value_info("X", TensorProto.FLOAT, [2, 4]),
            oh.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [oh.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 8])],
        weights,
    )
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=9)
    linear = "torch.nn.modules.linear.Linear"
    tree = ModuleTree(
        [
            ModuleInfo("", "M"),
            ModuleInfo("a", "A"),
            ModuleInfo("a.lin", linear),
            ModuleInfo("b", "B"),
            ModuleInfo("b.lin", linear),
        ]
    )
    summary, _ = annotate_proto(proto, tree, ExportInfo())
    assert summary.attributed == 3
    directory = tmp_path_factory.mktemp("if_model")
    onnx.save(proto, str(directory / "model.onnx"))
    return directory


@pytest.mark.parametrize(
    ("kwargs", "float_module"), [({"exclude_modules": "b"}, "b.lin"), ({"include_modules": "b"}, "a.lin")]
)
def test_if_bodies_are_selected_by_the_same_names(
    kwargs: dict[str, str], float_module: str, if_model: Path, tmp_path: Path
) -> None:
    after = _quantize(if_model, tmp_path / "q", **kwargs)
    by_module: dict[str | None, set[str]] = collections.defaultdict(set)
    for _, op, module, _ in records(after):
        by_module[module].add(op)
    quantized_module = "a.lin" if float_module == "b.lin" else "b.lin"
    assert "MatMul" in by_module[float_module] and not any(map(_quantized_op, by_module[float_module]))
    assert "MatMulInteger" in by_module[quantized_module] and "MatMul" not in by_module[quantized_module]
    session = ort.InferenceSession(str(after), providers=["CPUExecutionProvider"])
    x = np.ones((2, 4), dtype=np.float32)
    weights = {w.name: numpy_helper.to_array(w) for w in onnx.load(str(if_model / "model.onnx")).graph.initializer}
    exact = session.run(None, {"X": x, "cond": np.array(float_module == "a.lin")})[0]
    np.testing.assert_array_equal(exact, x @ weights[f"{float_module[0]}.lin.weight"])


# --- a directory, as optimum-cli onnxruntime quantize quantizes it ------------------------------------------


def test_quantizing_a_directory_gives_each_file_its_selection(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    from optimum.onnxruntime import ORTQuantizer

    from optimum_hierarchy.tools.quantize import quantizing_by_module

    original = ORTQuantizer.__dict__["quantize"]
    source = cli_exports["gpt2"]
    with quantizing_by_module(source, exclude_modules="lm_head") as results:
        ORTQuantizer.from_pretrained(source, file_name="model.onnx").quantize(_config(), tmp_path / "q")
    assert ORTQuantizer.__dict__["quantize"] is original
    [result] = results
    assert result.model == tmp_path / "q" / "model_quantized.onnx"
    assert result.selection is not None and result.selection.matched == {"lm_head": ("lm_head",)}
    assert "/lm_head/MatMul" in result.selection.nodes_to_exclude
    assert result.annotated is not None  # restore=True by default
    ops = {name: op for name, op, _, _ in records(result.model)}
    assert ops["/lm_head/MatMul"] == "MatMul"


def test_quantizing_a_directory_checks_every_glob_first(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    from optimum.onnxruntime import ORTQuantizer

    from optimum_hierarchy.tools.quantize import directory_selections, quantizing_by_module

    original = ORTQuantizer.__dict__["quantize"]
    with (
        pytest.raises(HierarchyError, match=r"'vit\.encoder\.layer\.9' matches no module of model\.onnx in"),
        quantizing_by_module(cli_exports["vit"], include_modules=["vit.encoder.layer.9"]),
    ):
        pytest.fail("the block ran although a glob matches nothing")
    assert ORTQuantizer.__dict__["quantize"] is original
    assert directory_selections(tmp_path, exclude_modules=["anything"]) == {}  # no file: nothing to check


# --- optimum-cli onnxruntime quantize ---------------------------------------------------------------------


def test_cli_exclude_modules(cli_exports: dict[str, Path], model_dirs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "q"
    completed = run_cli(
        "onnxruntime", "quantize", "--avx512", "--onnx_model", str(cli_exports["gpt2"]), "-o", str(out),
        "--exclude-modules", "transformer.h.1.*", "lm_head",
    )  # fmt: skip
    assert "Quantized by module" in completed.stdout and "re-attributed" in completed.stdout
    excluded = (
        "transformer.h.1.ln_1",
        "transformer.h.1.attn",
        "transformer.h.1.ln_2",
        "transformer.h.1.mlp",
        "lm_head",
    )
    kept, quantized = census(
        cli_exports["gpt2"] / "model.onnx",
        out / "model_quantized.onnx",
        linear_modules("gpt2", model_dirs["gpt2"]),
        excluded,
    )
    assert (len(kept), len(quantized)) == (5, 4)
    saved = json.loads((out / "ort_config.json").read_text())["quantization"]
    assert "/lm_head/MatMul" in saved["nodes_to_exclude"]
    run_model(out / "model_quantized.onnx")


def test_cli_unmatched_glob_writes_nothing(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "q"
    completed = run_cli(
        "onnxruntime", "quantize", "--avx512", "--onnx_model", str(cli_exports["vit"]), "-o", str(out),
        "--include-modules", "vit.encoder.layer.9",
        check=False,
    )  # fmt: skip
    assert completed.returncode == 1
    assert "'vit.encoder.layer.9' matches no module" in completed.stderr
    closest = " ".join(completed.stderr.split()).partition("Closest module paths: ")[2].partition(". List")[0]
    assert {"vit.encoder.layer.0", "vit.encoder.layer.1"} <= set(closest.split(", ")), completed.stderr
    assert "optimum-cli hierarchy tree" in completed.stderr
    assert not out.exists()


@pytest.mark.skipif(RESTRICTED is None, reason="cannot drop the capabilities that bypass permissions")
@pytest.mark.parametrize("existing", [True, False], ids=["read-only", "under-read-only"])
def test_cli_unwritable_output_directory_is_a_clear_error(
    existing: bool, cli_exports: dict[str, Path], tmp_path: Path
) -> None:
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    out = read_only if existing else read_only / "q"
    read_only.chmod(0o555)
    try:
        completed = run_restricted_cli(
            "onnxruntime", "quantize", "--avx512", "--onnx_model", str(cli_exports["bert"]), "-o", str(out),
            "--exclude-modules", "encoder.layer.0.*",
        )  # fmt: skip
    finally:
        read_only.chmod(0o755)
    message = " ".join(completed.stderr.split())
    assert completed.returncode == 1 and "Traceback" not in completed.stderr, completed.stderr
    assert f"output directory {out}: cannot be written" in message, message
    assert not any(read_only.iterdir())


def test_cli_without_flags_is_unchanged(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    """Without the flags the command quantizes exactly as ORTQuantizer does (then re-attributes, as before)."""
    from optimum.onnxruntime import ORTQuantizer

    source = tmp_path / "in"
    shutil.copytree(cli_exports["bert"], source)
    completed = run_cli("onnxruntime", "quantize", "--avx512", "--onnx_model", str(source), "-o", str(tmp_path / "cli"))
    assert "Quantized by module" not in completed.stdout
    ORTQuantizer.from_pretrained(source, file_name="model.onnx").quantize(_config(), tmp_path / "api")
    annotate_hierarchy(tmp_path / "api")
    cli, api = (onnx.load(str(tmp_path / d / "model_quantized.onnx")) for d in ("cli", "api"))
    assert cli.graph == api.graph
    saved = json.loads((tmp_path / "cli" / "ort_config.json").read_text())["quantization"]
    assert saved["nodes_to_exclude"] == [] and saved["nodes_to_quantize"] == []
