"""Sessions with intermediate tensors as outputs: values against numpy, the proto left as it was, no file left behind.

The graph: ``m = x @ W``, ``r = Relu(m)``, ``y = r + b`` (``W``, ``b`` initializers; ``y`` the only output).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optimum_hierarchy.errors import HierarchyError, InvalidModelFileError
from optimum_hierarchy.tools.runtime import (
    OPTIMIZATION_LEVELS,
    make_session,
    model_file,
    ort_optimization_level,
    run_with_tensors,
)

RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 3)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)
X = RNG.standard_normal((2, 4)).astype(np.float32)


def _model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
            helper.make_node("Relu", ["m"], ["r"], name="relu"),
            helper.make_node("Add", ["r", "b"], ["y"], name="add"),
        ],
        "main",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def _expected() -> dict[str, np.ndarray]:
    m = X @ W
    r = np.maximum(m, 0)
    return {"m": m, "r": r, "y": r + B}


def _with_external_data(directory: Path) -> Path:
    path = directory / "model.onnx"
    onnx.save(_model(), str(path), save_as_external_data=True, size_threshold=0, location="model.onnx_data")
    return path


@pytest.mark.parametrize("level", OPTIMIZATION_LEVELS)
def test_run_with_tensors_gives_intermediate_values(level: str) -> None:
    values = run_with_tensors(_model(), ["r", "m", "y"], {"x": X}, optimization_level=level)
    assert list(values) == ["r", "m", "y"]
    for name, expected in _expected().items():
        np.testing.assert_allclose(values[name], expected, rtol=1e-5, atol=1e-6)


def test_extra_outputs_leave_the_proto_unchanged() -> None:
    proto = _model()
    before = proto.SerializeToString()
    session = make_session(proto, extra_outputs=["m", "y", "m", "r"])
    assert proto.SerializeToString() == before
    # The graph's outputs first, then each extra one once.
    assert [o.name for o in session.get_outputs()] == ["y", "m", "r"]
    values = dict(zip(["y", "m", "r"], session.run(None, {"x": X}), strict=True))
    np.testing.assert_allclose(values["m"], _expected()["m"], rtol=1e-5, atol=1e-6)
    # A session that cannot be made leaves the proto unchanged too.
    with pytest.raises(HierarchyError, match="ONNX Runtime cannot load it"):
        make_session(proto, extra_outputs=["no_such_tensor"])
    assert proto.SerializeToString() == before


def test_external_data_leaves_no_file_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _with_external_data(tmp_path)
    written: list[str] = []
    original = tempfile.NamedTemporaryFile

    def spy(*args: Any, **kwargs: Any) -> Any:
        f = original(*args, **kwargs)
        written.append(f.name)
        return f

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", spy)
    files = sorted(tmp_path.iterdir())
    light = onnx.load(str(path), load_external_data=False)
    before = light.SerializeToString()
    session = make_session(light, extra_outputs=["r"], base_dir=tmp_path)
    assert light.SerializeToString() == before
    # The edited graph went to a file beside the data (ONNX Runtime finds the data from there), now removed.
    assert [Path(n).parent for n in written] == [tmp_path]
    assert sorted(tmp_path.iterdir()) == files
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": X}), strict=True))
    np.testing.assert_allclose(values["r"], _expected()["r"], rtol=1e-5, atol=1e-6)
    # From a path (the data beside it), and when ONNX Runtime refuses the edited graph.
    values = run_with_tensors(path, ["m"], {"x": X})
    np.testing.assert_allclose(values["m"], _expected()["m"], rtol=1e-5, atol=1e-6)
    with pytest.raises(HierarchyError, match="ONNX Runtime cannot load it"):
        make_session(path, extra_outputs=["no_such_tensor"])
    assert len(written) == 3
    assert sorted(tmp_path.iterdir()) == files


def test_a_path_without_extra_outputs_is_loaded_as_it_is(tmp_path: Path) -> None:
    path = _with_external_data(tmp_path)
    session = make_session(path, optimization_level="disable")
    assert [o.name for o in session.get_outputs()] == ["y"]
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(HierarchyError, match=r"broken\.onnx: ONNX Runtime cannot load it"):
        make_session(tmp_path / "broken.onnx")


def test_run_failure_is_a_hierarchy_error() -> None:
    with pytest.raises(HierarchyError, match="ONNX Runtime failed to run the model on the given inputs"):
        run_with_tensors(_model(), ["m"], {"x": np.zeros((2, 5), np.float32)})


def test_model_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFileError, match=r"no \.onnx file in this directory"):
        model_file(tmp_path)
    with pytest.raises(InvalidModelFileError, match="no such file or directory"):
        model_file(tmp_path / "missing.onnx")
    (tmp_path / "a.onnx").write_bytes(b"")
    assert model_file(tmp_path) == tmp_path / "a.onnx"
    assert model_file(tmp_path / "a.onnx") == tmp_path / "a.onnx"
    (tmp_path / "b.onnx").write_bytes(b"")
    with pytest.raises(InvalidModelFileError, match=r"several \.onnx files \(a\.onnx, b\.onnx\)"):
        model_file(tmp_path)


def test_optimization_levels() -> None:
    import onnxruntime as ort

    assert ort_optimization_level("disable") == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert ort_optimization_level("all") == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with pytest.raises(HierarchyError, match="Unknown optimization level 'fast': choose one of disable, basic"):
        ort_optimization_level("fast")
