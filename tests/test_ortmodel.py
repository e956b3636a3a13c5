"""Annotated exports load in ORTModel and give the plain export's outputs; the hierarchy reads back from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support import PAST_LENGTH, SEQUENCE_LENGTH

from optimum_hierarchy import read_hierarchy
from optimum_hierarchy.demo import TINY_MODELS

pytestmark = pytest.mark.optimum_onnx  # Optimum's ONNX export and ORT integration


def inputs_for(name: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if name == "vit":
        return {"pixel_values": torch.randn(2, 3, 32, 32, generator=g)}
    ids = torch.randint(0, 500, (2, SEQUENCE_LENGTH), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize(
    ("name", "class_name", "output"),
    [
        ("vit", "ORTModelForImageClassification", "logits"),
        ("bert", "ORTModelForFeatureExtraction", "last_hidden_state"),
        ("gpt2", "ORTModelForCausalLM", "logits"),
    ],
)
def test_ortmodel_loads_annotated_export(
    name: str, class_name: str, output: str, cli_exports: dict[str, Path], plain_exports: dict[str, Path]
) -> None:
    import optimum.onnxruntime as ortm

    cls = getattr(ortm, class_name)
    annotated = cls.from_pretrained(cli_exports[name])
    plain = cls.from_pretrained(plain_exports[name])
    inputs = inputs_for(name)
    a = getattr(annotated(**inputs), output).numpy()
    b = getattr(plain(**inputs), output).numpy()
    assert a.shape[0] == 2
    assert np.array_equal(a, b)

    hierarchy = read_hierarchy(annotated)  # the documented one-liner
    assert hierarchy.path == cli_exports[name] / "model.onnx"
    assert hierarchy.tree.root.class_name.rpartition(".")[2] == TINY_MODELS[name][1]
    assert all(node.module is not None for node in hierarchy.nodes)
    assert len(hierarchy.tree) > 20


def test_gpt2_generate_matches(cli_exports: dict[str, Path], plain_exports: dict[str, Path]) -> None:
    from optimum.onnxruntime import ORTModelForCausalLM

    ids = torch.randint(0, 500, (1, 4), generator=torch.Generator().manual_seed(1))
    kwargs = {"max_new_tokens": PAST_LENGTH + 2, "do_sample": False, "pad_token_id": 0}
    a = ORTModelForCausalLM.from_pretrained(cli_exports["gpt2"]).generate(ids, **kwargs)
    b = ORTModelForCausalLM.from_pretrained(plain_exports["gpt2"]).generate(ids, **kwargs)
    assert a.shape[1] == 4 + PAST_LENGTH + 2
    assert torch.equal(a, b)
