"""Bad input at the edges, through the real CLI: each gets a clear message and exit status 1, no traceback, and
nothing is half-written (the inputs are unchanged, no model or temporary file is left).

Cases already covered elsewhere are not repeated here: a missing model directory, one without config.json,
an output that is a file or under a file (``tests/cli``); missing files, modules and nodes of the query
commands (``tests/cli/test_query_command.py``); garbage and empty files (``tests/annotation/test_file.py``); remote code
and malformed metadata (``test_untrusted_metadata.py``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from reliability.faults import RESTRICTED, run_restricted_cli, temporaries
from support import run_cli

from optimum_hierarchy import read_hierarchy


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _expect_clear_error(completed: object, *words: str) -> None:
    assert completed.returncode == 1, (completed.returncode, completed.stdout, completed.stderr)  # type: ignore[attr-defined]
    stderr: str = completed.stderr  # type: ignore[attr-defined]
    assert "error:" in stderr and "Traceback" not in stderr, stderr
    for word in words:
        assert word in stderr, (word, stderr)


# --- files that are protobuf but not a model, or not a graph onnx_ir can read --------------------------------


def _not_models(annotated: Path) -> dict[str, bytes]:
    model = onnx.load(str(annotated), load_external_data=False)
    no_opset = onnx.ModelProto()
    no_opset.CopyFrom(model)
    del no_opset.opset_import[:]
    twice = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"], name="/a/Relu"), helper.make_node("Relu", ["x"], ["y"], name="/b")],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        ),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    return {
        "tensor.onnx": helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0]).SerializeToString(),
        "graph.onnx": model.graph.SerializeToString(),
        "node.onnx": model.graph.node[3].SerializeToString(),
        "no_opset.onnx": no_opset.SerializeToString(),
        "produced_twice.onnx": twice.SerializeToString(),  # parses, but a tensor has two producers
    }


NOT_A_MODEL = {
    "tensor.onnx": "not an ONNX model",
    "graph.onnx": "not an ONNX model",
    "node.onnx": "not an ONNX model",
    "no_opset.onnx": "not an ONNX model",
    "produced_twice.onnx": "not a valid ONNX graph",
}


@pytest.mark.cli
@pytest.mark.parametrize("name", sorted(NOT_A_MODEL))
def test_protobuf_that_is_not_a_model(name: str, cli_exports: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(_not_models(cli_exports["bert"] / "model.onnx")[name])
    before = _snapshot(tmp_path)
    _expect_clear_error(run_cli("hierarchy", "annotate", str(path), check=False), name, NOT_A_MODEL[name])
    if name != "produced_twice.onnx":  # reading it without annotating is fine for onnx_ir's sake
        _expect_clear_error(run_cli("hierarchy", "tree", str(path), check=False), name, NOT_A_MODEL[name])
    assert _snapshot(tmp_path) == before


@pytest.mark.cli
def test_a_directory_with_one_bad_file(
    cli_exports: dict[str, Path], plain_exports: dict[str, Path], tmp_path: Path
) -> None:
    """The bad file is named; every file is left whole: unchanged, or annotated and valid."""
    shutil.copy(plain_exports["bert"] / "model.onnx", tmp_path / "a_model.onnx")
    (tmp_path / "b_broken.onnx").write_bytes(_not_models(cli_exports["bert"] / "model.onnx")["graph.onnx"])
    shutil.copy(plain_exports["vit"] / "model.onnx", tmp_path / "c_model.onnx")
    before = _snapshot(tmp_path)
    _expect_clear_error(run_cli("hierarchy", "annotate", str(tmp_path), check=False), "b_broken.onnx")
    after = _snapshot(tmp_path)
    assert sorted(after) == sorted(before)
    assert after["b_broken.onnx"] == before["b_broken.onnx"]
    for name in ("a_model.onnx", "c_model.onnx"):
        if after[name] != before[name]:
            onnx.checker.check_model(str(tmp_path / name), full_check=True)
            assert read_hierarchy(tmp_path / name).metadata.summary is not None


@pytest.mark.cli
def test_a_directory_is_not_a_model_file(cli_exports: dict[str, Path]) -> None:
    _expect_clear_error(run_cli("hierarchy", "tree", str(cli_exports["bert"]), check=False), "is a directory")


@pytest.mark.cli
@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"model_type": "no_such_architecture"}, "cannot be read as a transformers config"),
        (None, "cannot be read as a transformers config"),  # config.json that is not JSON
    ],
)
def test_annotate_with_a_bad_config(
    config: dict[str, str] | None, words: str, plain_exports: dict[str, Path], tmp_path: Path
) -> None:
    model_dir, model = tmp_path / "config", tmp_path / "model.onnx"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(config) if config is not None else '{"model_type": "bert",')
    shutil.copy(plain_exports["bert"] / "model.onnx", model)
    before = model.read_bytes()
    _expect_clear_error(run_cli("hierarchy", "annotate", str(model), "--config", str(model_dir), check=False), words)
    assert model.read_bytes() == before


# --- over 2 GB without external data -------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _sparse_model(path: Path, weight_bytes: int) -> None:
    """A valid model whose one weight (``weight_bytes`` of zeros, stored in the file) is a hole on disk."""
    n = weight_bytes // 4
    graph = helper.make_graph(
        [helper.make_node("Identity", ["enc.big.weight"], ["y"], name="/enc/big/Identity")],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
    )
    header = onnx.TensorProto(name="enc.big.weight", data_type=TensorProto.FLOAT, dims=[n]).SerializeToString()
    raw = bytes([9 << 3 | 2]) + _varint(4 * n)  # TensorProto.raw_data
    tensor_length = len(header) + len(raw) + 4 * n
    graph_bytes = graph.SerializeToString()
    initializer = bytes([5 << 3 | 2]) + _varint(tensor_length)  # GraphProto.initializer
    graph_length = len(graph_bytes) + len(initializer) + tensor_length
    model = helper.make_model(onnx.GraphProto(), opset_imports=[helper.make_opsetid("", 18)])
    model.ClearField("graph")
    with path.open("wb") as f:
        f.write(model.SerializeToString() + bytes([7 << 3 | 2]) + _varint(graph_length))  # ModelProto.graph
        f.write(graph_bytes + initializer + header + raw)
        f.seek(4 * n, 1)
        f.truncate()


@pytest.mark.cli
def test_files_over_2gb_without_external_data(tmp_path: Path) -> None:
    """Sparse files over protobuf's 2 GB (no disk space used): garbage gets a clear error, a valid model is
    read without its weights; both at once, without reading 2 GB into memory."""
    size = 2**31 + 4096
    garbage = tmp_path / "garbage.onnx"
    with garbage.open("wb") as f:
        f.truncate(size)
    model = tmp_path / "big.onnx"
    _sparse_model(model, size)
    assert model.stat().st_size > 2**31
    start = time.monotonic()
    _expect_clear_error(run_cli("hierarchy", "tree", str(garbage), check=False), "not an ONNX model")
    _expect_clear_error(run_cli("hierarchy", "tree", str(model), check=False), "has no hierarchy metadata")
    before = model.stat()
    _expect_clear_error(run_cli("hierarchy", "annotate", str(model), check=False), "over protobuf's 2 GB limit")
    assert (model.stat().st_size, model.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert time.monotonic() - start < 45
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "garbage.onnx"]


# --- permissions (enforced for root too, through setpriv) ---------------------------------------------------

needs_permissions = pytest.mark.skipif(
    RESTRICTED is None, reason="cannot drop the capabilities that bypass permissions"
)


@pytest.fixture
def locked(cli_exports: dict[str, Path], plain_exports: dict[str, Path], tmp_path: Path) -> Iterator[dict[str, Path]]:
    """An unreadable model, a read-only directory holding a model, an empty read-only directory."""
    unreadable = tmp_path / "unreadable.onnx"
    shutil.copy(plain_exports["bert"] / "model.onnx", unreadable)
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    shutil.copy(plain_exports["bert"] / "model.onnx", read_only / "model.onnx")
    empty = tmp_path / "empty_read_only"
    empty.mkdir()
    annotated = tmp_path / "annotated.onnx"
    shutil.copy(cli_exports["bert"] / "model.onnx", annotated)
    unreadable.chmod(0o000)
    read_only.chmod(0o555)
    empty.chmod(0o555)
    yield {"unreadable": unreadable, "read_only": read_only, "empty": empty, "annotated": annotated}
    for path in (unreadable, read_only, empty):
        path.chmod(0o755)


PERMISSION_CASES: dict[str, tuple[Callable[[dict[str, Path]], list[str]], tuple[str, ...]]] = {
    "tree_unreadable": (lambda p: ["hierarchy", "tree", str(p["unreadable"])], ("cannot be read", "denied")),
    "annotate_unreadable": (lambda p: ["hierarchy", "annotate", str(p["unreadable"])], ("cannot be read",)),
    "annotate_read_only_dir": (
        lambda p: ["hierarchy", "annotate", str(p["read_only"])],
        ("cannot be written", "permissions"),
    ),
    "view_into_read_only_dir": (
        lambda p: ["hierarchy", "view", str(p["annotated"]), "-o", str(p["empty"] / "v.html")],
        ("v.html: cannot be written", "permissions"),
    ),
    "extract_into_read_only_dir": (
        lambda p: ["hierarchy", "extract", str(p["annotated"]), "encoder.layer.0", "-o", str(p["empty"] / "x.onnx")],
        ("x.onnx: cannot be written", "permissions"),
    ),
}


@pytest.mark.cli
@needs_permissions
@pytest.mark.parametrize("case", sorted(PERMISSION_CASES))
def test_permissions(case: str, locked: dict[str, Path], tmp_path: Path) -> None:
    arguments, words = PERMISSION_CASES[case]
    locked["unreadable"].chmod(0o600)
    before = _snapshot(tmp_path)
    locked["unreadable"].chmod(0o000)
    _expect_clear_error(run_restricted_cli(*arguments(locked)), *words)
    locked["unreadable"].chmod(0o600)
    assert _snapshot(tmp_path) == before
    assert temporaries(locked["read_only"]) == [] and temporaries(locked["empty"]) == []


@pytest.mark.cli
@needs_permissions
def test_export_into_a_read_only_directory(model_dirs: dict[str, Path], locked: dict[str, Path]) -> None:
    for output in (locked["empty"], locked["empty"] / "sub"):
        completed = run_restricted_cli(
            "export", "onnx", "--model", str(model_dirs["vit"]), "--task", "image-classification", "--hierarchy",
            str(output),
        )  # fmt: skip
        _expect_clear_error(completed, "cannot write into", "choose a writable directory")
    assert list(locked["empty"].iterdir()) == []


# --- exports Optimum refuses -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory: pytest.TempPathFactory, model_dirs: dict[str, Path]) -> dict[str, Path]:
    """A tiny CTRL (an architecture Optimum cannot export), a config without weights, damaged weights."""
    import transformers

    root = tmp_path_factory.mktemp("odd_models")
    config = transformers.CTRLConfig(n_layer=1, n_embd=16, n_head=2, dff=32, vocab_size=100, n_positions=32)
    transformers.CTRLLMHeadModel(config).save_pretrained(root / "ctrl")
    (root / "no_weights").mkdir()
    shutil.copy(model_dirs["bert"] / "config.json", root / "no_weights")
    shutil.copytree(model_dirs["bert"], root / "damaged")
    weights = root / "damaged" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return {"ctrl": root / "ctrl", "no_weights": root / "no_weights", "damaged": root / "damaged"}


EXPORT_CASES = {
    "unsupported_task": ("bert", "image-segmentation", "the export failed: ValueError", "Please use a supported task"),
    "unsupported_architecture": ("ctrl", "text-generation", "the export failed", "unsupported architecture"),
    "no_weights": ("no_weights", "feature-extraction", "the export failed: OSError", "model.safetensors"),
    "damaged_weights": ("damaged", "feature-extraction", "the export failed: SafetensorError", "header"),
    "model_is_a_file": ("file", "feature-extraction", "is a file", "save_pretrained"),
}


@pytest.mark.cli
@pytest.mark.optimum_onnx
@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_exports_optimum_refuses(
    case: str, model_dirs: dict[str, Path], odd_models: dict[str, Path], tmp_path: Path
) -> None:
    name, task, *words = EXPORT_CASES[case]
    model = {**model_dirs, **odd_models, "file": model_dirs["bert"] / "config.json"}[name]
    output = tmp_path / "out"
    completed = run_cli(
        "export", "onnx", "--model", str(model), "--task", task, "--hierarchy", str(output), check=False
    )
    _expect_clear_error(completed, *words)
    assert not output.exists()  # not even an empty directory


@pytest.mark.optimum_onnx
def test_inputs_optimum_cannot_generate(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    """A user's own ONNX config whose model input Optimum has no generator for: Optimum's error, no model file;
    the same user config with inputs Optimum knows exports with the hierarchy."""
    from optimum.exporters.onnx.model_configs import BertOnnxConfig
    from transformers import AutoConfig

    from optimum_hierarchy import export_with_hierarchy

    class SpeakerBertConfig(BertOnnxConfig):  # type: ignore[misc]
        @property
        def inputs(self) -> dict[str, dict[int, str]]:
            return {"input_ids": {0: "batch_size", 1: "sequence_length"}, "speaker_embedding": {0: "batch_size"}}

    class PlainBertConfig(BertOnnxConfig):  # type: ignore[misc]
        @property
        def inputs(self) -> dict[str, dict[int, str]]:
            return {"input_ids": {0: "batch_size", 1: "sequence_length"}}

    config = AutoConfig.from_pretrained(model_dirs["bert"])
    with pytest.raises(RuntimeError, match='Could not generate dummy input for "speaker_embedding"'):
        export_with_hierarchy(
            model_dirs["bert"],
            tmp_path / "odd",
            task="feature-extraction",
            custom_onnx_configs={"model": SpeakerBertConfig(config, task="feature-extraction")},
        )
    assert not list((tmp_path / "odd").rglob("*.onnx")) if (tmp_path / "odd").exists() else True
    result = export_with_hierarchy(
        model_dirs["bert"],
        tmp_path / "fine",
        task="feature-extraction",
        custom_onnx_configs={"model": PlainBertConfig(config, task="feature-extraction")},
    )
    assert result.attributed == result.nodes > 100
    assert [i.name for i in onnx.load(str(tmp_path / "fine" / "model.onnx")).graph.input] == ["input_ids"]
