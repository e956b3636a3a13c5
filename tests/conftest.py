"""Session-scoped tiny models and exports, built once and shared by the tests."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from optimum_hierarchy.demo import TINY_MODELS, build_tiny_model

MODELS = ("vit", "bert", "gpt2")
OPTIMUM_CLI = str(Path(sys.executable).with_name("optimum-cli"))


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    dirs = {}
    for name in MODELS:
        build_tiny_model(name, root / name)
        dirs[name] = root / name
    return dirs


def task_of(name: str) -> str:
    return TINY_MODELS[name][2]


def load_torch_model(name: str, directory: Path):  # type: ignore[no-untyped-def]
    import transformers

    return getattr(transformers, TINY_MODELS[name][1]).from_pretrained(directory).eval()


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real optimum-cli entry point of the installed package."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    completed = subprocess.run([OPTIMUM_CLI, *args], capture_output=True, text=True, env=env, check=False)
    if check and completed.returncode != 0:
        raise AssertionError(f"optimum-cli {' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr}")
    return completed


@pytest.fixture(scope="session")
def cli_exports(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`optimum-cli export onnx --hierarchy` of each tiny model (subprocess, installed package)."""
    out = tmp_path_factory.mktemp("cli_hierarchy")
    result = {}
    for name in MODELS:
        completed = run_cli("export", "onnx", "--model", str(model_dirs[name]), "--task", task_of(name), "--hierarchy", str(out / name))
        (out / f"{name}.stdout").write_text(completed.stdout)
        result[name] = out / name
    return result


@pytest.fixture(scope="session")
def plain_exports(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same exports without --hierarchy."""
    out = tmp_path_factory.mktemp("cli_plain")
    for name in MODELS:
        run_cli("export", "onnx", "--model", str(model_dirs[name]), "--task", task_of(name), str(out / name))
    return {name: out / name for name in MODELS}


def make_feeds(session: ort.InferenceSession, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs of the right shapes for a tiny-model session."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in session.get_inputs():
        if i.name == "pixel_values":
            feeds[i.name] = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
        elif i.name.startswith("past_key_values"):
            feeds[i.name] = rng.standard_normal((2, 4, 3, 16)).astype(np.float32)
        elif i.name == "attention_mask":
            feeds[i.name] = np.ones((2, 8 + (3 if any(x.name.startswith("past") for x in session.get_inputs()) else 0)), dtype=np.int64)
        elif i.name == "position_ids":
            feeds[i.name] = np.tile(np.arange(3, 11, dtype=np.int64), (2, 1))
        elif i.name == "token_type_ids":
            feeds[i.name] = np.zeros((2, 8), dtype=np.int64)
        else:
            feeds[i.name] = rng.integers(0, 500, size=(2, 8), dtype=np.int64)
    return feeds


@pytest.fixture(autouse=True)
def _quiet_third_party_logs() -> None:
    for name in ("optimum", "transformers", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)


Runner = Callable[..., subprocess.CompletedProcess[str]]
