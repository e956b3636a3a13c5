"""Time by module, checked against ONNX Runtime's raw profile read here, and each node's module read with plain onnx.

The raw events of each profiled session are captured as they leave ONNX Runtime; the expected numbers
are computed from them and from the ``pkg.optimum_hierarchy.module`` key of the file's nodes, without
the package. With ``optimization_level="disable"`` the nodes ONNX Runtime runs are the file's own
(``Constant`` nodes aside), so event names are file node names and the expectation is exact.
"""

from __future__ import annotations

import collections
import copy
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx
import pytest
from explorer_support import check_with_model_explorer, load_node_data, node_names
from onnx import TensorProto, helper
from support import run_cli

from optimum_hierarchy import annotate_hierarchy
from optimum_hierarchy.annotation.file import annotate_proto
from optimum_hierarchy.errors import InvalidModelFileError, MissingHierarchyError
from optimum_hierarchy.schema import ModuleInfo, ModuleTree
from optimum_hierarchy.tools import profile as profile_module
from optimum_hierarchy.tools.explorer import profile_node_data
from optimum_hierarchy.tools.profile import ModuleProfile, aggregate_to_depth, profile_model

MODULE_KEY = "pkg.optimum_hierarchy.module"
SUFFIX = "_kernel_time"


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_variants(cli_exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The annotated tiny BERT: as exported, O2-optimized and dynamically quantized (then re-attributed)."""
    from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTOptimizer, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

    out = tmp_path_factory.mktemp("profile_bert")
    model = ORTModelForFeatureExtraction.from_pretrained(cli_exports["bert"])
    ORTOptimizer.from_pretrained(model).optimize(AutoOptimizationConfig.O2(), out / "o2")
    quantizer = ORTQuantizer.from_pretrained(cli_exports["bert"], file_name="model.onnx")
    quantizer.quantize(AutoQuantizationConfig.avx2(is_static=False, per_channel=False), out / "quant")
    annotate_hierarchy(out / "o2")
    annotate_hierarchy(out / "quant")
    return {
        "plain": cli_exports["bert"] / "model.onnx",
        "o2": out / "o2" / "model_optimized.onnx",
        "quant": out / "quant" / "model_quantized.onnx",
    }


@pytest.fixture
def raw_events(monkeypatch: pytest.MonkeyPatch) -> list[list[dict[str, Any]]]:
    """Each profiled session's raw ONNX Runtime events, copied before the package reads them."""
    captured: list[list[dict[str, Any]]] = []
    original = profile_module._run_profiled

    def spy(*args: Any, **kwargs: Any) -> Any:
        events, saved = original(*args, **kwargs)
        captured.append(copy.deepcopy(events))
        return events, saved

    monkeypatch.setattr(profile_module, "_run_profiled", spy)
    return captured


# --- the independent reading of the raw profile ----------------------------------------------------


def measured_kernel_events(events: list[dict[str, Any]], runs: int) -> list[dict[str, Any]]:
    """Kernel events of the last ``runs`` model runs (the earlier ones are warm-up)."""
    windows = sorted(
        (e["ts"], e["ts"] + e["dur"]) for e in events if e["cat"] == "Session" and e["name"] == "model_run"
    )
    kept = windows[-runs:]
    kernels = [e for e in events if e["cat"] == "Node" and e["name"].endswith(SUFFIX)]
    return [e for e in kernels if any(start <= e["ts"] <= end for start, end in kept)]


def file_modules(path: Path) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Node name -> module, and op type -> modules of the unnamed nodes, read with plain onnx."""
    named: dict[str, str] = {}
    unnamed: dict[str, set[str]] = collections.defaultdict(set)
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        module = {p.key: p.value for p in node.metadata_props}[MODULE_KEY]
        if node.name:
            named[node.name] = module
        else:
            unnamed[node.op_type].add(module)
    return named, unnamed


def expected_own_times(path: Path, kernels: list[dict[str, Any]]) -> dict[str, int]:
    """Module -> summed durations of the events of its nodes, found by name in the file itself."""
    named, unnamed = file_modules(path)
    own: dict[str, int] = collections.Counter()
    for e in kernels:
        name = e["name"][: -len(SUFFIX)]
        if name in named:
            module = named[name]
        else:  # ONNX Runtime calls an unnamed node OpType_<index>
            (module,) = unnamed[e["args"]["op_name"]]
        own[module] += e["dur"]
    return {m: us for m, us in own.items() if us}


def check_consistent(profile: ModuleProfile) -> None:
    """Own times add up to the total; a module's subtree is its own time plus its children's subtrees."""
    assert profile.modules, "the profile lists no module"
    assert sum(m.own_us for m in profile.modules) + profile.unattributed_us == profile.total_us
    by_path = {m.path: m for m in profile.modules}
    for m in profile.modules:
        children = [
            c for c in profile.modules if c.path and c.path.rpartition(".")[0] == m.path and c.depth == m.depth + 1
        ]
        assert m.subtree_us == m.own_us + sum(c.subtree_us for c in children), m.path
        assert m.subtree_calls == m.own_calls + sum(c.subtree_calls for c in children), m.path
    assert by_path[""].subtree_us == profile.attributed_us


# --- tests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "o2", "quant"])
def test_without_ort_optimizations_times_match_the_files_modules(
    variant: str, bert_variants: dict[str, Path], raw_events: list[list[dict[str, Any]]]
) -> None:
    path = bert_variants[variant]
    profile = profile_model(path, runs=3, warmup=2, optimization_level="disable")
    (events,) = raw_events
    kernels = measured_kernel_events(events, runs=3)
    assert kernels
    expected = expected_own_times(path, kernels)
    assert {m.path: m.own_us for m in profile.modules if m.own_us} == expected
    assert profile.total_us == sum(e["dur"] for e in kernels)
    assert profile.node_events == len(kernels)
    assert profile.unattributed == ()
    all_kernels = [e for e in events if e["cat"] == "Node" and e["name"].endswith(SUFFIX)]
    assert profile.warmup_events == len(all_kernels) - len(kernels) > 0
    check_consistent(profile)
    # Model Explorer's node data: the file's nodes are the ones that ran, each with its own kernel time.
    expected_ms: dict[str, float] = collections.Counter()
    for e in kernels:
        expected_ms[e["name"][: -len(SUFFIX)]] += e["dur"] / 3 / 1000
    data = profile_node_data(profile)
    graph_name = onnx.load(str(path), load_external_data=False).graph.name
    assert data.unplaced == 0 and set(data.values) == {graph_name}
    values, names = data.values[graph_name], node_names(path)
    assert {k: v for k, v in values.items() if k in names} == pytest.approx(
        {k: v for k, v in expected_ms.items() if k in names}
    )
    # An unnamed node (the O2 file's Cast) is shown under the name the adapter gives it.
    assert sum(v for k, v in values.items() if k not in names) == pytest.approx(
        sum(v for k, v in expected_ms.items() if k not in names)
    )
    if variant != "plain":  # the fused / quantized nodes ran and were counted for their modules
        fused = {"o2": "Attention", "quant": "MatMulInteger"}[variant]
        assert any(e["args"]["op_name"] == fused for e in kernels)


@pytest.mark.parametrize("variant", ["plain", "o2", "quant"])
def test_at_full_optimization_every_event_is_attributed(
    variant: str, bert_variants: dict[str, Path], raw_events: list[list[dict[str, Any]]]
) -> None:
    path = bert_variants[variant]
    profile = profile_model(path, runs=5)
    (events,) = raw_events
    kernels = measured_kernel_events(events, runs=5)
    assert profile.total_us == sum(e["dur"] for e in kernels) > 0
    assert profile.node_events == len(kernels)
    assert profile.unattributed == (), profile.unattributed
    assert profile.attributed_us == profile.total_us
    check_consistent(profile)
    # Model Explorer's node data: keyed by the file's nodes only (its unnamed Cast by the name the adapter
    # gives it); nodes ONNX Runtime created are placed on the file's node that produced their output, so the
    # values add up to the node time (nothing unplaced on CPU for BERT: ORT adds no layout or copy node).
    data = profile_node_data(profile)
    (values,) = data.values.values()
    names = node_names(path)
    assert len(set(values) - names) <= ("" in names)
    assert data.unplaced == 0
    assert sum(values.values()) == pytest.approx(profile.total_us / 5 / 1000)
    if variant == "plain":
        # ONNX Runtime fused nodes the file does not have: the mapping went through the graph it ran.
        named, _ = file_modules(path)
        assert any(e["name"][: -len(SUFFIX)] not in named for e in kernels)
    # Plausibility without timing (times belong to benchmarks: a loaded machine made the embeddings' time
    # exceed the encoder's once): the encoder's two layers run more kernels than the embeddings.
    assert profile.module("encoder").subtree_calls > profile.module("embeddings").subtree_calls


def test_aggregated_to_a_depth(bert_variants: dict[str, Path]) -> None:
    profile = profile_model(bert_variants["plain"], runs=2)
    shallow = aggregate_to_depth(profile, 1)
    assert {m.path for m in shallow.modules} == {"", "embeddings", "encoder"}
    assert shallow.module("encoder").own_us == profile.module("encoder").subtree_us
    assert shallow.module("").own_us == profile.module("").own_us
    assert sum(m.own_us for m in shallow.modules) == profile.total_us
    check_consistent(shallow)
    data = json.loads(json.dumps(shallow.to_dict()))
    assert data["depth"] == 1
    assert data["total_us"] == sum(m["own_us"] for m in data["modules"]) + data["unattributed_us"]


def _if_model(path: Path) -> None:
    """``If`` (module cond) with a then-branch in module ``a``, an else-branch in ``b``, then ``head``."""
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])]
    then = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["/a/Relu_output_0"], name="/a/Relu"),
            helper.make_node("Neg", ["/a/Relu_output_0"], ["y"], name="/a/Neg"),
        ],
        "then",
        [],
        out,
    )
    other = helper.make_graph([helper.make_node("Abs", ["x"], ["y"], name="/b/Abs")], "else", [], out)
    graph = helper.make_graph(
        [
            helper.make_node("If", ["c"], ["/cond/If_output_0"], name="/cond/If", then_branch=then, else_branch=other),
            helper.make_node("Sigmoid", ["/cond/If_output_0"], ["z"], name="/head/Sigmoid"),
        ],
        "main",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [64]),
        ],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [64])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    tree = ModuleTree([ModuleInfo("", "Root"), *(ModuleInfo(m, m.upper()) for m in ("cond", "a", "b", "head"))])
    annotate_proto(model, tree)
    onnx.save(model, str(path))


def test_control_flow_body_time_is_counted_once(tmp_path: Path, raw_events: list[list[dict[str, Any]]]) -> None:
    _if_model(tmp_path / "if.onnx")
    profile = profile_model(tmp_path / "if.onnx", runs=4)
    kernels = measured_kernel_events(raw_events[0], runs=4)
    durations: dict[str, int] = collections.Counter()
    for e in kernels:
        durations[e["name"][: -len(SUFFIX)]] += e["dur"]
    assert set(durations) == {"/cond/If", "/a/Relu", "/a/Neg", "/head/Sigmoid"}  # c is True: the then-branch
    # The If's event spans its body's: the model's node time is the top-level events' time.
    assert profile.total_us == durations["/cond/If"] + durations["/head/Sigmoid"]
    assert profile.module("a").own_us == durations["/a/Relu"] + durations["/a/Neg"]
    assert profile.module("cond").own_us == durations["/cond/If"] - profile.module("a").own_us
    assert profile.module("a").own_calls == 8
    assert profile.unattributed == ()
    # Model Explorer's adapter embeds the branches in the main graph, as "<If>/then_branch/<node>".
    data = profile_node_data(profile)
    assert set(data.values) == {"main"}
    assert set(data.values["main"]) == {
        "/cond/If",
        "/head/Sigmoid",
        "/cond/If/then_branch//a/Relu",
        "/cond/If/then_branch//a/Neg",
    }
    assert data.values["main"]["/head/Sigmoid"] == pytest.approx(durations["/head/Sigmoid"] / 4 / 1000)
    check_with_model_explorer(tmp_path / "if.onnx", data.to_json())
    check_consistent(profile)


def test_temporary_files_are_removed(
    bert_variants: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    profile_model(bert_variants["o2"], runs=1)
    assert list(tmp_path.iterdir()) == []


def test_paths_and_files_without_hierarchy(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    shutil.copy(cli_exports["bert"] / "model.onnx", tmp_path / "a.onnx")
    shutil.copy(cli_exports["bert"] / "model.onnx", tmp_path / "b.onnx")
    with pytest.raises(InvalidModelFileError, match=r"several \.onnx files \(a\.onnx, b\.onnx\); pass the one"):
        profile_model(tmp_path)
    proto = onnx.load(str(tmp_path / "a.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "a.onnx"))
    with pytest.raises(MissingHierarchyError, match="optimum-cli hierarchy annotate"):
        profile_model(tmp_path / "a.onnx")
    assert profile_model(cli_exports["bert"], runs=1).model == cli_exports["bert"] / "model.onnx"


@pytest.mark.cli
def test_cli_json_and_a_bad_input(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    explorer = tmp_path / "times.json"
    completed = run_cli(
        "hierarchy", "profile", str(cli_exports["bert"]), "--runs", "2", "--depth", "1",
        "--shape", "sequence_length=8", "--json", "--model-explorer", str(explorer),
    )  # fmt: skip
    node_data = load_node_data(explorer)
    model = cli_exports["bert"] / "model.onnx"
    assert f"written to {explorer}" in " ".join(completed.stderr.split())
    (entry,) = node_data.values()
    assert set(entry["results"]) <= node_names(model)
    check_with_model_explorer(model, node_data)
    data = json.loads(completed.stdout)
    assert data["runs"] == 2
    assert data["inputs"]["input_ids"] == [2, 8]
    assert [m["path"] for m in data["modules"]] == ["", "embeddings", "encoder"]
    assert data["unattributed"] == []
    assert sum(m["own_us"] for m in data["modules"]) == data["total_us"] > 0
    assert data["node_events"] % 2 == 0

    proto = onnx.load(str(cli_exports["bert"] / "model.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "plain.onnx"))
    bad = run_cli("hierarchy", "profile", str(tmp_path / "plain.onnx"), check=False)
    assert bad.returncode == 1
    assert "error:" in bad.stderr
    assert f"optimum-cli hierarchy annotate {tmp_path / 'plain.onnx'}" in " ".join(bad.stderr.split())
    assert bad.stdout == ""
    # --model-explorer into a directory that does not exist: refused before profiling, nothing written.
    nowhere = run_cli(
        "hierarchy", "profile", str(model), "--model-explorer", str(tmp_path / "no" / "t.json"), check=False
    )  # fmt: skip
    assert nowhere.returncode == 1 and "--model-explorer" in nowhere.stderr and not (tmp_path / "no").exists()
