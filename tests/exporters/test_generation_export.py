"""``optimum-cli hierarchy export`` of generative tasks: transformers' exporter, its layout, validated by generation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
import pytest
from generation_cases import build_generation_case, has_transformers_exporters
from support import run_cli

from optimum_hierarchy.cli.export_command import _GENERATIVE

needs_exporters = pytest.mark.skipif(
    not has_transformers_exporters(),
    reason="needs transformers.exporters with ort_fusions (transformers >= 5.23), which this stack lacks",
)

CLI_RUNS = {
    "llama-fused": ("llama", "text-generation-with-past", ["--ort-fusions", "cpu"]),
    "qwen2": ("qwen2", "text-generation-with-past", []),
    "mixtral": ("mixtral", "text-generation-with-past", []),
    "whisper": ("whisper", "automatic-speech-recognition-with-past", []),
    "t5": ("t5", "text2text-generation-with-past", []),
    "llava": ("llava", "image-text-to-text", []),
}


@pytest.fixture(scope="session")
def cli_generation(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Path, str]]:
    """Each CLI run: the PyTorch model, the output directory, and the command's stdout."""
    if not has_transformers_exporters():
        pytest.skip("needs transformers.exporters with ort_fusions (transformers >= 5.23), which this stack lacks")
    root = tmp_path_factory.mktemp("cli_generation")
    runs = {}
    for run, (case_name, task, extra) in CLI_RUNS.items():
        case = build_generation_case(case_name)
        case.model.save_pretrained(root / f"{run}-model")
        out = root / run
        completed = run_cli(
            "hierarchy", "export", "--model", str(root / f"{run}-model"), "--task", task, *extra, str(out)
        )
        runs[run] = (case.model, out, completed.stdout)
    return runs


@needs_exporters
@pytest.mark.cli
@pytest.mark.parametrize("run", sorted(CLI_RUNS))
def test_cli_writes_transformers_layout_annotated_and_validated(
    cli_generation: dict[str, tuple[Any, Path, str]], run: str
) -> None:
    from generation_support import check_nodes, component_files, component_roots
    from transformers.exporters import ExportedModel

    model, out, stdout = cli_generation[run]
    assert "equals PyTorch's generate (5 new tokens asked" in " ".join(stdout.split())
    manifest = json.loads((out / "export.json").read_text())
    files = component_files(out)
    assert set(manifest["components"]) == set(files)
    for path in files.values():
        assert path.is_file() and Path(f"{path}.data").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".staging-")]
    assert (out / "config.json").is_file() and (out / "generation_config.json").is_file()
    loaded = ExportedModel.from_pretrained(out)
    assert set(loaded.components) == set(files)
    check_nodes(files, model, component_roots(model, list(files)))
    if run == "llama-fused":
        ops = {n.op_type for path in files.values() for n in onnx.load(str(path), load_external_data=False).graph.node}
        assert {"GroupQueryAttention", "SkipSimplifiedLayerNormalization"} <= ops


@needs_exporters
@pytest.mark.cli
def test_cli_refuses_ort_fusions_for_a_task_of_the_dynamo_path(tmp_path: Path) -> None:
    completed = run_cli(
        "hierarchy", "export", "--model", str(tmp_path), "--task", "feature-extraction", "--ort-fusions", "cpu",
        str(tmp_path / "out"), check=False,
    )  # fmt: skip
    assert completed.returncode == 1
    assert "--ort-fusions is for the generative tasks" in " ".join(completed.stdout.split() + completed.stderr.split())
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.cli
@pytest.mark.skipif(has_transformers_exporters(), reason="this stack's transformers has transformers.exporters")
def test_cli_says_what_to_install_without_transformers_exporters(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    completed = run_cli(
        "hierarchy", "export", "--model", str(model), "--task", "text-generation-with-past", str(tmp_path / "out"),
        check=False,
    )  # fmt: skip
    text = " ".join(completed.stdout.split() + completed.stderr.split())
    assert completed.returncode == 1, text
    assert "transformers.exporters" in text and "pip install" in text
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "out").exists()


def test_cli_generative_tasks_are_the_exporters() -> None:
    from optimum_hierarchy.exporters.generation_export import GENERATIVE_TASKS

    assert tuple(GENERATIVE_TASKS) == _GENERATIVE
