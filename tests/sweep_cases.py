"""The architecture sweep: tiny configs of many model types, each with every parameter re-drawn.

Each case is a transformers config class and model class, the task Optimum exports it for, and
whether Optimum's ONNX Runtime optimizer accepts the model type (``--optimize O2``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

_TEXT = {"vocab_size": 512, "max_position_embeddings": 64}
_ENCODER = {**_TEXT, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
_DECODER = {**_ENCODER, "num_key_value_heads": 2}
_IMAGE = {"image_size": 32, "num_labels": 3}
_VIT = {**_IMAGE, **{k: v for k, v in _ENCODER.items() if k not in _TEXT}, "patch_size": 8}
_SEQ2SEQ = {
    **_TEXT,
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "pad_token_id": 1,
    "decoder_start_token_id": 2,
    "eos_token_id": 2,
    "bos_token_id": 0,
}


@dataclasses.dataclass(frozen=True)
class SweepCase:
    config_class: str
    model_class: str
    task: str
    config: dict[str, Any]
    o2: bool
    """Optimum's ORTOptimizer accepts the model type (ORTConfigManager), so the sweep runs --optimize O2."""


SWEEP_CASES: dict[str, SweepCase] = {
    "bert": SweepCase("BertConfig", "BertForSequenceClassification", "text-classification", _ENCODER, True),
    "roberta": SweepCase(
        "RobertaConfig", "RobertaModel", "feature-extraction", {**_ENCODER, "max_position_embeddings": 66}, True
    ),
    "distilbert": SweepCase(
        "DistilBertConfig",
        "DistilBertModel",
        "feature-extraction",
        {**_TEXT, "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64},
        True,
    ),
    "albert": SweepCase("AlbertConfig", "AlbertModel", "feature-extraction", {**_ENCODER, "embedding_size": 16}, True),
    "electra": SweepCase(
        "ElectraConfig",
        "ElectraForSequenceClassification",
        "text-classification",
        {**_ENCODER, "embedding_size": 16},
        True,
    ),
    "vit": SweepCase(
        "ViTConfig",
        "ViTForImageClassification",
        "image-classification",
        _VIT,
        True,
    ),
    "deit": SweepCase(
        "DeiTConfig",
        "DeiTForImageClassification",
        "image-classification",
        _VIT,
        False,
    ),
    "swin": SweepCase(
        "SwinConfig",
        "SwinForImageClassification",
        "image-classification",
        {**_IMAGE, "patch_size": 4, "embed_dim": 16, "depths": [1, 1], "num_heads": [2, 2], "window_size": 4},
        False,
    ),
    "convnext": SweepCase(
        "ConvNextConfig",
        "ConvNextForImageClassification",
        "image-classification",
        {**_IMAGE, "num_stages": 2, "hidden_sizes": [8, 16], "depths": [1, 1]},
        False,
    ),
    "resnet": SweepCase(
        "ResNetConfig",
        "ResNetForImageClassification",
        "image-classification",
        {"num_labels": 3, "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]},
        False,
    ),
    "gpt2": SweepCase(
        "GPT2Config",
        "GPT2LMHeadModel",
        "text-generation",
        {"vocab_size": 512, "n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 4},
        True,
    ),
    "gpt_neox": SweepCase("GPTNeoXConfig", "GPTNeoXForCausalLM", "text-generation", _ENCODER, True),
    "llama": SweepCase("LlamaConfig", "LlamaForCausalLM", "text-generation", _DECODER, True),
    "mistral": SweepCase("MistralConfig", "MistralForCausalLM", "text-generation", _DECODER, True),
    "qwen2": SweepCase("Qwen2Config", "Qwen2ForCausalLM", "text-generation", _DECODER, False),
    "phi": SweepCase(
        "PhiConfig", "PhiForCausalLM", "text-generation", {**_ENCODER, "partial_rotary_factor": 0.5}, False
    ),
    "t5": SweepCase(
        "T5Config",
        "T5ForConditionalGeneration",
        "text2text-generation-with-past",
        {
            "vocab_size": 512,
            "d_model": 32,
            "d_kv": 8,
            "d_ff": 64,
            "num_layers": 2,
            "num_heads": 4,
            "decoder_start_token_id": 0,
        },
        True,
    ),
    "bart": SweepCase("BartConfig", "BartForConditionalGeneration", "text2text-generation-with-past", _SEQ2SEQ, True),
    "marian": SweepCase("MarianConfig", "MarianMTModel", "text2text-generation-with-past", _SEQ2SEQ, True),
    "whisper": SweepCase(
        "WhisperConfig",
        "WhisperForConditionalGeneration",
        "automatic-speech-recognition-with-past",
        {**_SEQ2SEQ, "num_mel_bins": 16, "max_source_positions": 1500, "max_target_positions": 64},
        True,
    ),
    "wav2vec2": SweepCase(
        "Wav2Vec2Config",
        "Wav2Vec2Model",
        "feature-extraction",
        {
            **_ENCODER,
            "conv_dim": [16, 16],
            "conv_kernel": [10, 3],
            "conv_stride": [5, 2],
            "num_conv_pos_embeddings": 16,
            "num_conv_pos_embedding_groups": 4,
            "vocab_size": 32,
        },
        False,
    ),
}


def build_sweep_model(name: str, directory: Path, seed: int = 0) -> Any:
    """Build the tiny model, re-draw every parameter (distinct values), save it; returns the model."""
    import torch
    import transformers

    case = SWEEP_CASES[name]
    torch.manual_seed(seed)
    config = getattr(transformers, case.config_class)(**case.config)
    model = getattr(transformers, case.model_class)(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.05)
    model.save_pretrained(directory)
    return model


@dataclasses.dataclass(frozen=True)
class SweepExport:
    model: Any
    plain: Path
    hierarchy: Path
    o2: Path | None


def export_sweep_case(name: str, directory: Path) -> SweepExport:
    """Build the case's model and export it three ways (in-process, Optimum's main_export)."""
    from optimum.exporters.onnx import main_export

    from optimum_hierarchy import export_with_hierarchy

    case = SWEEP_CASES[name]
    model = build_sweep_model(name, directory / "pytorch")
    main_export(str(directory / "pytorch"), directory / "plain", task=case.task)
    export_with_hierarchy(directory / "pytorch", directory / "hierarchy", task=case.task)
    o2 = None
    if case.o2:
        o2 = directory / "o2"
        export_with_hierarchy(directory / "pytorch", o2, task=case.task, optimize="O2")
    return SweepExport(model=model, plain=directory / "plain", hierarchy=directory / "hierarchy", o2=o2)


def readme_table() -> str:
    """The table of supported architectures (docs/architectures.md), from what the sweep checks (run this file)."""
    lines = [
        "| model type | model class (tiny config) | task | checked by the sweep |",
        "|---|---|---|---|",
    ]
    for name in sorted(SWEEP_CASES):
        case = SWEEP_CASES[name]
        mark = "tested, and tested with O2" if case.o2 else "tested; not optimizable by Optimum (no O2)"
        lines.append(f"| `{name}` | `{case.model_class}` | `{case.task}` | {mark} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(readme_table())
