"""Session-scoped tiny models and exports, built once and shared by the tests."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from support import MODELS, run_cli, task_of

from optimum_hierarchy.demo import build_tiny_model


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    for name in MODELS:
        build_tiny_model(name, root / name)
    return {name: root / name for name in MODELS}


@pytest.fixture(scope="session")
def cli_exports(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`optimum-cli export onnx --hierarchy` of each tiny model (subprocess, installed package)."""
    out = tmp_path_factory.mktemp("cli_hierarchy")
    for name in MODELS:
        completed = run_cli(
            "export", "onnx", "--model", str(model_dirs[name]), "--task", task_of(name), "--hierarchy", str(out / name)
        )
        (out / f"{name}.stdout").write_text(completed.stdout)
    return {name: out / name for name in MODELS}


@pytest.fixture(scope="session")
def plain_exports(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same exports without --hierarchy."""
    out = tmp_path_factory.mktemp("cli_plain")
    for name in MODELS:
        run_cli("export", "onnx", "--model", str(model_dirs[name]), "--task", task_of(name), str(out / name))
    return {name: out / name for name in MODELS}


@pytest.fixture(autouse=True)
def _quiet_third_party_logs() -> None:
    for name in ("optimum", "transformers", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
