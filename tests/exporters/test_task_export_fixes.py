"""`hierarchy export` of models the demo's do not cover, and the preprocessor files it writes.

CLIP (text and vision sub-configs: both inputs, images of the vision config's size), Gemma 3 with
sliding-window attention (validation at the real tokens only), Mixtral (the grouped_mm of its experts,
through transformers' ONNX translations) and BERT with and without a tokenizer. Checked against
definitions independent of the package: the PyTorch models' outputs on inputs made here, the configs and
files on disk, and each node's own `pkg.torch.onnx.name_scopes` (dynamo_support). Each model is built
and exported once per session, when a test first asks for it (`-k clip` builds CLIP only), with the
Python API the CLI calls.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from dynamo_support import module_of, name_scope_module, source_of, within
from task_cases import CONFIG_CASES, build_config_case, config_case_missing, load_config_case

from optimum_hierarchy.demo import build_tiny_model
from optimum_hierarchy.exporters.task_export import TaskExportResult, export_task_with_hierarchy

BATCH, SEQUENCE, IMAGES = 3, 11, 4  # not the export's shapes (2, 16, 2)
PADDED = 3  # the last positions of row 0 are padding
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "the"]
MODEL_FILES = {"config.json", "model.safetensors", "generation_config.json"}
"""What save_pretrained writes for a model; the rest of a model directory is its preprocessors."""


class _Exports:
    """Model directories and their exports, each made on first use and kept for the session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[str, Any] = {}

    def _once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._made:
            try:
                self._made[key] = make()
            except Exception as e:  # failed once: every test asking for it fails with the same error
                self._made[key] = e
        made = self._made[key]
        if isinstance(made, Exception):
            raise made
        return made

    def model_dir(self, name: str) -> Path:
        reason = config_case_missing(name) if name in CONFIG_CASES else None
        if reason is not None:
            pytest.skip(reason)
        return self._once(f"model:{name}", lambda: self._build(name))  # type: ignore[no-any-return]

    def _build(self, name: str) -> Path:
        directory = self.root / "models" / name
        if name in CONFIG_CASES:
            build_config_case(name, directory)
        elif name == "bert":
            build_tiny_model("bert", directory)  # config.json and weights only: no tokenizer
        elif name == "bert-tokenizer":
            shutil.copytree(self.model_dir("bert"), directory)
            (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
            import transformers

            transformers.BertTokenizerFast.from_pretrained(directory).save_pretrained(directory)
        else:
            raise KeyError(name)
        return directory

    def result(self, name: str) -> TaskExportResult:
        """``export_task_with_hierarchy`` of the model (its case's task), validated."""
        task = CONFIG_CASES[name].task if name in CONFIG_CASES else "feature-extraction"
        out = self.root / "exports" / name
        return self._once(  # type: ignore[no-any-return]
            f"export:{name}", lambda: export_task_with_hierarchy(self.model_dir(name), out, task=task)
        )

    def output(self, name: str) -> Path:
        return self.result(name).output


@pytest.fixture(scope="session")
def exports(tmp_path_factory: pytest.TempPathFactory) -> _Exports:
    return _Exports(tmp_path_factory.mktemp("task_export_fixes"))


def _config(out: Path) -> dict[str, Any]:
    return json.loads((out / "config.json").read_text())  # type: ignore[no-any-return]


def _feeds(session: ort.InferenceSession, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """Inputs made here: text sized by the text config (CLIP's text_config), images by the vision config."""
    text, vision = config.get("text_config", config), config.get("vision_config", config)
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    for value in session.get_inputs():
        if value.name == "pixel_values":
            size = int(vision["image_size"])
            feeds[value.name] = rng.standard_normal((IMAGES, 3, size, size)).astype(np.float32)
        elif value.name == "input_ids":
            feeds[value.name] = rng.integers(0, int(text["vocab_size"]), (BATCH, SEQUENCE))
        elif value.name == "attention_mask":
            mask = np.ones((BATCH, SEQUENCE), dtype=np.int64)
            mask[0, -PADDED:] = 0
            feeds[value.name] = mask
        elif value.name == "position_ids":
            feeds[value.name] = np.tile(np.arange(SEQUENCE), (BATCH, 1))
        else:
            raise AssertionError(f"unexpected input {value.name}")
    return feeds


def _onnx_and_torch(exports: _Exports, name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], Any]:
    """ONNX Runtime's and PyTorch's outputs (by the file's output names) on the same inputs, and the inputs."""
    out = exports.output(name)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = _feeds(session, _config(out))
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    model = load_config_case(name, exports.model_dir(name))
    kwargs: dict[str, Any] = {k: torch.from_numpy(v) for k, v in feeds.items()}
    if CONFIG_CASES[name].task == "text-generation":
        kwargs["use_cache"] = False
    with torch.no_grad():
        result = model(**kwargs)
    expected = {k: getattr(result, k).numpy() for k in got}
    return got, expected, feeds


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_inputs_and_outputs_are_optimums(exports: _Exports, name: str) -> None:
    """The file's inputs and outputs are those Optimum's OnnxConfig names for the task; CLIP: both inputs."""
    model = onnx.load(str(exports.output(name) / "model.onnx"), load_external_data=False)
    onnx.checker.check_model(model)
    assert {v.name for v in model.graph.input} == set(CONFIG_CASES[name].inputs)
    assert tuple(o.name for o in model.graph.output) == CONFIG_CASES[name].outputs


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_every_node_is_attributed_as_its_own_name_scopes_say(exports: _Exports, name: str) -> None:
    """100% attributed; a kept node at the deepest module of its own name_scopes, a fused one at a module that
    holds the module of the node it started from (as in test_task_export)."""
    model = onnx.load(str(exports.output(name) / "model.onnx"), load_external_data=False)
    assert model.graph.node
    wrong = []
    for node in model.graph.node:
        module, scoped = module_of(node), name_scope_module(node)
        assert module is not None, f"{node.name} ({node.op_type}) is not attributed"
        if scoped is not None and not (within(scoped, module) if source_of(node) == "fusion" else module == scoped):
            wrong.append((node.name, module, scoped))
    assert not wrong


@pytest.mark.parametrize("name", ["clip", "clip-image", "mixtral"])
def test_runs_at_other_shapes_and_matches_pytorch(exports: _Exports, name: str) -> None:
    """Every output, every position, at other batch sizes (CLIP: 3 texts, one padded, against 4 images) than the
    export's, with images of the size in config.json's vision_config."""
    got, expected, _ = _onnx_and_torch(exports, name)
    assert set(got) == set(CONFIG_CASES[name].outputs)
    for output, value in got.items():
        assert value.shape == expected[output].shape, output
        np.testing.assert_allclose(value, expected[output], atol=1e-4, rtol=0, err_msg=output)
    if name == "clip":
        assert got["logits_per_image"].shape == (IMAGES, BATCH)  # the text and image batches are independent


def test_clip_dummy_images_have_the_vision_config_size(exports: _Exports) -> None:
    """CLIPForImageClassification keeps image_size in vision_config (32 here, Optimum's default is 64): the export
    and its validation ran on images the model accepts, and the file runs on that size."""
    out = exports.output("clip-image")
    config = _config(out)
    assert "image_size" not in config and config["vision_config"]["image_size"] == 32
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    (pixels,) = model.graph.input
    dims = [d.dim_value or d.dim_param for d in pixels.type.tensor_type.shape.dim]
    assert all(d in (32, name) for d, name in zip(dims[2:], ("height", "width"), strict=True)), dims
    assert exports.result("clip-image").validation is not None and exports.result("clip-image").validation.ok


def test_validation_compares_the_real_tokens_of_a_sliding_window_model(exports: _Exports) -> None:
    """Gemma 3 with a one-token sliding window: a padded query attends to nothing, and there ONNX Runtime and
    PyTorch legitimately disagree (checked here, so the case is real); at the real tokens they agree, so the
    export validates (with the padded positions compared it failed)."""
    result = exports.result("gemma3")
    assert result.validation is not None and result.validation.ok
    got, expected, feeds = _onnx_and_torch(exports, "gemma3")
    real = feeds["attention_mask"].astype(bool)
    assert not real.all()
    np.testing.assert_allclose(got["logits"][real], expected["logits"][real], atol=1e-4, rtol=0)
    assert np.abs(got["logits"][~real] - expected["logits"][~real]).max() > 1e-4


def test_validation_is_reproducible_and_leaves_the_random_state(exports: _Exports, tmp_path: Path) -> None:
    """Two exports of one model validate on the same inputs (the same differences, to the bit), and neither moves
    the caller's random generators."""
    source = exports.model_dir("bert")  # built first: building seeds torch
    torch.manual_seed(1234)
    random.seed(1234)
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    first = exports.result("bert")
    second = export_task_with_hierarchy(source, tmp_path / "again", task="feature-extraction")
    assert first.validation is not None and second.validation is not None
    assert first.validation.max_abs_diff == second.validation.max_abs_diff
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state


def test_mixtral_experts_are_exported_and_attributed(exports: _Exports) -> None:
    """Mixtral's experts (transformers 5: grouped_mm, translated by transformers' own table) are in the file: the
    matrix products of each layer's experts sit at that layer's experts module."""
    out = exports.output("mixtral")
    layers = int(_config(out)["num_hidden_layers"])
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    for layer in range(layers):
        experts = f"model.layers.{layer}.mlp.experts"
        assert any(n.op_type == "MatMul" and within(module_of(n) or "-", experts) for n in model.graph.node), experts


def _preprocessor_files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()} - MODEL_FILES - {"model.onnx"}


def test_no_tokenizer_is_made_up(exports: _Exports) -> None:
    """A model directory without a tokenizer gives an output without one (transformers 5 would make one up)."""
    assert _preprocessor_files(exports.model_dir("bert")) == set()
    assert _preprocessor_files(exports.output("bert")) == set()


def test_a_real_tokenizer_is_written(exports: _Exports) -> None:
    """A model directory with a tokenizer gives an output with it: only files the directory has, holding the
    vocabulary written here, and it encodes as that vocabulary says."""
    import transformers

    source, out = exports.model_dir("bert-tokenizer"), exports.output("bert-tokenizer")
    written = _preprocessor_files(out)
    assert written and written <= _preprocessor_files(source)
    assert json.loads((out / "tokenizer.json").read_text())["model"]["vocab"] == {w: i for i, w in enumerate(VOCAB)}
    ids = transformers.AutoTokenizer.from_pretrained(out)("hello the world")["input_ids"]
    assert ids == [VOCAB.index(w) for w in ("[CLS]", "hello", "the", "world", "[SEP]")]
