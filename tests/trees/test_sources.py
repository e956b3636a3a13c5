"""The order of the tree sources for a file nobody annotated (``optimum_hierarchy/trees/sources.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from optimum_hierarchy.trees.base import FileEvidence, FoundTree
from optimum_hierarchy.trees.sources import SOURCES, tree_of_file

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
CLASSES = "pkg.torch.onnx.class_hierarchy"


def graph_file(tmp_path: Path, *, dynamo: bool) -> tuple[Path, onnx.ModelProto]:
    init = [helper.make_tensor("encoder.dense.weight", TensorProto.FLOAT, [1], [1.0])]
    node = helper.make_node("Mul", ["x", "encoder.dense.weight"], ["y"], name="/encoder/dense/Mul")
    if dynamo:
        helper.set_metadata_props(
            node,
            {NAME_SCOPES: "['', 'encoder', 'encoder.dense', 'mul']", CLASSES: "['M', 'E', 'D', 'aten.mul.Tensor']"},
        )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        init,
    )
    proto = helper.make_model(graph)
    path = tmp_path / "model.onnx"
    onnx.save(proto, str(path))
    return path, proto


def test_every_source_but_the_last_may_decline(tmp_path: Path) -> None:
    path, proto = graph_file(tmp_path, dynamo=False)
    evidence = FileEvidence(path, proto, None, [{}], dynamo=False)
    answers = [source(evidence) for source in SOURCES]
    assert answers[:-1] == [None] * (len(SOURCES) - 1)
    assert isinstance(answers[-1], FoundTree)


def test_names_then_dynamo_metadata(tmp_path: Path) -> None:
    path, proto = graph_file(tmp_path, dynamo=False)
    found = tree_of_file(path, proto, None)
    assert found.origin == "the graph's names" and found.root == ""
    assert set(found.tree) == {"", "encoder", "encoder.dense"}
    path, proto = graph_file(tmp_path, dynamo=True)
    found = tree_of_file(path, proto, None)
    assert found.origin == "the dynamo exporter's node metadata"
    assert found.tree["encoder.dense"].class_name == "D"


def test_a_config_beside_the_file_comes_before_the_names(tmp_path: Path) -> None:
    path, proto = graph_file(tmp_path, dynamo=False)
    config = {"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2}
    config |= {"intermediate_size": 8, "vocab_size": 16, "max_position_embeddings": 8}
    (tmp_path / "config.json").write_text(json.dumps(config))
    found = tree_of_file(path, proto, None)
    assert found.origin == str(tmp_path / "config.json") and found.model_type == "bert"
    assert "encoder.layer.0.attention" in found.tree
