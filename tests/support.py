"""Helpers shared by the tests (importable as `support`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from optimum_hierarchy.demo import TINY_MODELS
from optimum_hierarchy.modules import ModuleInfo, ModuleTree, ParameterInfo

MODELS = ("vit", "bert", "gpt2")
OPTIMUM_CLI = str(Path(sys.executable).with_name("optimum-cli"))
PAST_LENGTH = 3
SEQUENCE_LENGTH = 8


def task_of(name: str) -> str:
    return TINY_MODELS[name][2]


def load_torch_model(name: str, directory: Path) -> Any:
    import transformers

    return getattr(transformers, TINY_MODELS[name][1]).from_pretrained(directory).eval()


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real optimum-cli entry point of the installed package."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    completed = subprocess.run([OPTIMUM_CLI, *args], capture_output=True, text=True, env=env, check=False)
    if check and completed.returncode != 0:
        raise AssertionError(f"optimum-cli {' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr}")
    return completed


def make_feeds(session: ort.InferenceSession, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs of the right shapes for a tiny-model session."""
    rng = np.random.default_rng(seed)
    names = [i.name for i in session.get_inputs()]
    past = PAST_LENGTH if any(n.startswith("past_key_values") for n in names) else 0
    feeds: dict[str, np.ndarray] = {}
    for name in names:
        if name == "pixel_values":
            feeds[name] = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
        elif name.startswith("past_key_values"):
            feeds[name] = rng.standard_normal((2, 4, past, 16)).astype(np.float32)
        elif name == "attention_mask":
            feeds[name] = np.ones((2, past + SEQUENCE_LENGTH), dtype=np.int64)
        elif name == "position_ids":
            feeds[name] = np.tile(np.arange(past, past + SEQUENCE_LENGTH, dtype=np.int64), (2, 1))
        elif name == "token_type_ids":
            feeds[name] = np.zeros((2, SEQUENCE_LENGTH), dtype=np.int64)
        else:
            feeds[name] = rng.integers(0, 500, size=(2, SEQUENCE_LENGTH), dtype=np.int64)
    return feeds


def _stack() -> str:
    import optimum.version
    import transformers

    return f"optimum {optimum.version.__version__}, transformers {transformers.__version__}"


def without_optimum_onnx_reason() -> str | None:
    """Why tests of the ``onnx`` extra cannot run here, or ``None`` when optimum-onnx is installed."""
    from optimum_hierarchy.errors import has_optimum_onnx

    if has_optimum_onnx():
        return None
    return f"needs the onnx extra (optimum-onnx), which this stack does not have ({_stack()})"


def require_optimum_onnx_module() -> None:
    """Skip the calling test module when optimum-onnx is missing (call before importing what needs it)."""
    import pytest

    reason = without_optimum_onnx_reason()
    if reason is not None:
        pytest.skip(reason, allow_module_level=True)


def small_tree() -> ModuleTree:
    """A hand-written tree: a container, a leaf with parameters, and a weight tied to it."""
    return ModuleTree(
        [
            ModuleInfo("", "pkg.Root"),
            ModuleInfo("encoder", "pkg.Encoder"),
            ModuleInfo("encoder.layer", "torch.nn.modules.container.ModuleList"),
            ModuleInfo("encoder.layer.0", "pkg.Layer"),
            ModuleInfo(
                "encoder.layer.0.dense",
                "torch.nn.Linear",
                parameters=(ParameterInfo("weight", (4, 4)), ParameterInfo("bias", (4,))),
            ),
            ModuleInfo(
                "head",
                "torch.nn.Linear",
                parameters=(ParameterInfo("weight", (4, 4), tied_to="encoder.layer.0.dense.weight"),),
            ),
        ]
    )
