"""Annotating files on disk: bad input, idempotence, no stray files."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from optimum_hierarchy import annotate_file, read_hierarchy
from optimum_hierarchy.annotation.file import annotate_proto, write_annotated
from optimum_hierarchy.errors import HierarchyError, InvalidModelFileError, MissingHierarchyError
from optimum_hierarchy.passes.attribute_nodes import Mode
from optimum_hierarchy.schema import ModuleInfo, ModuleTree


def test_annotating_again_changes_nothing(cli_exports: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    shutil.copy(cli_exports["bert"] / "model.onnx", path)
    before = path.read_bytes()
    stat = path.stat()
    hierarchy = read_hierarchy(path)
    summary = annotate_file(path, hierarchy.tree, hierarchy.export)
    assert summary.attributed == summary.nodes > 100
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == stat.st_mtime_ns  # not even rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_plain_export_can_be_annotated_afterwards(
    plain_exports: dict[str, Path], cli_exports: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "model.onnx"
    shutil.copy(plain_exports["vit"] / "model.onnx", path)
    with pytest.raises(MissingHierarchyError, match="--hierarchy"):
        read_hierarchy(path)
    reference = read_hierarchy(cli_exports["vit"] / "model.onnx")
    annotate_file(path, reference.tree, reference.export)
    assert read_hierarchy(path).nodes == reference.nodes


def test_the_bytes_an_exporter_is_about_to_write_are_written_annotated(
    plain_exports: dict[str, Path], cli_exports: dict[str, Path], tmp_path: Path
) -> None:
    reference = read_hierarchy(cli_exports["vit"] / "model.onnx")
    for name, exported in (("plain", plain_exports), ("annotated", cli_exports)):
        path = tmp_path / name / "model.onnx"
        path.parent.mkdir()
        summary = write_annotated((exported["vit"] / "model.onnx").read_bytes(), path, reference.tree, reference.export)
        assert summary.attributed == summary.nodes > 100
        assert read_hierarchy(path).nodes == reference.nodes, name  # written even when nothing changed
        assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]


def test_after_the_optimizer_needs_provenance() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="/Relu")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    with pytest.raises(ValueError, match="provenance"):
        annotate_proto(helper.make_model(graph), ModuleTree([ModuleInfo("", "Root")]), mode=Mode.AFTER_OPTIMIZER)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"this is not protobuf \xff\xfe", "not an ONNX model"),
        (b"", "not an ONNX model"),  # parses as an empty ModelProto
    ],
)
def test_bad_files(tmp_path: Path, content: bytes | None, message: str, cli_exports: dict[str, Path]) -> None:
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    tree = read_hierarchy(cli_exports["vit"] / "model.onnx").tree
    with pytest.raises(InvalidModelFileError, match=message) as info:
        annotate_file(path, tree)
    assert str(path) in str(info.value)
    with pytest.raises(InvalidModelFileError):
        read_hierarchy(path)
    if content is not None:
        assert path.read_bytes() == content


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HierarchyError, match="is a directory"):
        read_hierarchy(tmp_path)
    with pytest.raises(InvalidModelFileError, match="not a file"):
        annotate_file(
            tmp_path,
            read_hierarchy.__globals__["schema"].ModuleTree([read_hierarchy.__globals__["schema"].ModuleInfo("", "R")]),
        )


def test_valid_protobuf_model_without_graph(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(onnx.ModelProto(ir_version=8), str(path))
    with pytest.raises(InvalidModelFileError, match="no graph"):
        read_hierarchy(path)


def test_written_files_keep_normal_permissions(
    cli_exports: dict[str, Path], plain_exports: dict[str, Path], tmp_path: Path
) -> None:
    """Atomic writes go through a 0o600 temporary file; the result must not keep that mode."""
    for name in ("vit", "bert", "gpt2"):
        annotated = (cli_exports[name] / "model.onnx").stat().st_mode & 0o777
        plain = (plain_exports[name] / "model.onnx").stat().st_mode & 0o777
        assert annotated == plain, name
    path = tmp_path / "model.onnx"
    shutil.copy(plain_exports["bert"] / "model.onnx", path)
    path.chmod(0o640)
    from optimum_hierarchy import annotate_hierarchy

    annotate_hierarchy(path)
    assert read_hierarchy(path).metadata.summary is not None
    assert path.stat().st_mode & 0o777 == 0o640
