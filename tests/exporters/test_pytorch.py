"""HierarchyPreservingExporter: any nn.Module, including the TorchScript scope quirks."""

from __future__ import annotations

import collections
import json
import logging
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from support import load_torch_model
from torch import nn

from optimum_hierarchy import HierarchyPreservingExporter, read_hierarchy
from optimum_hierarchy.errors import AttributionError, HierarchyExportError


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


EXPORT_KEY = "pkg.optimum_hierarchy.export"


def export_record(path: Path) -> dict[str, Any]:
    """The export record a file carries, read with plain onnx and json."""
    proto = onnx.load(str(path), load_external_data=False)
    (value,) = [p.value for p in proto.metadata_props if p.key == EXPORT_KEY]
    record: dict[str, Any] = json.loads(value)
    return record


def bert_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 500, (2, 8), generator=torch.Generator().manual_seed(0))
    return ids, torch.ones_like(ids)


def test_torchscript_export_records_the_rules_and_checks_repeated_blocks(
    model_dirs: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As in Optimum's pipeline: the rules of BERT are recorded, and their repeated-block check runs on the
    export (a warning, or with strict an error and no file)."""
    model = load_torch_model("bert", model_dirs["bert"])
    exporter = HierarchyPreservingExporter(strict=True)
    exporter.export_with_hierarchy(model, bert_inputs(), tmp_path / "bert.onnx", dynamo=False)
    record = export_record(tmp_path / "bert.onnx")
    assert record["rules"] == "bert" and record["model_type"] == "bert" and record["root"] == ""
    assert record["model_class"] == f"{type(model).__module__}.{type(model).__qualname__}"

    # The second layer's activation gone: its nodes are missing from encoder.layer.1 only.
    model.encoder.layer[1].intermediate.intermediate_act_fn = nn.Identity()
    with pytest.raises(AttributionError, match=r"repeated blocks of 'bert'.*encoder\.layer\.1 differs"):
        exporter.export_with_hierarchy(model, bert_inputs(), tmp_path / "uneven.onnx", dynamo=False)
    assert not (tmp_path / "uneven.onnx").exists()
    with caplog.at_level(logging.WARNING, logger="optimum_hierarchy"):
        HierarchyPreservingExporter().export_with_hierarchy(
            model, bert_inputs(), tmp_path / "uneven.onnx", dynamo=False
        )
    assert "encoder.layer.1 differs from encoder.layer.0" in caplog.text
    assert export_record(tmp_path / "uneven.onnx")["rules"] == "bert"


def test_repeated_block_check_ignores_weights_stored_once(tmp_path: Path) -> None:
    """A freshly initialized BERT has equal parameters (zero biases, LayerNorm weights of one) that the
    exporter stores once, reading the others through Identity nodes; those differ between blocks by
    chance of the values, and the strict check must not take them for a difference of structure."""
    import onnx
    import transformers

    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128)
    model = transformers.BertModel(config).eval()  # as initialized: biases 0, LayerNorm weights 1
    path = tmp_path / "fresh.onnx"
    HierarchyPreservingExporter(strict=True).export_with_hierarchy(model, bert_inputs(), path, dynamo=False)

    proto = onnx.load(str(path))
    weights = {i.name for i in proto.graph.initializer}
    aliases: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type == "Identity" and node.input[0] in weights:
            module = {p.key: p.value for p in node.metadata_props}["pkg.optimum_hierarchy.module"]
            layer = next((f"layer.{i}" for i in range(2) if f"encoder.layer.{i}." in module), "other")
            aliases[layer] = aliases.get(layer, 0) + 1
    assert aliases.get("layer.0", 0) != aliases.get("layer.1", 0), aliases  # the case this test is about
    assert export_record(path)["rules"] == "bert"


def test_export_record_is_the_optimum_pipelines(
    model_dirs: dict[str, Path], cli_exports: dict[str, Path], tmp_path: Path
) -> None:
    """The same model exported with HierarchyPreservingExporter and with optimum-cli --hierarchy: the same record."""
    model = load_torch_model("bert", model_dirs["bert"])
    HierarchyPreservingExporter().export_with_hierarchy(model, bert_inputs(), tmp_path / "bert.onnx", dynamo=False)
    expected = export_record(cli_exports["bert"] / "model.onnx")
    assert expected["rules"] == "bert"
    assert export_record(tmp_path / "bert.onnx") == expected
