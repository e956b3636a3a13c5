"""Tiny models for the dynamo tests; their session-scoped exports are the `dynamo_cases` fixture (tests/conftest.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optimum_hierarchy.demo import TINY_MODELS

KINDS = ("bert", "vit", "gpt2", "llama", "convnet")
TORCHSCRIPT_KINDS = ("bert", "vit", "convnet")
"""Without Optimum's patcher the TorchScript exporter cannot trace transformers' vmap-built causal masks."""


class ConvNet(nn.Module):
    """Sequential inside Sequential, BatchNorm, ReLU, and a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
            nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
        )
        self.head = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@dataclasses.dataclass
class DynamoCase:
    kind: str
    model: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    plain: Path
    """torch.onnx.export(dynamo=True, optimize=False): the exporter's own metadata, untouched."""
    plain_optimized: Path
    """torch.onnx.export(dynamo=True): the default, with onnxscript's optimizer."""
    annotated: Path
    """HierarchyPreservingExporter(dynamo=True, optimize=False)."""
    annotated_optimized: Path
    """HierarchyPreservingExporter(dynamo=True): the default, optimized."""
    torchscript: Path
    """HierarchyPreservingExporter(dynamo=False)."""


def build_case_model(kind: str) -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
    import transformers

    torch.manual_seed(0)
    if kind == "convnet":
        model: nn.Module = ConvNet()
        args: tuple[Any, ...] = (torch.randn(2, 3, 8, 8),)
        kwargs: dict[str, Any] = {}
    else:
        config_cls, model_cls, _, config_kwargs = TINY_MODELS[kind]
        model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**config_kwargs))
        ids = torch.randint(0, 500, (2, 8))
        if kind == "vit":
            args, kwargs = (torch.randn(2, 3, 32, 32),), {}
        elif kind == "bert":
            args, kwargs = (ids, torch.ones_like(ids)), {}
        else:
            model.config.use_cache = False  # no past: torch.export cannot take the default cache
            args, kwargs = (ids,), {}
    with torch.no_grad():  # distinct values: equal tensors would be merged into one initializer
        for param in model.parameters():
            param.normal_(0.0, 0.05)
    return model.eval(), args, kwargs
