"""``optimum-cli hierarchy export`` for generative tasks: transformers' own exporter, with the KV cache, annotated.

For ``text-generation-with-past``, ``text2text-generation-with-past``,
``automatic-speech-recognition-with-past`` and ``image-text-to-text``:

1. the model is loaded with the ``AutoModelFor...`` class of the task;
2. ``generate`` inputs are made from the config, seeded: a prompt of ``sequence_length`` token ids
   (and an attention mask); for speech, log-mel features of the encoder's length and a decoder prompt
   of 3 tokens (with one, ``torch.export`` fixes the decode step's cache length at 1); for
   image-text-to-text, an image of the vision config's size and as many image tokens as the model's
   own ``get_image_features`` returns;
3. :class:`~optimum_hierarchy.exporters.transformers_exporter.HierarchyOnnxExporter` runs
   ``export_for_generation`` (``prefill`` and ``decode`` with the cache, or the multimodal
   components), with ``OnnxConfig(dynamic=True, ort_fusions=...)``;
4. ``save_pretrained`` writes transformers' layout (``<component>.onnx`` + ``.onnx.data``,
   ``export.json``, ``config.json``, the model's ``generation_config.json``) into a staging directory
   inside ``OUT``, plus the tokenizer and processor files the model directory has; the files are moved
   into ``OUT`` only when all were written (a directory this call created is removed on failure).
   ``ExportedModel.from_pretrained(OUT)`` loads it;
5. validation: greedy generation through the exported components (loaded back from ``OUT``) equals
   PyTorch's ``generate`` for ``new_tokens`` tokens
   (:func:`~optimum_hierarchy.exporters.generation.check_generation`). Files fused for ``cuda``,
   ``webgpu`` or ``dml`` only run on those providers, so their validation is skipped, with a note.
"""

from __future__ import annotations

__all__ = [
    "GENERATIVE_TASKS",
    "ORT_FUSIONS",
    "GenerationExportResult",
    "GenerationMismatchError",
    "export_generation_with_hierarchy",
]

import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from optimum_hierarchy.annotation.results import AnnotatedFile, HierarchyExportResult
from optimum_hierarchy.atomic import directory_lock
from optimum_hierarchy.errors import HierarchyExportError
from optimum_hierarchy.exporters.export import check_model_source, check_output_dir
from optimum_hierarchy.exporters.generation import GenerationCheck, check_generation
from optimum_hierarchy.passes.attribute_nodes import SUMMARY_META_KEY
from optimum_hierarchy.schema import decode_model_metadata, read_props
from optimum_hierarchy.trees.export_record import manifest_components

logger = logging.getLogger(__name__)

GENERATIVE_TASKS = {
    "text-generation-with-past": "AutoModelForCausalLM",
    "text2text-generation-with-past": "AutoModelForSeq2SeqLM",
    "automatic-speech-recognition-with-past": "AutoModelForSpeechSeq2Seq",
    "image-text-to-text": "AutoModelForImageTextToText",
}
"""The tasks exported with transformers' exporter, and the auto class each loads the model with."""

ORT_FUSIONS = ("cpu", "cuda", "webgpu", "dml")
"""``OnnxConfig.ort_fusions``: fuse into ONNX Runtime's ops for that execution provider."""

PREPROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
)
"""Files of a model directory that belong beside its export (copied when the directory has them)."""


@dataclasses.dataclass(frozen=True)
class GenerationExportResult(HierarchyExportResult):
    """A :class:`HierarchyExportResult` of a generative export: its task, components and generation check."""

    task: str = ""
    components: tuple[str, ...] = ()
    ort_fusions: str | None = None
    generation: GenerationCheck | None = None
    skipped_validation: str | None = None
    """Why the generation check did not run (``None`` when it ran or was not asked for)."""


class GenerationMismatchError(HierarchyExportError):
    """Greedy generation through the exported components differs from PyTorch's; the files are written."""

    def __init__(self, message: str, result: GenerationExportResult) -> None:
        super().__init__(message)
        self.result = result


def export_generation_with_hierarchy(
    model_name_or_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    task: str,
    ort_fusions: str | None = None,
    opset: int | None = None,
    sequence_length: int = 8,
    optimize: bool = True,
    strict: bool = False,
    validate: bool = True,
    new_tokens: int = 5,
    seed: int = 0,
) -> GenerationExportResult:
    """Export a saved generative model with transformers' exporter and the hierarchy into ``output``.

    See the module docstring for the steps. Raises :class:`~optimum_hierarchy.errors.MissingExtraError`
    where transformers has no ``exporters``, :class:`HierarchyExportError` for bad arguments or a failed
    export (nothing is left in ``output``), and :class:`GenerationMismatchError` when the generated tokens
    differ (the files stay, for inspection).
    """
    from optimum_hierarchy.exporters.transformers_exporter import require_transformers_exporters

    require_transformers_exporters()
    if task not in GENERATIVE_TASKS:
        raise HierarchyExportError(f"--task {task}: transformers' exporter path takes {', '.join(GENERATIVE_TASKS)}.")
    if ort_fusions is not None and ort_fusions not in ORT_FUSIONS:
        raise HierarchyExportError(f"--ort-fusions {ort_fusions}: one of {', '.join(ORT_FUSIONS)}.")
    if sequence_length < 2 or new_tokens < 1:
        raise HierarchyExportError(
            f"sequence_length {sequence_length}, new_tokens {new_tokens}: need sequence_length >= 2, new_tokens >= 1."
        )
    check_model_source(model_name_or_path)
    out = check_output_dir(output)
    model = _load(model_name_or_path, task)
    inputs = generation_inputs(model, task, sequence_length=sequence_length, seed=seed)
    exported = _export(model, inputs, ort_fusions=ort_fusions, opset=opset, optimize=optimize, strict=strict)
    files = _save(exported, model_name_or_path, out)
    result = GenerationExportResult(
        output=out,
        files=files,
        task=task,
        components=tuple(exported.components),
        ort_fusions=ort_fusions,
    )
    if not validate:
        return result
    if ort_fusions not in (None, "cpu"):
        return dataclasses.replace(
            result,
            skipped_validation=f"files fused for {ort_fusions} run on that execution provider only, not on this CPU",
        )
    from transformers.exporters import ExportedModel

    check = check_generation(model, ExportedModel.from_pretrained(out), inputs, max_new_tokens=new_tokens)
    result = dataclasses.replace(result, generation=check)
    if not check.ok:
        raise GenerationMismatchError(f"{out}: {check.describe()}. The files are written, for inspection.", result)
    return result


def _load(model_name_or_path: str | os.PathLike[str], task: str) -> Any:
    import transformers

    auto = getattr(transformers, GENERATIVE_TASKS[task])
    try:
        model = auto.from_pretrained(model_name_or_path)
    except (OSError, ValueError, KeyError) as e:
        raise HierarchyExportError(
            f"--model {model_name_or_path}: cannot be loaded with {auto.__name__} for --task {task}: {e}"
        ) from e
    return model.eval()


def generation_inputs(model: Any, task: str, *, sequence_length: int = 8, seed: int = 0) -> dict[str, Any]:
    """Seeded ``generate`` inputs for ``task`` made from the model's config (see the module docstring)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    config = model.config
    text = config.get_text_config(decoder=True)
    vocab = int(getattr(text, "vocab_size", 0) or 0)
    if vocab < 8:
        raise HierarchyExportError(f"{type(model).__name__}: its config names no vocab_size; cannot make a prompt.")
    special = {getattr(config, k, None) for k in ("image_token_id", "image_token_index", "video_token_id")}
    special |= {getattr(text, k, None) for k in ("pad_token_id", "eos_token_id", "bos_token_id")}
    allowed = torch.tensor([t for t in range(vocab) if t not in special])

    def prompt(length: int) -> Any:
        return allowed[torch.randint(0, len(allowed), (1, length), generator=generator)]

    if task == "automatic-speech-recognition-with-past":
        bins = int(config.num_mel_bins)
        frames = 2 * int(getattr(config, "max_source_positions", 1500))
        start = int(config.decoder_start_token_id)
        return {
            "input_features": torch.randn((1, bins, frames), generator=generator),
            "decoder_input_ids": torch.cat([torch.tensor([[start]]), prompt(2)], 1),
        }
    if task == "image-text-to-text":
        return _image_text_inputs(model, prompt(sequence_length), generator)
    ids = prompt(sequence_length)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if task == "text2text-generation-with-past":
        start = int(config.decoder_start_token_id)
        inputs["decoder_input_ids"] = torch.cat([torch.tensor([[start]]), prompt(2)], 1)
    return inputs


def _image_text_inputs(model: Any, text: Any, generator: Any) -> dict[str, Any]:
    import torch

    config = model.config
    vision = getattr(config, "vision_config", None)
    token = getattr(config, "image_token_id", None)
    if token is None:
        token = getattr(config, "image_token_index", None)
    if vision is None or token is None or not hasattr(model, "get_image_features"):
        raise HierarchyExportError(
            f"{type(model).__name__}: image-text-to-text needs a vision_config, an image token id and "
            "get_image_features; this model has not all of them."
        )
    size = vision.image_size if isinstance(vision.image_size, int) else vision.image_size[0]
    channels = int(getattr(vision, "num_channels", 3))
    pixels = torch.randn((1, channels, size, size), generator=generator)
    with torch.no_grad():
        features = model.get_image_features(pixel_values=pixels)
    features = getattr(features, "pooler_output", features)
    tensors = features if isinstance(features, (list, tuple)) else [features]
    count = sum(int(t.reshape(-1, t.shape[-1]).shape[0]) for t in tensors)
    ids = torch.cat([torch.full((1, count), int(token)), text], 1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}


def _export(model: Any, inputs: dict[str, Any], *, ort_fusions: str | None, opset: int | None, **kwargs: Any) -> Any:
    from transformers.exporters import OnnxConfig

    from optimum_hierarchy.exporters.transformers_exporter import HierarchyOnnxExporter

    config = OnnxConfig(dynamic=True, ort_fusions=ort_fusions, opset_version=opset, optimize=kwargs["optimize"])
    exporter = HierarchyOnnxExporter(strict=kwargs["strict"])
    try:  # the model's own generation config (what generate() uses by default), so that it is saved too
        return exporter.export_for_generation(model, inputs, config, generation_config=model.generation_config)
    except HierarchyExportError:
        raise
    except Exception as e:  # the exporter wraps torch.export's many error types; the chain has the cause
        cause: BaseException = e
        while cause.__cause__ is not None and not isinstance(cause, HierarchyExportError):
            cause = cause.__cause__
        if isinstance(cause, HierarchyExportError):
            raise cause from e
        raise HierarchyExportError(
            f"transformers' exporter failed on {type(model).__name__}: {type(e).__name__}: {e}"
            + (f" (caused by {type(cause).__name__}: {cause})" if cause is not e else "")
        ) from e


def _save(exported: Any, source: str | os.PathLike[str], out: Path) -> tuple[AnnotatedFile, ...]:
    """``exported.save_pretrained`` and the model's preprocessor files, staged and then moved into ``out``."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with directory_lock(out), tempfile.TemporaryDirectory(dir=out, prefix=".staging-") as staging:
            stage = Path(staging)
            exported.save_pretrained(stage)
            source_dir = Path(source)
            for name in PREPROCESSOR_FILES:
                if (source_dir / name).is_file():
                    shutil.copy2(source_dir / name, stage / name)
            for file in sorted(stage.iterdir()):
                os.replace(file, out / file.name)
    except OSError as e:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise HierarchyExportError(f"{out}: cannot be written ({e}).") from e
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    files = []
    for name, entry in manifest_components(out).items():
        program = exported.components[name].program
        meta = decode_model_metadata(read_props(program), source=str(out / entry["file"]))
        summary = program.meta.get(SUMMARY_META_KEY) or meta.summary
        if summary is None:  # pragma: no cover - the exporter always leaves one
            raise HierarchyExportError(f"{out / entry['file']}: the export left no attribution summary")
        files.append(AnnotatedFile(out / entry["file"], meta.export.root, summary, meta.export.rules))
    return tuple(files)
