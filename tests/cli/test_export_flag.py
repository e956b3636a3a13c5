"""`optimum-cli export onnx --hierarchy`, run as a subprocess against the installed package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from support import MODELS, make_feeds, run_cli

from optimum_hierarchy import schema

pytestmark = pytest.mark.optimum_onnx  # Optimum's ONNX export and ORT integration


def strip_hierarchy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for node in out.graph.node:
        keep = [
            p
            for p in node.metadata_props
            if not p.key.startswith(schema.MODEL_KEY_PREFIX) and p.key != schema.NAMESPACE_KEY
        ]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    keep = [p for p in out.metadata_props if not p.key.startswith(schema.MODEL_KEY_PREFIX)]
    del out.metadata_props[:]
    out.metadata_props.extend(keep)
    return out


@pytest.mark.parametrize("name", MODELS)
def test_valid_and_bit_identical_to_plain_export(
    name: str, cli_exports: dict[str, Path], plain_exports: dict[str, Path]
) -> None:
    annotated_path = cli_exports[name] / "model.onnx"
    plain_path = plain_exports[name] / "model.onnx"
    onnx.checker.check_model(str(annotated_path), full_check=True)
    annotated = onnx.load(str(annotated_path))
    plain = onnx.load(str(plain_path))
    assert not any(p.key.startswith(schema.MODEL_KEY_PREFIX) for p in plain.metadata_props)
    assert any(p.key == schema.SCHEMA_VERSION_KEY for p in annotated.metadata_props)
    # The annotation adds metadata and nothing else.
    assert strip_hierarchy(annotated).graph == plain.graph
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (annotated_path, plain_path)]
    feeds = make_feeds(sessions[0])
    outputs = [s.run(None, feeds) for s in sessions]
    assert len(outputs[0]) >= 1
    for a, b in zip(*outputs, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_share_by_source_is_printed(name: str, cli_exports: dict[str, Path]) -> None:
    stdout = (cli_exports[name].parent / f"{name}.stdout").read_text()
    assert "Share by source: " in stdout
    assert "scope " in stdout
    assert "Attributed" in stdout and "nodes" in stdout


def test_help_lists_the_flag_and_startup_stays_light(tmp_path: Path) -> None:
    assert "--hierarchy" in run_cli("export", "onnx", "--help").stdout
    assert "annotate" in run_cli("hierarchy", "--help").stdout
    code = (
        "import sys\n"
        "sys.argv = ['optimum-cli', 'export', 'onnx', '--help']\n"
        "from optimum.commands.optimum_cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'onnx', 'transformers', 'onnx_ir') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    # Not from the checkout: `python -c` puts the working directory on sys.path, and Optimum would
    # find the plugin file twice (installed and in ./optimum) and register its commands twice.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert "--hierarchy" in out
    assert "HEAVY []" in out


def test_strict_flag_needs_hierarchy(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    completed = run_cli(
        "export", "onnx", "--model", str(model_dirs["vit"]), "--hierarchy-strict", str(tmp_path / "o"), check=False
    )
    assert completed.returncode != 0
    assert "--hierarchy-strict only applies together with --hierarchy" in completed.stderr
    assert not list(tmp_path.rglob("*.onnx"))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_model", "no such directory"),
        ("no_config", "has no config.json"),
        ("output_is_file", "exists and is not a directory"),
        ("output_under_file", "cannot write into"),
    ],
)
def test_bad_input_gets_a_clear_error(case: str, message: str, model_dirs: dict[str, Path], tmp_path: Path) -> None:
    model = str(model_dirs["vit"])
    output = tmp_path / "out"
    if case == "missing_model":
        model = str(tmp_path / "does-not-exist")
    elif case == "no_config":
        (tmp_path / "empty").mkdir()
        model = str(tmp_path / "empty")
    elif case == "output_is_file":
        output.write_text("not a directory")
    elif case == "output_under_file":
        (tmp_path / "blocker").write_text("x")
        output = tmp_path / "blocker" / "out"
    completed = run_cli(
        "export", "onnx", "--model", model, "--task", "image-classification", "--hierarchy", str(output), check=False
    )
    assert completed.returncode == 1
    assert "error:" in completed.stderr and message in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not list(tmp_path.rglob("*.onnx"))


@pytest.mark.parametrize(
    ("name", "options", "files"),
    [
        ("bert", ("--task", "feature-extraction", "--opset", "17", "--no-post-process"), ["model.onnx"]),
        ("gpt2", ("--task", "text-generation", "--monolith", "--no-dynamic-axes"), ["model.onnx"]),
    ],
)
def test_existing_options_keep_working(
    name: str, options: tuple[str, ...], files: list[str], model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    run_cli("export", "onnx", "--model", str(model_dirs[name]), *options, "--hierarchy", str(tmp_path / "h"))
    run_cli("export", "onnx", "--model", str(model_dirs[name]), *options, str(tmp_path / "plain"))
    assert sorted(p.name for p in (tmp_path / "h").glob("*.onnx")) == files
    for file in files:
        annotated = onnx.load(str(tmp_path / "h" / file))
        plain = onnx.load(str(tmp_path / "plain" / file))
        if "--opset" in options:
            assert [o.version for o in annotated.opset_import if o.domain == ""] == [17]
        assert (
            not any(i.name.startswith("past_key_values") for i in annotated.graph.input) or "--monolith" not in options
        )
        assert strip_hierarchy(annotated).graph == plain.graph
        nodes = [dict((p.key, p.value) for p in n.metadata_props) for n in annotated.graph.node]
        assert nodes and all(schema.NODE_MODULE_KEY in n for n in nodes)
