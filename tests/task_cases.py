"""The tiny models `optimum-cli hierarchy export` is tested on, and what Optimum's layout expects of each."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from optimum_hierarchy.demo import TINY_MODELS


@dataclasses.dataclass(frozen=True)
class TaskCase:
    tiny: str
    """The entry of optimum_hierarchy.demo.TINY_MODELS the model is built from."""
    model_class: str
    task: str
    model_type: str
    inputs: tuple[str, ...]
    """Optimum's OnnxConfig inputs for the task (optimum-onnx 0.1's BertOnnxConfig, ViTOnnxConfig, ...)."""
    output: str
    fixed: tuple[str, ...] = ()
    unused_linears: tuple[str, ...] = ()
    """nn.Linear modules no exported output depends on."""


TASK_CASES = {
    "bert": TaskCase(
        "bert",
        "BertModel",
        "feature-extraction",
        "bert",
        ("input_ids", "attention_mask", "token_type_ids"),
        "last_hidden_state",
        unused_linears=("pooler.dense",),
    ),
    "vit": TaskCase("vit", "ViTForImageClassification", "image-classification", "vit", ("pixel_values",), "logits"),
    "llama": TaskCase(
        "llama",
        "LlamaForCausalLM",
        "text-generation",
        "llama",
        ("input_ids", "attention_mask", "position_ids"),
        "logits",
        ("use_cache",),
    ),
    "gpt2": TaskCase(
        "gpt2",
        "GPT2LMHeadModel",
        "text-generation",
        "gpt2",
        ("input_ids", "attention_mask", "position_ids"),
        "logits",
        ("use_cache",),
    ),
}


def load_task_model(case: str, directory: Path) -> Any:
    import transformers

    return getattr(transformers, TASK_CASES[case].model_class).from_pretrained(directory).eval()


assert all(TINY_MODELS[c.tiny][1] == c.model_class for c in TASK_CASES.values())
