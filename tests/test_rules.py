from __future__ import annotations

import json
from pathlib import Path

import pytest

from optimum_hierarchy.errors import SchemaError
from optimum_hierarchy.rules import RULES_PATH_ENV, check_repeated_blocks, load_all_rules, rules_for_model_type


def test_shipped_rules() -> None:
    rules = load_all_rules()
    assert {"vit", "bert", "gpt2"} <= set(rules)
    assert rules_for_model_type("bert") == rules["bert"]
    assert rules_for_model_type("t5") is None
    assert rules_for_model_type(None) is None
    for item in rules.values():
        assert Path(item.source).is_file()


def test_user_rules_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t5.json").write_text(
        json.dumps({"name": "t5", "model_types": ["t5"], "repeated_blocks": ["encoder.block.*"]})
    )
    monkeypatch.setenv(RULES_PATH_ENV, str(tmp_path))
    found = rules_for_model_type("t5")
    assert found is not None and found.repeated_blocks == ("encoder.block.*",)
    assert found.source == str(tmp_path / "t5.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "cannot read rules file"),
        (json.dumps([]), "JSON object"),
        (json.dumps({"name": "x"}), "model_types"),
        (json.dumps({"name": "x", "model_types": ["x"], "repeated_blocks": ["a.b"]}), "exactly one"),
        (json.dumps({"name": "x", "model_types": ["x"], "typo": 1}), "unknown field"),
    ],
)
def test_bad_rules_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, message: str) -> None:
    (tmp_path / "bad.json").write_text(content)
    monkeypatch.setenv(RULES_PATH_ENV, str(tmp_path))
    with pytest.raises(SchemaError, match=message) as info:
        load_all_rules()
    assert "bad.json" in str(info.value)


def test_repeated_block_check() -> None:
    rules = load_all_rules()["bert"]
    same = [("encoder.layer.0.attention", "MatMul"), ("encoder.layer.1.attention", "MatMul"), ("embeddings", "Gather")]
    assert check_repeated_blocks(rules, same) == []
    moved = [*same, ("encoder.layer.1.attention", "Softmax")]
    (problem,) = check_repeated_blocks(rules, moved)
    assert "encoder.layer.1 differs from encoder.layer.0" in problem
    assert "attention:Softmax" in problem
