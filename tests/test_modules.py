from __future__ import annotations

import itertools

import pytest
from support import small_tree

from optimum_hierarchy.errors import SchemaError
from optimum_hierarchy.modules import (
    ModuleInfo,
    ModuleTree,
    ParameterInfo,
    ancestor_at,
    ancestors,
    common_ancestor,
    depth_of,
    is_well_formed,
    join_path,
    name_of,
    parent_of,
    relative_to,
    segments,
    within,
)

# Paths chosen so that string prefixes and path prefixes disagree: layer.1 / layer.10, enc / encoder.
PATHS = ["", "enc", "encoder", "encoder.layer", "encoder.layer.1", "encoder.layer.10", "encoder.layer.1.dense"]


def test_segments_and_joining() -> None:
    assert segments("") == []
    assert segments("encoder.layer.0") == ["encoder", "layer", "0"]
    assert join_path("", "encoder") == "encoder"
    assert join_path("encoder.layer", "0") == "encoder.layer.0"
    assert join_path("encoder", "dense.weight") == "encoder.dense.weight"


def test_well_formed_paths() -> None:
    assert is_well_formed("") and is_well_formed("a") and is_well_formed("a.0.b")
    for bad in (".", "a.", ".a", "a..b"):
        assert not is_well_formed(bad), bad


def test_parent_name_and_depth() -> None:
    assert parent_of("") is None
    assert parent_of("encoder") == ""
    assert parent_of("encoder.layer.10") == "encoder.layer"
    assert name_of("") == ""
    assert name_of("encoder.layer.10") == "10"
    assert [depth_of(p) for p in ("", "encoder", "encoder.layer", "encoder.layer.1.dense")] == [0, 1, 2, 4]


@pytest.mark.parametrize(
    ("path", "ancestor", "expected"),
    [
        ("", "", True),  # the root contains every path, itself included
        ("encoder.layer.1", "", True),
        ("", "encoder", False),
        ("encoder", "encoder", True),
        ("encoder.layer.1", "encoder", True),
        ("encoder.layer.1", "encoder.layer.1", True),
        ("encoder.layer.10", "encoder.layer.1", False),  # a string prefix, not a path prefix
        ("encoder.layer.1.dense", "encoder.layer.1", True),
        ("encoder", "enc", False),
        ("encoder", "encoder.layer", False),  # a descendant does not contain its ancestor
        ("decoder.layer", "encoder", False),
    ],
)
def test_within(path: str, ancestor: str, expected: bool) -> None:
    assert within(path, ancestor) is expected


@pytest.mark.parametrize(
    ("path", "ancestor", "expected"),
    [
        ("encoder.layer.1", "", "encoder.layer.1"),
        ("", "", ""),
        ("encoder.layer.1", "encoder.layer.1", ""),
        ("encoder.layer.1.dense", "encoder", "layer.1.dense"),
        ("encoder.layer.10", "encoder.layer.1", None),
        ("", "encoder", None),
    ],
)
def test_relative_to(path: str, ancestor: str, expected: str | None) -> None:
    assert relative_to(path, ancestor) == expected


def test_ancestors_run_from_the_root() -> None:
    assert ancestors("") == ("",)
    assert ancestors("encoder.layer.10") == ("", "encoder", "encoder.layer", "encoder.layer.10")


def test_ancestor_at() -> None:
    path = "encoder.layer.1.dense"
    assert [ancestor_at(path, d) for d in range(6)] == [
        "",
        "encoder",
        "encoder.layer",
        "encoder.layer.1",
        path,
        path,  # no deeper than asked: itself
    ]
    assert ancestor_at(path, -1) == ""
    assert ancestor_at("", 2) == ""


def test_common_ancestor() -> None:
    assert common_ancestor(["a.b.c", "a.b.d"]) == "a.b"
    assert common_ancestor(["a.b", "a.b.c"]) == "a.b"
    assert common_ancestor(["a.layer.1", "a.layer.10"]) == "a.layer"  # segment by segment, not string prefixes
    assert common_ancestor(["a", "b"]) == ""
    assert common_ancestor(["", "a"]) == ""
    assert common_ancestor(["a.b"]) == "a.b"
    assert common_ancestor([]) is None
    assert ModuleTree.lowest_common_ancestor(["a.b.c", "a.b.d"]) == "a.b"


def test_the_functions_agree_with_each_other() -> None:
    """Over every pair of PATHS: within is membership in ancestors, relative_to inverts join_path, and the
    common ancestor of two paths is the deepest path within which both lie."""
    pairs = list(itertools.product(PATHS, repeat=2))
    assert len(pairs) == len(PATHS) ** 2 > 0
    for path, ancestor in pairs:
        assert within(path, ancestor) == (ancestor in ancestors(path)), (path, ancestor)
        relative = relative_to(path, ancestor)
        assert (relative is not None) == within(path, ancestor), (path, ancestor)
        if relative:
            assert join_path(ancestor, relative) == path
        common = common_ancestor([path, ancestor])
        assert common is not None and within(path, common) and within(ancestor, common)
        assert common == max(set(ancestors(path)) & set(ancestors(ancestor)), key=depth_of)
    for path in PATHS:
        assert ancestors(path)[-1] == path and len(ancestors(path)) == depth_of(path) + 1
        assert all(parent_of(a) == b for a, b in itertools.pairwise(reversed(ancestors(path))))


def test_tree_structure_is_derived_from_paths() -> None:
    tree = small_tree()
    assert tree["encoder.layer.0.dense"].parent == "encoder.layer.0"
    assert tree["encoder.layer.0.dense"].depth == 4
    assert tree["encoder.layer.0.dense"].name == "dense"
    assert tree[""].parent is None and tree[""].depth == 0
    assert tree.children("encoder.layer") == ("encoder.layer.0",)
    assert tree.is_leaf("head") and not tree.is_leaf("encoder")
    assert tree.owner_of_tensor("encoder.layer.0.dense.bias") == "encoder.layer.0.dense"
    assert tree.owner_of_tensor("nope.weight") is None
    # The tied copy does not count twice.
    assert tree["head"].parameter_count == 0
    assert tree["encoder.layer.0.dense"].parameter_count == 20


def test_tree_rejects_orphans_duplicates_and_malformed_paths() -> None:
    with pytest.raises(SchemaError, match="no parent"):
        ModuleTree([ModuleInfo("", "R"), ModuleInfo("a.b", "X")])
    with pytest.raises(SchemaError, match="twice"):
        ModuleTree([ModuleInfo("", "R"), ModuleInfo("", "R")])
    with pytest.raises(SchemaError, match="root"):
        ModuleTree([ModuleInfo("a", "R")])
    with pytest.raises(SchemaError, match="empty segment"):
        ModuleTree([ModuleInfo("", "R"), ModuleInfo("a", "X"), ModuleInfo("a.", "X")])
    with pytest.raises(SchemaError, match="alias"):
        ModuleTree([ModuleInfo("", "R"), ModuleInfo("a", "X", aliases=("b..c",))])


def test_the_tree_is_still_reached_where_it_was() -> None:
    import optimum_hierarchy
    from optimum_hierarchy import schema

    assert schema.ModuleTree is ModuleTree and schema.ModuleInfo is ModuleInfo
    assert schema.ParameterInfo is ParameterInfo
    assert optimum_hierarchy.ModuleTree is ModuleTree and optimum_hierarchy.ModuleInfo is ModuleInfo
