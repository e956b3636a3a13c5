"""The names 0.2 renamed still work for one release: each warns and does what its new name does."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import onnx
import pytest

import optimum_hierarchy
from optimum_hierarchy import annotate, restore
from optimum_hierarchy.read import read_hierarchy
from optimum_hierarchy.wire import read_model_file

RENAMED = {  # old name -> new name, as the README's "Deprecated names" lists them
    "optimum_hierarchy.restore_hierarchy": "optimum_hierarchy.annotate_hierarchy",
    "optimum_hierarchy.annotate_onnx_file": "optimum_hierarchy.annotate_file",
    "optimum_hierarchy.annotate.annotate_model_file": "optimum_hierarchy.annotate_file",
    "optimum_hierarchy.annotate.annotate_onnx_model": "optimum_hierarchy.annotate.annotate_proto",
    "ModuleTree.to_json": "optimum_hierarchy.schema.encode_module_tree",
    "ModuleTree.from_json": "optimum_hierarchy.schema.decode_module_tree",
}


def stripped_copy(source: Path, target: Path) -> Path:
    """``source`` with this package's metadata removed, so that annotating it changes the file."""
    proto = onnx.load(str(source))
    del proto.metadata_props[:]
    for node in proto.graph.node:
        del node.metadata_props[:]
    onnx.save(proto, str(target))
    return target


@pytest.fixture(scope="module")
def exported(task_exports: dict[str, Path]) -> Path:
    return task_exports["bert"] / "model.onnx"


def test_the_readme_lists_every_renamed_name() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Deprecated names") :]
    for old, new in RENAMED.items():
        assert old.rsplit(".", 1)[1] in section, old
        assert new.rsplit(".", 1)[1] in section, new


def test_old_top_level_names_are_reachable_but_not_exported() -> None:
    assert optimum_hierarchy.restore_hierarchy is restore.restore_hierarchy
    assert optimum_hierarchy.annotate_onnx_file is annotate.annotate_onnx_file
    assert "restore_hierarchy" not in optimum_hierarchy.__all__
    assert "annotate_onnx_file" not in optimum_hierarchy.__all__
    assert {"annotate_hierarchy", "annotate_file"} <= set(optimum_hierarchy.__all__)


def test_restore_hierarchy_warns_and_annotates_as_annotate_hierarchy(exported: Path, tmp_path: Path) -> None:
    old, new = tmp_path / "old" / "model.onnx", tmp_path / "new" / "model.onnx"
    for path in (old, new):
        path.parent.mkdir()
        stripped_copy(exported, path)
        shutil.copy(exported.parent / "config.json", path.parent / "config.json")  # the tree comes from it
    with pytest.warns(DeprecationWarning, match=r"restore_hierarchy is deprecated.*use annotate_hierarchy"):
        old_records = optimum_hierarchy.restore_hierarchy(old)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new_records = optimum_hierarchy.annotate_hierarchy(new)
    assert [r.summary.to_json() for r in old_records] == [r.summary.to_json() for r in new_records]
    assert old_records[0].summary.attributed > 0
    assert old.read_bytes() == new.read_bytes()


def test_old_file_and_proto_names_warn_and_give_the_same_result(exported: Path, tmp_path: Path) -> None:
    hierarchy = read_hierarchy(exported)
    paths = [stripped_copy(exported, tmp_path / f"{i}.onnx") for i in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        expected = annotate.annotate_file(paths[0], hierarchy.tree, hierarchy.export)
    with pytest.warns(DeprecationWarning, match="annotate_onnx_file is deprecated"):
        assert annotate.annotate_onnx_file(paths[1], hierarchy.tree, hierarchy.export) == expected
    with read_model_file(paths[2]) as source, pytest.warns(DeprecationWarning, match="annotate_model_file"):
        assert annotate.annotate_model_file(source, paths[2], hierarchy.tree, hierarchy.export) == expected
    assert paths[0].read_bytes() == paths[1].read_bytes() == paths[2].read_bytes()

    protos = [onnx.load(str(stripped_copy(exported, tmp_path / f"p{i}.onnx"))) for i in range(2)]
    new_summary, new_changed = annotate.annotate_proto(protos[0], hierarchy.tree, hierarchy.export)
    with pytest.warns(DeprecationWarning, match="annotate_onnx_model is deprecated"):
        old_summary, old_changed = annotate.annotate_onnx_model(protos[1], hierarchy.tree, hierarchy.export)
    assert (old_summary, old_changed) == (new_summary, new_changed)
    assert protos[0].SerializeToString() == protos[1].SerializeToString()


def test_the_warning_points_at_the_callers_line(exported: Path, tmp_path: Path) -> None:
    path = stripped_copy(exported, tmp_path / "model.onnx")
    hierarchy = read_hierarchy(exported)
    with pytest.warns(DeprecationWarning) as caught:
        annotate.annotate_onnx_file(path, hierarchy.tree, hierarchy.export)
    assert caught[0].filename == __file__


def test_module_tree_json_methods_warn_and_equal_the_codec(exported: Path) -> None:
    from optimum_hierarchy.schema import decode_module_tree, encode_module_tree

    tree = read_hierarchy(exported).tree
    with pytest.warns(DeprecationWarning, match=r"ModuleTree.to_json is deprecated"):
        data = tree.to_json()
    assert data == encode_module_tree(tree)
    with pytest.warns(DeprecationWarning, match=r"ModuleTree.from_json is deprecated"):
        again = type(tree).from_json(data)
    assert encode_module_tree(again) == encode_module_tree(decode_module_tree(data))
