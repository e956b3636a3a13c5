"""Calibration inputs of ``hierarchy sensitivity``: text through the saved tokenizer, images through the saved
image processor, an ``.npz``; and bad input, each through the real CLI: exit 1, a message naming the argument or
file and what to do, nothing written.

The tiny models have no tokenizer (no hub): a WordLevel tokenizer is built here with ``tokenizers`` and saved
beside a copy of the export. What the text should become is worked out here from its vocabulary (ids, right
padding, the mask, positions as ``cumsum - 1``), and the images from the processor's documented steps (rescale
by 1/255, normalize with mean and std 0.5, channels first), not by the code under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support import run_cli

pytestmark = pytest.mark.cli

WORDS = ("the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away")
VOCAB = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
TEXTS = ("the cat sat on the mat", "a dog ran", "the zebra ran far away")


def _with_tokenizer(export: Path, target: Path) -> Path:
    """A copy of the export's model.onnx and config.json, with a WordLevel tokenizer saved beside them."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    target.mkdir()
    for name in ("model.onnx", "config.json"):
        shutil.copy(export / name, target / name)
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(
        str(target)
    )
    return target / "model.onnx"


def _expected_text_feeds(texts: tuple[str, ...], inputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    ids = [[VOCAB.get(w, VOCAB["[UNK]"]) for w in text.split()] for text in texts]
    length = max(len(row) for row in ids)
    input_ids = np.array([row + [VOCAB["[PAD]"]] * (length - len(row)) for row in ids], dtype=np.int64)
    mask = np.array([[1] * len(row) + [0] * (length - len(row)) for row in ids], dtype=np.int64)
    positions = np.where(mask == 0, 1, np.cumsum(mask, axis=-1) - 1).astype(np.int64)
    every = {
        "input_ids": input_ids,
        "attention_mask": mask,
        "token_type_ids": np.zeros_like(input_ids),
        "position_ids": positions,
    }
    return {name: every[name] for name in inputs}


def _same_report(cli: dict, api: dict) -> None:  # type: ignore[type-arg]
    assert cli["inputs"] == api["inputs"]
    assert [m["module"] for m in cli["modules"]] == [m["module"] for m in api["modules"]]
    for got, want in zip(cli["modules"], api["modules"], strict=True):
        for key, value in want["metrics"].items():
            assert got["metrics"][key] == pytest.approx(value, rel=1e-9, abs=1e-15), (got["module"], key)


def test_text_is_tokenized_by_the_saved_tokenizer(task_exports: dict[str, Path], tmp_path: Path) -> None:
    from optimum_hierarchy.tools.sensitivity import module_sensitivity

    model = _with_tokenizer(task_exports["llama"], tmp_path / "llama")
    expected = _expected_text_feeds(TEXTS, ("input_ids", "attention_mask", "position_ids"))
    assert expected["attention_mask"].sum() < expected["attention_mask"].size  # padded: the mask matters
    api = module_sensitivity(model, precision="int8", feeds=expected).to_json()
    assert api["inputs"] == {"input_ids": [3, 6], "attention_mask": [3, 6], "position_ids": [3, 6]}

    by_text = json.loads(run_cli("hierarchy", "sensitivity", str(model), "--int8", "--json", "--text", *TEXTS).stdout)
    _same_report(by_text, api)
    samples = tmp_path / "samples.txt"
    samples.write_text("\n".join(TEXTS[:1]) + "\n\n  \n" + "\n".join(TEXTS[1:]) + "\n", encoding="utf-8")
    by_file = json.loads(
        run_cli("hierarchy", "sensitivity", str(model), "--int8", "--json", "--texts", str(samples)).stdout
    )
    _same_report(by_file, api)


def test_bert_takes_the_tokenizer_token_type_ids(task_exports: dict[str, Path], tmp_path: Path) -> None:
    from optimum_hierarchy.tools.calibration import text_feeds

    model = _with_tokenizer(task_exports["bert"], tmp_path / "bert")
    feeds = text_feeds(model, TEXTS[:2])
    expected = _expected_text_feeds(TEXTS[:2], ("input_ids", "attention_mask", "token_type_ids"))
    assert feeds.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(feeds[name], value, err_msg=name)


def test_images_are_processed_by_the_saved_processor(task_exports: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("PIL", reason="reading images needs Pillow")
    from PIL import Image
    from transformers import ViTImageProcessor

    from optimum_hierarchy.tools.sensitivity import module_sensitivity

    directory = tmp_path / "vit"
    directory.mkdir()
    for name in ("model.onnx", "config.json"):
        shutil.copy(task_exports["vit"] / name, directory / name)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        str(directory)
    )
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    paths = []
    for i, array in enumerate(pixels):
        Image.fromarray(array).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    expected = np.stack([((p.astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1) for p in pixels])
    api = module_sensitivity(directory / "model.onnx", precision="fp16", feeds={"pixel_values": expected}).to_json()
    cli = json.loads(
        run_cli(
            "hierarchy", "sensitivity", str(directory / "model.onnx"), "--fp16", "--json", "--images", *paths
        ).stdout
    )
    assert cli["inputs"] == {"pixel_values": [2, 3, 32, 32]}
    _same_report(cli, api)


def _bad_inputs(case: str, tmp_path: Path, bert: Path) -> tuple[list[str], list[str]]:
    """The arguments of one bad call, and what its message must say."""
    good = {
        "input_ids": np.ones((1, 4), dtype=np.int64),
        "attention_mask": np.ones((1, 4), dtype=np.int64),
        "token_type_ids": np.zeros((1, 4), dtype=np.int64),
    }
    npz = tmp_path / f"{case}.npz"
    if case == "empty npz":
        np.savez(npz)
        return ["--inputs", str(npz)], [str(npz), "holds no array"]
    if case == "empty text file":
        path = tmp_path / "empty.txt"
        path.write_text("\n   \n", encoding="utf-8")
        return ["--texts", str(path)], [str(path), "has no sample"]
    if case == "missing input":
        np.savez(npz, **{k: v for k, v in good.items() if k != "attention_mask"})
        return ["--inputs", str(npz)], [str(npz), "no array for the input 'attention_mask'"]
    if case == "extra input":
        np.savez(npz, **good, pixel_values=np.zeros((1, 3), dtype=np.float32))
        return ["--inputs", str(npz)], [str(npz), "'pixel_values' is not an input of the model"]
    if case == "wrong dtype":
        np.savez(npz, **{**good, "input_ids": good["input_ids"].astype(np.int32)})
        return ["--inputs", str(npz)], [str(npz), "'input_ids' is int32, the model takes int64"]
    if case == "wrong rank":
        np.savez(npz, **{**good, "attention_mask": np.ones(4, dtype=np.int64)})
        return ["--inputs", str(npz)], [str(npz), "'attention_mask' has 1 dimensions [4]; the model takes 2"]
    if case == "no such npz":
        return ["--inputs", str(npz)], [str(npz), "no such file"]
    if case == "block size without int4":
        return ["--block-size", "32"], ["--block-size 32: int4's block size; --int8 has none"]
    if case == "no tokenizer":
        return ["--text", "the cat"], ["--text", f"no tokenizer in {bert.parent}", "save_pretrained"]
    if case == "no image processor":
        image = tmp_path / "x.png"
        image.write_bytes(b"")
        return ["--images", str(image)], ["--images", f"no image processor in {bert.parent}", "save_pretrained"]
    raise AssertionError(case)


BAD = (
    "empty npz",
    "empty text file",
    "missing input",
    "extra input",
    "wrong dtype",
    "wrong rank",
    "no such npz",
    "block size without int4",
    "no tokenizer",
    "no image processor",
)


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_exit_1_with_a_clear_message_and_nothing_written(
    task_exports: dict[str, Path], tmp_path: Path, case: str
) -> None:
    bert = task_exports["bert"] / "model.onnx"
    arguments, said = _bad_inputs(case, tmp_path, bert)
    explorer = tmp_path / "node_data.json"
    completed = run_cli(
        "hierarchy", "sensitivity", str(bert), "--int8", "--json", "--model-explorer", str(explorer), *arguments,
        check=False,
    )  # fmt: skip
    message = " ".join(completed.stderr.split())
    assert completed.returncode == 1, completed.stderr
    for part in said:
        assert part in message, (part, message)
    assert "Traceback" not in completed.stderr and not completed.stdout
    assert not explorer.exists()
