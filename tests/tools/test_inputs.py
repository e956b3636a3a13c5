"""Generated inputs on hand-built graphs: names, shapes, dtypes, value ranges, and errors for what cannot be filled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.tools.inputs import generate_inputs, input_dimensions, parse_shapes

# Optimum's DEFAULT_DUMMY_SHAPES, as the module docstring promises them, and our past length.
BATCH, SEQUENCE, PAST = 2, 16, 8


def _model(inputs: list[onnx.ValueInfoProto], vocab_rows: int | None = None) -> onnx.ModelProto:
    """A graph with these inputs; ``input_ids`` indexes an embedding table of ``vocab_rows`` rows when given."""
    nodes, initializers = [], []
    if vocab_rows is not None:
        initializers.append(
            helper.make_tensor("embeddings.weight", TensorProto.FLOAT, [vocab_rows, 4], [0.0] * vocab_rows * 4)
        )
        nodes.append(helper.make_node("Gather", ["embeddings.weight", "input_ids"], ["h"], name="/embeddings/Gather"))
    graph = helper.make_graph(nodes, "main", inputs, [], initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _input(name: str, elem_type: int, shape: list[int | str | None]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


TEXT = [
    _input("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    _input("attention_mask", TensorProto.INT64, ["batch_size", "past_sequence_length + sequence_length"]),
    _input("token_type_ids", TensorProto.INT32, ["batch_size", "sequence_length"]),
    _input("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    _input("past_key_values.0.key", TensorProto.FLOAT16, ["batch_size", 2, "past_sequence_length", 4]),
]


def test_text_inputs_from_defaults() -> None:
    feeds = generate_inputs(_model(TEXT, vocab_rows=50))
    assert list(feeds) == [v.name for v in TEXT]
    shapes = {n: v.shape for n, v in feeds.items()}
    assert shapes == {
        "input_ids": (BATCH, SEQUENCE),
        "attention_mask": (BATCH, PAST + SEQUENCE),  # a sum of dimensions is evaluated
        "token_type_ids": (BATCH, SEQUENCE),
        "position_ids": (BATCH, SEQUENCE),
        "past_key_values.0.key": (BATCH, 2, PAST, 4),
    }
    dtypes = {n: v.dtype for n, v in feeds.items()}
    assert dtypes == {
        "input_ids": np.int64,
        "attention_mask": np.int64,
        "token_type_ids": np.int32,
        "position_ids": np.int64,
        "past_key_values.0.key": np.float16,
    }
    ids = feeds["input_ids"]
    assert ids.min() >= 0 and ids.max() < 50 and len(np.unique(ids)) > 1  # below the table the ids index
    assert (feeds["attention_mask"] == 1).all()
    assert (feeds["token_type_ids"] == 0).all()
    # Positions continue after the past (the model takes past key values).
    assert (feeds["position_ids"] == np.arange(PAST, PAST + SEQUENCE)).all()
    assert np.isfinite(feeds["past_key_values.0.key"]).all() and feeds["past_key_values.0.key"].std() > 0


def test_shapes_win_and_static_dimensions_stay() -> None:
    model = _model([_input("input_ids", TensorProto.INT64, ["batch_size", "sequence_length", 3])], vocab_rows=5)
    feeds = generate_inputs(model, shapes={"batch_size": 1, "sequence_length": 7})
    assert feeds["input_ids"].shape == (1, 7, 3)
    # Without past key values, positions start at 0.
    positions = generate_inputs(_model([_input("position_ids", TensorProto.INT64, [1, 4])]))["position_ids"]
    assert (positions == [[0, 1, 2, 3]]).all()


def test_token_ids_bound_without_a_table() -> None:
    model = _model([_input("input_ids", TensorProto.INT64, [64, 64])])
    from_config = generate_inputs(model, config={"vocab_size": 3})["input_ids"]
    assert set(np.unique(from_config)) == {0, 1, 2}
    assert set(np.unique(generate_inputs(model)["input_ids"])) == {0, 1}  # nothing says: 0 and 1 only


def test_image_inputs_from_config(tmp_path: Path) -> None:
    model = _model([_input("pixel_values", TensorProto.FLOAT, ["batch_size", "num_channels", "height", "width"])])
    feeds = generate_inputs(model, config={"image_size": 8, "num_channels": 1})
    assert feeds["pixel_values"].shape == (BATCH, 1, 8, 8) and feeds["pixel_values"].dtype == np.float32
    # The config.json beside the model file is read by default; a pair gives height and width.
    onnx.save(model, str(tmp_path / "model.onnx"))
    (tmp_path / "config.json").write_text(json.dumps({"image_size": [6, 10]}))
    assert generate_inputs(tmp_path / "model.onnx")["pixel_values"].shape == (BATCH, 3, 6, 10)
    assert input_dimensions({"image_size": [6, 10]}, {"width": 4})["width"] == 4
    with pytest.raises(HierarchyError, match="no such config file"):
        generate_inputs(tmp_path / "model.onnx", config=tmp_path / "missing.json")


def test_bool_inputs_initializers_and_seed() -> None:
    model = _model([_input("x", TensorProto.FLOAT, [3]), _input("flag", TensorProto.BOOL, [2])])
    model.graph.initializer.append(helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0]))
    model.graph.input.append(_input("w", TensorProto.FLOAT, [1]))  # an initializer listed as input: not fed
    feeds = generate_inputs(model, seed=1)
    assert list(feeds) == ["x", "flag"]
    assert feeds["flag"].dtype == np.bool_ and feeds["flag"].all()
    assert (generate_inputs(model, seed=1)["x"] == feeds["x"]).all()
    assert not (generate_inputs(model, seed=2)["x"] == feeds["x"]).all()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            _input("input_ids", TensorProto.INT64, ["batch_size", "n_tokens"]),
            r"dimension 'n_tokens' .*--shape n_tokens=N",
        ),
        (
            _input("mask", TensorProto.INT64, ["sequence_length + extra"]),
            r"dimension 'extra' .*shapes=\{'extra': N\}",
        ),
        (_input("x", TensorProto.FLOAT, [None]), r"dimension '\(unnamed\)'"),
        (_input("s", TensorProto.STRING, [1]), "has type object; inputs cannot be generated"),
        (
            helper.make_value_info("seq", helper.make_sequence_type_proto(helper.make_tensor_type_proto(1, [1]))),
            "not a tensor",
        ),
    ],
)
def test_inputs_that_cannot_be_generated(value: onnx.ValueInfoProto, message: str) -> None:
    with pytest.raises(HierarchyError, match=message):
        generate_inputs(_model([value]))


def test_parse_shapes() -> None:
    assert parse_shapes(["batch_size=1", " sequence_length = 128"]) == {"batch_size": 1, "sequence_length": 128}
    assert parse_shapes([]) == {}
    for bad in ("batch_size", "batch_size=-1", "1a=3", "a=b", "=3", "a=1.5"):
        with pytest.raises(HierarchyError, match="expected NAME=VALUE with a non-negative integer"):
            parse_shapes([bad])
