"""make_export_info: the one place an export record and its rules are built."""

from __future__ import annotations

import json

from optimum_hierarchy.annotation.export_info import make_export_info, model_export_info, model_type_of, rules_of
from optimum_hierarchy.rules import load_all_rules


def test_the_record_names_the_rules_of_its_model_type() -> None:
    bert_files = [r for r in load_all_rules().values() if "bert" in r.model_types]
    assert bert_files  # configs/bert.json is shipped
    export, rules = make_export_info("encoder", "bert", "transformers.BertModel")
    assert rules is not None and rules.name == bert_files[-1].name
    assert (export.root, export.model_type, export.model_class, export.rules) == (
        "encoder",
        "bert",
        "transformers.BertModel",
        rules.name,
    )
    again = rules_of(export)  # a file annotated again: the rules of the record it carries
    assert again is not None and again.name == rules.name


def test_without_rules_the_record_names_none() -> None:
    assert not any("no-such-type" in r.model_types for r in load_all_rules().values())
    export, rules = make_export_info("", "no-such-type", None)
    assert rules is None and export.rules is None and export.model_class is None
    assert rules_of(export) is None


def test_model_type_of() -> None:
    class Config:
        model_type = "bert"

    class Model:
        config = Config()

    assert model_type_of(Model()) == "bert"
    assert model_type_of(object()) is None
    assert model_type_of(json) is None  # no config attribute


def test_the_record_of_a_whole_model_reads_its_type_and_class() -> None:
    class Config:
        model_type = "bert"

    class Model:
        config = Config()

    export, rules = model_export_info(Model())
    assert (export.root, export.model_type, export.model_class) == ("", "bert", f"{__name__}.{Model.__qualname__}")
    assert rules is not None and export.rules == rules.name == make_export_info("", "bert", None)[1].name
