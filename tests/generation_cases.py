"""Tiny generative models for transformers' own exporter (``transformers.exporters``), built from configs.

Each case is a model and the ``generate`` inputs ``export_for_generation`` traces with: decoder-only
LLMs of three families (Llama with grouped-query attention, Qwen2, Mixtral with mixture-of-experts),
a seq2seq speech model (Whisper), a seq2seq text model (T5) and a multimodal one (LLaVA).
Parameters are re-initialised with seeded random values, so that no two weights are equal by
accident (the exporter stores equal parameters once) and generation does not repeat one token.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from typing import Any

import torch

GENERATION_CASES = ("llama", "qwen2", "mixtral", "whisper", "t5", "llava")
"""Every case; ``llama`` is also exported with ``ort_fusions="cpu"``."""

DECODER_ONLY = ("llama", "qwen2", "mixtral")

DECODER = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
"""The decoder shape every decoder case shares (grouped-query attention: 4 heads, 2 key/value heads)."""

VARIANTS = {
    "llama-fused": ("llama", {"ort_fusions": "cpu"}),
    "llama-cuda": ("llama", {"ort_fusions": "cuda"}),
    "llama-webgpu": ("llama", {"ort_fusions": "webgpu"}),
    "llama-dml": ("llama", {"ort_fusions": "dml"}),
    "llama-int8": ("llama", {"quantizer": "dynamic"}),
}
"""Llama through ONNX Runtime's fusions for each provider, and through transformers' ONNX Runtime quantizer."""

RUNS = (*GENERATION_CASES, *VARIANTS)
RUNS_ON_CPU = tuple(r for r in RUNS if r not in ("llama-cuda", "llama-webgpu", "llama-dml"))
"""The runs whose files ONNX Runtime's CPU provider can run (the others use other providers' fused ops)."""


def onnx_config(run: str) -> Any:
    """The ``OnnxConfig`` of a run: dynamic shapes, and the run's fusions or quantizer."""
    from transformers.exporters import OnnxConfig

    options = dict(VARIANTS[run][1]) if run in VARIANTS else {}
    if options.pop("quantizer", None) == "dynamic":
        from transformers.exporters import OnnxRuntimeDynamicConfig, OnnxRuntimeQuantizer

        options["quantizer"] = OnnxRuntimeQuantizer(OnnxRuntimeDynamicConfig())
    return OnnxConfig(dynamic=True, **options)


def case_of(run: str) -> str:
    return VARIANTS[run][0] if run in VARIANTS else run


def has_transformers_exporters() -> bool:
    return importlib.util.find_spec("transformers.exporters") is not None and (
        importlib.util.find_spec("transformers.exporters.onnxruntime_fusions") is not None
    )


@dataclasses.dataclass
class GenerationCase:
    name: str
    model: Any
    inputs: dict[str, Any]


def _seeded(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def _prompt(vocab: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (1, length), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _llama() -> GenerationCase:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **DECODER,
        vocab_size=128,
        max_position_embeddings=64,
    )
    return GenerationCase("llama", _seeded(LlamaForCausalLM(config), 0), _prompt(128, 6, 0))


def _qwen2() -> GenerationCase:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        **DECODER,
        vocab_size=128,
        max_position_embeddings=64,
    )
    return GenerationCase("qwen2", _seeded(Qwen2ForCausalLM(config), 1), _prompt(128, 6, 1))


def _mixtral() -> GenerationCase:
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(
        **DECODER,
        num_local_experts=4,
        num_experts_per_tok=2,
        vocab_size=128,
        max_position_embeddings=64,
    )
    return GenerationCase("mixtral", _seeded(MixtralForCausalLM(config), 2), _prompt(128, 6, 2))


def _whisper() -> GenerationCase:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        vocab_size=128,
        num_mel_bins=16,
        max_source_positions=32,
        max_target_positions=64,
        decoder_start_token_id=1,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=1,
    )
    model = _seeded(WhisperForConditionalGeneration(config), 3)
    generator = torch.Generator().manual_seed(3)
    # A decoder prompt of 3 tokens: with one, torch.export fixes the cache length of the decode step at 1.
    inputs = {
        "input_features": torch.randn((1, 16, 64), generator=generator),
        "decoder_input_ids": torch.tensor([[1, 5, 7]]),
    }
    return GenerationCase("whisper", model, inputs)


def _t5() -> GenerationCase:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=128,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    model = _seeded(T5ForConditionalGeneration(config), 4)
    inputs = _prompt(128, 7, 4)
    inputs["decoder_input_ids"] = torch.tensor([[0, 5, 9]])
    return GenerationCase("t5", model, inputs)


def _llava() -> GenerationCase:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    text = LlamaConfig(
        **DECODER,
        vocab_size=320,
        max_position_embeddings=128,
    )
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    config = LlavaConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=300,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
    )
    model = _seeded(LlavaForConditionalGeneration(config), 5)
    generator = torch.Generator().manual_seed(5)
    image_tokens = (32 // 8) ** 2
    ids = torch.cat([torch.full((1, image_tokens), 300), torch.randint(3, 200, (1, 5), generator=generator)], 1)
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn((1, 3, 32, 32), generator=generator),
    }
    return GenerationCase("llava", model, inputs)


BUILDERS: dict[str, Callable[[], GenerationCase]] = {
    "llama": _llama,
    "qwen2": _qwen2,
    "mixtral": _mixtral,
    "whisper": _whisper,
    "t5": _t5,
    "llava": _llava,
}


def build_generation_case(name: str) -> GenerationCase:
    return BUILDERS[name]()
