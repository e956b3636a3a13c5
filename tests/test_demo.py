"""The README's main job (the demo, with the real optimum-cli) and the set-up scripts, run with a fake Python."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from optimum_hierarchy import read_hierarchy
from optimum_hierarchy.demo import GENERATIVE, TINY_MODELS

ROOT = Path(__file__).resolve().parents[1]
HAS_TRANSFORMERS_EXPORTER = importlib.util.find_spec("transformers.exporters") is not None


def _run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    demo = Path(sys.executable).with_name("optimum-hierarchy-demo")
    return subprocess.run([str(demo), *args], capture_output=True, text=True, check=False)


def _module_paths(model_dir: Path, model_class: str) -> list[str]:
    import transformers

    model = getattr(transformers, model_class).from_pretrained(model_dir)
    return [path for path, _ in model.named_modules()]


def test_demo_exports_an_encoder(tmp_path: Path) -> None:
    """`--model vit`: `optimum-cli hierarchy export`, torch's dynamo exporter, on either stack."""
    completed = _run_demo("--model", "vit", "--output", str(tmp_path))
    assert completed.returncode == 0, completed.stderr
    assert "optimum-cli hierarchy export" in completed.stdout.replace("\n", " ")
    assert "Attributed" in completed.stdout and "Annotated model" in completed.stdout
    hierarchy = read_hierarchy(tmp_path / "onnx" / "model.onnx")
    assert hierarchy.tree.root.class_name.endswith("ViTForImageClassification")
    assert hierarchy.nodes and all(n.module is not None for n in hierarchy.nodes)
    page = (tmp_path / "model.html").read_text()
    assert "ViTForImageClassification" in page and "hierarchy-data" in page
    # The glob the demo suggests finds the attention modules of the model (from named_modules()).
    from optimum_hierarchy.retriever import HierarchyRetriever

    attention = [p for p in _module_paths(tmp_path / "pytorch", TINY_MODELS["vit"][1]) if p.endswith(".attention")]
    retriever = HierarchyRetriever(tmp_path / "onnx" / "model.onnx")
    assert attention and "'**.attention'" in completed.stdout.replace("\n", "")
    assert sorted(m.path for m in retriever.find_modules("**.attention")) == sorted(attention)


@pytest.mark.skipif(not HAS_TRANSFORMERS_EXPORTER, reason="transformers has no exporters module (needs >= 5.23)")
def test_demo_default_is_a_generative_model_through_transformers_exporter(tmp_path: Path) -> None:
    """No arguments: a tiny Llama with its KV cache (prefill, decode), as recommended on today's stack."""
    completed = _run_demo("--output", str(tmp_path))
    assert completed.returncode == 0, completed.stderr
    assert "--task text-generation-with-past" in completed.stdout
    assert {"prefill.onnx", "decode.onnx", "export.json"} <= {p.name for p in (tmp_path / "onnx").iterdir()}
    decode = read_hierarchy(tmp_path / "onnx" / "decode.onnx")
    assert decode.tree.root.class_name.endswith("LlamaForCausalLM")
    assert decode.nodes and all(n.module is not None for n in decode.nodes)
    attention = [p for p in _module_paths(tmp_path / "pytorch", "LlamaForCausalLM") if p.endswith(".self_attn")]
    assert attention and "'**.self_attn'" in completed.stdout.replace("\n", "")
    assert (tmp_path / "model.html").is_file()


def test_generative_models_take_their_cache_where_transformers_exporter_is(tmp_path: Path) -> None:
    from optimum_hierarchy.demo import export_command

    assert GENERATIVE and set(TINY_MODELS) >= GENERATIVE
    for name in sorted(TINY_MODELS):
        command = export_command(name, tmp_path / "m", tmp_path / "o", "hierarchy")
        assert command[1:3] == ["hierarchy", "export"]
        task = command[command.index("--task") + 1]
        assert task.endswith("-with-past") == (name in GENERATIVE and HAS_TRANSFORMERS_EXPORTER), (name, task)


# The set-up scripts, run on a copy of the repository's files with a fake `python3`: it records every
# call (`-m venv`, `-m pip install ...`, `-c ...`) and makes the venv's python and demo script.
FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
  printf '#!/usr/bin/env bash\necho "demo $*" >> "$FAKE_LOG"\n' > "$3/bin/optimum-hierarchy-demo"
  chmod +x "$3/bin/optimum-hierarchy-demo"
fi
if [ "$1" = "-c" ]; then exit 1; fi  # `import optimum.exporters.onnx`: absent
exit 0
"""


def _fresh_copy(tmp_path: Path) -> Path:
    """The files of the repository that the scripts read, without any venv (as a fresh clone has them)."""
    clone = tmp_path / "clone"
    for name in ("scripts", ".ci"):
        shutil.copytree(ROOT / name, clone / name)
    shutil.copy(ROOT / "pyproject.toml", clone / "pyproject.toml")
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    return clone


def _run_with_fake_python(tmp_path: Path, script: str, **env: str) -> list[str]:
    clone = _fresh_copy(tmp_path)
    log = tmp_path / "calls.log"
    environment = {
        **{k: v for k, v in os.environ.items() if k not in {"VENV", "STACK", "TORCH_WHEEL", "TORCH_INDEX_URL"}},
        "FAKE_LOG": str(log),
        "PYTHON": str(tmp_path / "python3"),
        "WITH_BROWSER": "0",
        **env,
    }
    completed = subprocess.run(
        ["bash", script, "--model", "bert"], cwd=clone, env=environment, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
    return log.read_text().splitlines()


def _test_tools() -> list[str]:
    """The distributions of the ``test`` extra, read from pyproject.toml (Python 3.10 has no tomllib)."""
    block = re.search(r"^test = \[(.*?)^\]", (ROOT / "pyproject.toml").read_text(), re.MULTILINE | re.DOTALL)
    assert block is not None
    names = re.findall(r'^\s*"([A-Za-z0-9_.-]+)', block.group(1), re.MULTILINE)
    assert {"pytest", "mypy", "ruff", "selenium"} <= set(names)
    return names


def test_demo_installs_no_test_tool(tmp_path: Path) -> None:
    calls = _run_with_fake_python(tmp_path, "scripts/demo")
    installs = [call for call in calls if call.startswith("-m pip install")]
    assert installs, calls
    assert calls[0] == "-m venv .venv-demo"  # its own venv, of today's stack
    assert "-m pip install --quiet torch==2.13.0" in installs
    assert any("--constraint .ci/stack-core.txt" in call and call.endswith(" .") for call in installs), installs
    for call in installs:
        words = call.replace("[", " ").replace("]", " ").replace(",", " ").split()
        assert "test" not in words, call
        assert not set(_test_tools()) & set(words), call
        assert "onnx" not in words, call  # today's stack: no optimum-onnx
    assert calls[-1] == "demo --model bert"  # the arguments go to the demo


@pytest.mark.parametrize(
    ("env", "torch_call"),
    [
        ({}, "-m pip install --quiet torch==2.13.0"),
        (
            {"TORCH_INDEX_URL": "https://download.pytorch.org/whl/cpu"},
            "-m pip install --quiet torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu",
        ),
        ({"TORCH_WHEEL": "/wheels/torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl"},
         "-m pip install --quiet /wheels/torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl"),
    ],
)  # fmt: skip
def test_setup_installs_the_torch_build_asked_for(tmp_path: Path, env: dict[str, str], torch_call: str) -> None:
    calls = _run_with_fake_python(tmp_path, ".ci/setup", STACK="onnx", **env)
    torch_calls = [call for call in calls if "torch" in call]
    assert torch_calls == [torch_call]
    package = [call for call in calls if "--constraint .ci/stack-onnx.txt" in call]
    assert package and package[-1].endswith(" .[onnx,test]"), package  # CI's venv keeps its test tools
    assert calls.index(torch_call) < calls.index(package[0])  # torch first: the package's range is then met
