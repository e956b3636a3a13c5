"""`optimum-cli hierarchy export`: torch's dynamo exporter and the hierarchy without optimum-onnx (both stacks).

Checked against definitions independent of the package: each node's own `pkg.torch.onnx.name_scopes`
(read here with ast), the PyTorch model's outputs and `named_modules()`, and the files read with plain
onnx. The exports are made once per session by the real CLI (fixture `task_exports` in conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from dynamo_support import module_of, name_scope_module, source_of, within
from support import run_cli
from task_cases import TASK_CASES, load_task_model

pytestmark = pytest.mark.cli

BATCH, SEQUENCE = 3, 11  # not the export's shapes (2, 16)


def _feeds(session: ort.InferenceSession, config: dict[str, object], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for value in session.get_inputs():
        if value.name == "pixel_values":
            size = int(config["image_size"])  # type: ignore[call-overload]
            feeds[value.name] = rng.standard_normal((BATCH, 3, size, size)).astype(np.float32)
        elif value.name == "input_ids":
            feeds[value.name] = rng.integers(0, int(config["vocab_size"]), (BATCH, SEQUENCE))  # type: ignore[call-overload]
        elif value.name == "attention_mask":
            mask = np.ones((BATCH, SEQUENCE), dtype=np.int64)
            mask[0, -3:] = 0  # one padded row
            feeds[value.name] = mask
        elif value.name == "token_type_ids":
            feeds[value.name] = rng.integers(0, 2, (BATCH, SEQUENCE))
        elif value.name == "position_ids":
            feeds[value.name] = np.tile(np.arange(SEQUENCE), (BATCH, 1))
        else:
            raise AssertionError(f"unexpected input {value.name}")
    return feeds


@pytest.mark.parametrize("case", sorted(TASK_CASES))
def test_layout_is_optimums(task_exports: dict[str, Path], case: str) -> None:
    """model.onnx and config.json; inputs with named dynamic batch and sequence axes; Optimum's output name."""
    out = task_exports[case]
    assert (out / "model.onnx").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == TASK_CASES[case].model_type
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    onnx.checker.check_model(model)
    axes = {v.name: [d.dim_param for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
    for name, dims in axes.items():
        assert dims[0] == "batch_size", (name, dims)
        if name != "pixel_values":
            assert dims[1] == "sequence_length", (name, dims)
    assert set(axes) == set(TASK_CASES[case].inputs)
    assert [o.name for o in model.graph.output] == [TASK_CASES[case].output]


@pytest.mark.parametrize("case", sorted(TASK_CASES))
def test_every_node_is_attributed_as_its_own_name_scopes_say(task_exports: dict[str, Path], case: str) -> None:
    """100% attributed. A node kept from the export is at the deepest module of its own name_scopes; a node
    onnxscript's optimizer fused carries the name_scopes of the first node it matched, whose module must
    then lie inside the fused node's (the common module of what it replaced)."""
    model = onnx.load(str(task_exports[case] / "model.onnx"), load_external_data=False)
    wrong = []
    for node in model.graph.node:
        module, scoped, source = module_of(node), name_scope_module(node), source_of(node)
        assert module is not None, f"{node.name} ({node.op_type}) is not attributed"
        if scoped is None:
            continue  # a node of the optimizer's own making, checked by the dynamo tests' region definition
        if source == "fusion":
            if not within(scoped, module):
                wrong.append((node.name, module, scoped))
        elif module != scoped:
            wrong.append((node.name, module, scoped))
    assert not wrong
    with_scopes = sum(name_scope_module(n) is not None for n in model.graph.node)
    assert with_scopes >= 0.9 * len(model.graph.node)


def test_unoptimized_export_is_exactly_the_name_scopes(task_exports: dict[str, Path]) -> None:
    """With --no-optimize every node has name_scopes, and every module is the deepest of them."""
    model = onnx.load(str(task_exports["bert-no-optimize"] / "model.onnx"), load_external_data=False)
    pairs = [(module_of(n), name_scope_module(n)) for n in model.graph.node]
    assert pairs and all(scoped is not None for _, scoped in pairs)
    assert all(module == scoped for module, scoped in pairs)


@pytest.mark.parametrize("case", sorted(TASK_CASES))
def test_runs_at_other_shapes_and_matches_pytorch(
    task_exports: dict[str, Path], task_model_dirs: dict[str, Path], case: str
) -> None:
    out = task_exports[case]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    config = json.loads((out / "config.json").read_text())
    feeds = _feeds(session, config)
    (got,) = session.run(None, feeds)
    model = load_task_model(case, task_model_dirs[case])
    kwargs = {k: torch.from_numpy(v) for k, v in feeds.items()}
    if "use_cache" in TASK_CASES[case].fixed:
        kwargs["use_cache"] = False  # type: ignore[assignment]
    with torch.no_grad():
        expected = getattr(model(**kwargs), TASK_CASES[case].output).numpy()
    assert got.shape == expected.shape
    assert got.shape[0] == BATCH
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", sorted(TASK_CASES))
def test_one_matmul_or_gemm_per_linear(
    task_exports: dict[str, Path], task_model_dirs: dict[str, Path], case: str
) -> None:
    """Each nn.Linear of named_modules() holds exactly one MatMul or Gemm (lm_head and classifier included),
    except those whose result no exported output uses (BertModel's pooler: feature-extraction exports
    last_hidden_state only), which hold none."""
    model = onnx.load(str(task_exports[case] / "model.onnx"), load_external_data=False)
    torch_model = load_task_model(case, task_model_dirs[case])
    linears = [p for p, m in torch_model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert linears
    counts = {p: 0 for p in linears}
    for node in model.graph.node:
        module = module_of(node)
        if node.op_type in {"MatMul", "Gemm"} and module in counts:
            counts[module] += 1
    unused = TASK_CASES[case].unused_linears
    assert counts == {p: 0 if p in unused else 1 for p in linears}


def test_tools_work_on_a_dynamo_file(task_exports: dict[str, Path], task_model_dirs: dict[str, Path]) -> None:
    """tree, nodes, stats, view, profile, extract and compare on a `hierarchy export` file, through the CLI."""
    path = task_exports["llama"] / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    torch_model = load_task_model("llama", task_model_dirs["llama"])

    tree = json.loads(run_cli("hierarchy", "tree", str(path), "--json").stdout)
    assert tree["class"].endswith("LlamaForCausalLM")
    assert tree["nodes"] == len(model.graph.node)

    module = "model.layers.1.self_attn"
    listed = json.loads(run_cli("hierarchy", "nodes", str(path), module, "--json").stdout)
    expected = {n.name for n in model.graph.node if within(module_of(n) or "-", module)}
    assert {n["name"] for n in listed["nodes"]} == expected and expected

    stats = json.loads(run_cli("hierarchy", "stats", str(path), "--by", "op", "--json").stdout)
    assert stats["total_nodes"] == len(model.graph.node)

    page = path.with_name("view.html")
    run_cli("hierarchy", "view", str(path), "-o", str(page))
    assert "LlamaForCausalLM" in page.read_text()

    profile = json.loads(run_cli("hierarchy", "profile", str(path), "--runs", "2", "--json").stdout)
    assert profile["unattributed_events"] == 0 and profile["total_us"] > 0

    layer = path.with_name("layer1.onnx")
    extract = run_cli("hierarchy", "extract", str(path), "model.layers.1", "-o", str(layer), "--json")
    extracted = json.loads(extract.stdout)
    part = onnx.load(str(layer))
    wanted = {n.name for n in model.graph.node if within(module_of(n) or "-", "model.layers.1")}
    assert {n.name for n in part.graph.node} == wanted and extracted["nodes"] == len(wanted)
    ort.InferenceSession(str(layer), providers=["CPUExecutionProvider"])

    compared = json.loads(
        run_cli("hierarchy", "compare", str(path), "--model", str(task_model_dirs["llama"]), "--json").stdout
    )
    assert compared["first_divergence"] is None
    names = {m["module"] for m in compared["modules"] if m["status"] == "compared"}
    linears = {p for p, m in torch_model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linears <= names


def test_annotate_a_plain_dynamo_export(task_model_dirs: dict[str, Path], tmp_path: Path) -> None:
    """A file exported elsewhere with torch.onnx.export(dynamo=True): annotate attributes every node from its
    own name_scopes (nodes the exporter's optimizer fused: inside the module of the node they start from)."""
    model = load_task_model("bert", task_model_dirs["bert"])
    ids = torch.randint(0, 100, (2, 7))
    path = tmp_path / "plain.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (ids, torch.ones_like(ids)), dynamo=True).save(path)
    run_cli("hierarchy", "annotate", str(path), "--config", str(task_model_dirs["bert"]))
    annotated = onnx.load(str(path))
    for node in annotated.graph.node:
        module, scoped = module_of(node), name_scope_module(node)
        assert module is not None, node.name
        if scoped is not None and source_of(node) == "metadata":
            assert module == scoped, node.name
        elif scoped is not None:
            assert within(scoped, module), node.name


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--task", "translation"], "supports feature-extraction"),
        # a generative task goes to transformers' exporter: BERT is no seq2seq model (on a stack without
        # transformers.exporters, the command says what to install instead)
        (["--task", "text2text-generation-with-past"], "cannot be loaded with AutoModelForSeq2SeqLM|pip install"),
        (["--task", "image-classification"], "cannot be loaded as AutoModelForImageClassification"),
    ],
)
def test_bad_task_is_a_clear_error(
    task_model_dirs: dict[str, Path], tmp_path: Path, args: list[str], words: str
) -> None:
    output = tmp_path / "out"
    completed = run_cli("hierarchy", "export", "--model", str(task_model_dirs["bert"]), *args, str(output), check=False)
    assert completed.returncode == 1
    assert any(w in completed.stderr.replace("\n", " ") for w in words.split("|")), completed.stderr
    assert not output.exists()


def test_bad_paths_are_clear_errors(task_model_dirs: dict[str, Path], tmp_path: Path) -> None:
    missing = run_cli("hierarchy", "export", "--model", str(tmp_path / "nope"), str(tmp_path / "o1"), check=False)
    assert missing.returncode == 1 and "no such directory" in missing.stderr
    a_file = tmp_path / "file"
    a_file.write_text("x")
    blocked = run_cli(
        "hierarchy",
        "export",
        "--model",
        str(task_model_dirs["bert"]),
        "--task",
        "feature-extraction",
        str(a_file),
        check=False,
    )
    assert blocked.returncode == 1 and "not a directory" in blocked.stderr
    assert not (tmp_path / "o1").exists()


def test_outputs_over_atol_exit_1_and_keep_the_files(task_model_dirs: dict[str, Path], tmp_path: Path) -> None:
    """--atol 0: the dynamo graph computes in another order than PyTorch (differences ~1e-8), so validation
    fails; the command says by how much, exits 1, and keeps the files for inspection, as Optimum does."""
    output = tmp_path / "out"
    completed = run_cli(
        "hierarchy", "export", "--model", str(task_model_dirs["bert"]), "--task", "feature-extraction",
        "--atol", "0", str(output), check=False,
    )  # fmt: skip
    assert completed.returncode == 1
    message = completed.stderr.replace("\n", " ")
    assert "max abs difference last_hidden_state" in message and "OVER atol 0" in message
    assert (output / "model.onnx").is_file() and (output / "config.json").is_file()


@pytest.mark.optimum_onnx
@pytest.mark.parametrize("case", sorted(TASK_CASES))
def test_ortmodel_loads_the_layout(task_exports: dict[str, Path], task_model_dirs: dict[str, Path], case: str) -> None:
    """Where optimum-onnx is installed, its ORTModel class for the task loads the directory as Optimum's own
    export, runs it like the PyTorch model, and the hierarchy reads back from it."""
    import optimum.onnxruntime as ort_models

    from optimum_hierarchy import read_hierarchy

    task = TASK_CASES[case].task
    cls_name = {
        "feature-extraction": "ORTModelForFeatureExtraction",
        "image-classification": "ORTModelForImageClassification",
        "text-generation": "ORTModelForCausalLM",
    }[task]
    extra = {"use_cache": False} if task == "text-generation" else {}
    ort_model = getattr(ort_models, cls_name).from_pretrained(task_exports[case], **extra)
    session = ort.InferenceSession(str(task_exports[case] / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {
        k: torch.from_numpy(v)
        for k, v in _feeds(session, json.loads((task_exports[case] / "config.json").read_text())).items()
    }
    if task == "text-generation":
        # ORTModelForCausalLM makes the positions from the mask, transformers 4.57's GPT-2 does not: no padding.
        feeds.pop("position_ids")
        feeds["attention_mask"] = torch.ones_like(feeds["attention_mask"])
    got = getattr(ort_model(**feeds), TASK_CASES[case].output)
    model = load_task_model(case, task_model_dirs[case])
    with torch.no_grad():
        expected = getattr(model(**feeds, **extra), TASK_CASES[case].output)
    np.testing.assert_allclose(np.asarray(got.detach()), expected.numpy(), atol=1e-4, rtol=0)
    hierarchy = read_hierarchy(ort_model)
    assert hierarchy.tree.root.class_name.endswith(TASK_CASES[case].model_class)
