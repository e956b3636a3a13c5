"""HierarchyPreservingExporter: any nn.Module, including the TorchScript scope quirks."""

from __future__ import annotations

import collections
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from optimum_hierarchy import HierarchyPreservingExporter, read_hierarchy
from optimum_hierarchy.errors import HierarchyExportError


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        return self.act(x - 0.5)  # the same module called twice


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(Block(), Block())
        self.head = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer1(x).flatten(1))


def test_any_module_with_scope_quirks(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Net()
    onnx_model, tree = HierarchyPreservingExporter().export_with_hierarchy(
        model, torch.randn(1, 3, 4, 4), tmp_path / "net.onnx", dynamo=False
    )
    assert isinstance(onnx_model, onnx.ModelProto)
    assert list(tree) == [p for p, _ in model.named_modules()]
    onnx.checker.check_model(onnx_model, full_check=True)
    nodes = read_hierarchy(tmp_path / "net.onnx").nodes
    names = [n.name for n in nodes]
    # The quirks are really there: a repeated container level and a call suffix.
    assert any(n.startswith("/layer1/layer1.0/") for n in names), names
    assert any("/act_1/" in n for n in names), names
    counts = collections.Counter((n.module, n.op_type) for n in nodes)
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            assert counts[(path, "Conv")] == 1, path
        if isinstance(module, nn.ReLU):
            assert counts[(path, "Relu")] == 2, path  # both calls
        if isinstance(module, nn.Linear):
            assert counts[(path, "Gemm")] + counts[(path, "MatMul")] == 1
    assert all(n.module is not None for n in nodes)


def test_the_dynamo_exporter_by_default(tmp_path: Path) -> None:
    """torch.onnx.export's default; a module called twice has both calls, each Conv2d its Conv (at the LCA of
    the Conv and nothing else: onnxscript folds nothing here)."""
    torch.manual_seed(0)
    model = Net()
    _, tree = HierarchyPreservingExporter().export_with_hierarchy(model, torch.randn(1, 3, 4, 4), tmp_path / "n.onnx")
    assert list(tree) == [p for p, _ in model.named_modules()]
    nodes = read_hierarchy(tmp_path / "n.onnx").nodes
    assert nodes and all(n.source == "metadata" for n in nodes)
    counts = collections.Counter((n.module, n.op_type) for n in nodes)
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            assert counts[(path, "Conv")] == 1, path
        if isinstance(module, nn.ReLU):
            assert counts[(path, "Relu")] == 2, path
        if isinstance(module, nn.Linear):
            assert counts[(path, "Gemm")] + counts[(path, "MatMul")] == 1


def test_errors_leave_nothing_behind(tmp_path: Path) -> None:
    exporter = HierarchyPreservingExporter()
    with pytest.raises(HierarchyExportError, match="does not exist"):
        exporter.export_with_hierarchy(Net(), torch.randn(1, 3, 4, 4), tmp_path / "missing" / "net.onnx")
    with pytest.raises(HierarchyExportError, match="dynamic_shapes"):
        exporter.export_with_hierarchy(
            Net(), torch.randn(1, 3, 4, 4), tmp_path / "net.onnx", dynamo=True, dynamic_axes={"x": {0: "b"}}
        )
    with pytest.raises(HierarchyExportError, match="optimize"):
        exporter.export_with_hierarchy(
            Net(), torch.randn(1, 3, 4, 4), tmp_path / "net.onnx", dynamo=False, optimize=True
        )
    for dynamo in (False, True):
        with pytest.raises(Exception):  # noqa: B017 - torch's own error for a wrong input shape
            exporter.export_with_hierarchy(Net(), torch.randn(1, 2, 4, 4), tmp_path / "net.onnx", dynamo=dynamo)
    assert list(tmp_path.iterdir()) == []
