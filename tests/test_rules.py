from __future__ import annotations

import json
from pathlib import Path

import pytest

from optimum_hierarchy.errors import SchemaError
from optimum_hierarchy.rules import (
    RULES_PATH_ENV,
    FusedNodeRule,
    check_repeated_blocks,
    fused_node_rules,
    load_all_rules,
    rules_for_model_type,
)


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


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("nope", "must be an object"),
        ({"op_types": [], "module": ["input:1"]}, "op_types"),
        ({"op_types": ["Add"], "module": []}, "non-empty list of terms"),
        ({"op_types": ["Add"], "module": ["weight:1"]}, "bad term"),
        ({"op_types": ["Add"], "module": ["parent:"]}, "bad term"),
        ({"op_types": ["Add"], "module": ["input:1"], "extra": 1}, "unknown field"),
    ],
)
def test_bad_fused_node_rules(rule: object, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"name": "x", "model_types": ["x"], "fused_nodes": [rule]}))
    monkeypatch.setenv(RULES_PATH_ENV, str(tmp_path))
    with pytest.raises(SchemaError, match=message) as info:
        load_all_rules()
    assert "x.json" in str(info.value) and "fused_nodes[0]" in str(info.value)


def test_fused_node_rule_terms() -> None:
    rule = FusedNodeRule.from_json(
        {"op_types": ["SkipLayerNormalization"], "module": ["parent:input:2", "input:4"]}, "t"
    )
    owners = {"h.1.ln_1.weight": "h.1.ln_1", "h.0.mlp.c_proj.bias": "h.0.mlp.c_proj"}
    inputs = ["x", "skip", "h.1.ln_1.weight", "h.1.ln_1.bias", "h.0.mlp.c_proj.bias"]
    assert rule.evaluate(inputs, ["y"], "SkipLayerNorm_0", owners.get, lambda _: None) == "h"
    # an input that is not there is skipped; nothing resolving means the rule does not apply
    assert rule.evaluate(inputs[:4], ["y"], "n", owners.get, lambda _: None) == "h.1"
    assert rule.evaluate(["x", "skip", "w"], ["y"], "n", owners.get, lambda _: None) is None
    scoped = FusedNodeRule.from_json({"op_types": ["Attention"], "module": ["output:0", "node"]}, "t")
    scopes = {"/encoder/layer.0/attention/self/Reshape_3": "encoder.layer.0.attention.self"}
    outputs = ["/encoder/layer.0/attention/self/Reshape_3_output_0"]
    assert scoped.evaluate([], outputs, "Attention_0", owners.get, scopes.get) == "encoder.layer.0.attention.self"


def test_shipped_fused_node_rules_apply_to_every_model_type() -> None:
    generic = fused_node_rules("t5")
    assert any("SkipLayerNormalization" in r.op_types for r in generic)
    gpt2 = fused_node_rules("gpt2")
    assert gpt2[0].op_types == frozenset({"Add"})  # the model's own rules come first
    assert len(gpt2) == len(generic) + 1
    assert all(rule.why for rule in gpt2)


def test_packaged_rules_are_read_once_user_rules_on_every_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = load_all_rules(), load_all_rules()
    assert first and all(second[name] is item for name, item in first.items())  # the same objects: read once
    first.clear()
    assert load_all_rules() == second  # each call has its own dict
    # A user's file rewritten (same size, maybe the same modification time) is read again.
    monkeypatch.setenv(RULES_PATH_ENV, str(tmp_path))
    path = tmp_path / "t5.json"
    for block in ("encoder.block.*", "decoder.block.*"):
        path.write_text(json.dumps({"name": "t5", "model_types": ["t5"], "repeated_blocks": [block]}))
        found = rules_for_model_type("t5")
        assert found is not None and found.repeated_blocks == (block,)
