"""The tiny models `optimum-cli hierarchy export` is tested on, and what Optimum's layout expects of each."""

from __future__ import annotations

import dataclasses
import importlib.util
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


_LAYERS = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128}
_TEXT = {**_LAYERS, "vocab_size": 512, "max_position_embeddings": 64}
_CLIP = {
    # CLIP's default special tokens (49406, 49407) are outside a 512-token vocabulary
    "text_config": {**_TEXT, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
    "vision_config": {**_LAYERS, "image_size": 32, "patch_size": 8},
    "projection_dim": 32,
}
_DECODER = {**_TEXT, "max_position_embeddings": 128, "num_key_value_heads": 2}


@dataclasses.dataclass(frozen=True)
class ConfigCase:
    """A tiny model built from a transformers config here (not one of the demo's), for what the demo's lack:
    sub-configs (CLIP), sliding-window attention (Gemma 3), mixture-of-experts (Mixtral)."""

    config_class: str
    model_class: str
    task: str
    config: dict[str, Any]
    inputs: tuple[str, ...]
    """What Optimum's OnnxConfig names for the task (optimum-onnx 0.1's CLIPOnnxConfig, ...)."""
    outputs: tuple[str, ...]
    needs: str = ""
    """A module the case needs besides the model class, and why (skipped with the reason without it)."""


CONFIG_CASES = {
    "clip": ConfigCase(
        "CLIPConfig",
        "CLIPModel",
        "feature-extraction",
        _CLIP,
        ("input_ids", "attention_mask", "pixel_values"),
        ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"),
    ),
    "clip-image": ConfigCase(
        "CLIPConfig",
        "CLIPForImageClassification",
        "image-classification",
        {**_CLIP, "num_labels": 3},
        ("pixel_values",),
        ("logits",),
    ),
    "gemma3": ConfigCase(
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        "text-generation",
        # A window of one token: a padded query attends to nothing, whatever the padding (Optimum pads >= 1).
        {**_DECODER, "head_dim": 16, "sliding_window": 1},
        ("input_ids", "attention_mask", "position_ids"),
        ("logits",),
    ),
    "mixtral": ConfigCase(
        "MixtralConfig",
        "MixtralForCausalLM",
        "text-generation",
        {**_DECODER, "num_local_experts": 4, "num_experts_per_tok": 2},
        ("input_ids", "attention_mask", "position_ids"),
        ("logits",),
        needs="transformers.exporters: the ONNX translation of grouped_mm, which transformers 5's experts run",
    ),
}


def config_case_missing(name: str) -> str | None:
    """Why the case cannot be built on this stack, or None."""
    import transformers

    case = CONFIG_CASES[name]
    for cls in (case.config_class, case.model_class):
        if not hasattr(transformers, cls):
            return f"transformers {transformers.__version__} has no {cls}"
    module = case.needs.split(":")[0]
    if module and importlib.util.find_spec(module) is None:
        return f"needs {case.needs}; transformers {transformers.__version__} has no {module}"
    return None


def build_config_case(name: str, directory: Path, seed: int = 0) -> None:
    """Build the case's model with distinct random weights (as the demo's) and save it in ``directory``."""
    import torch
    import transformers

    case = CONFIG_CASES[name]
    model = getattr(transformers, case.model_class)(getattr(transformers, case.config_class)(**case.config))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    model.save_pretrained(directory)


def load_config_case(name: str, directory: Path) -> Any:
    import transformers

    return getattr(transformers, CONFIG_CASES[name].model_class).from_pretrained(directory).eval()


def load_task_model(case: str, directory: Path) -> Any:
    import transformers

    return getattr(transformers, TASK_CASES[case].model_class).from_pretrained(directory).eval()


assert all(TINY_MODELS[c.tiny][1] == c.model_class for c in TASK_CASES.values())
