"""Per-architecture rules: data files in ``configs/`` that refine the generic mechanism.

A rules file is JSON::

    {
      "name": "bert",                      # unique name, recorded in each annotated file
      "description": "BERT ...",           # free text
      "model_types": ["bert"],             # transformers `config.model_type` values it applies to
      "repeated_blocks": ["encoder.layer.*"]  # globs of blocks that must be attributed alike
    }

``repeated_blocks`` names the instances of a repeated block (``*`` stands for the index). After
attribution, every instance must hold the same multiset of (path relative to the block, op type);
a difference means a node went to the wrong layer, and is reported.

Files are read from the ``configs`` directory shipped inside the package (or, in a source checkout,
the repository's top-level ``configs/``), then from each directory in the ``OPTIMUM_HIERARCHY_RULES_PATH``
environment variable (``os.pathsep``-separated); a later file with the same name replaces an earlier one.
"""

from __future__ import annotations

__all__ = ["RULES_PATH_ENV", "ArchitectureRules", "check_repeated_blocks", "load_all_rules", "rules_for_model_type"]

import collections
import dataclasses
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from optimum_hierarchy.errors import SchemaError

RULES_PATH_ENV = "OPTIMUM_HIERARCHY_RULES_PATH"

_PACKAGE_DIR = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class ArchitectureRules:
    name: str
    model_types: tuple[str, ...]
    description: str = ""
    repeated_blocks: tuple[str, ...] = ()
    source: str = ""
    """File the rules were read from."""

    @classmethod
    def from_json(cls, data: Any, source: str) -> ArchitectureRules:
        if not isinstance(data, dict):
            raise SchemaError(f"{source}: a rules file must hold a JSON object")
        unknown = set(data) - {"name", "description", "model_types", "repeated_blocks"}
        if unknown:
            raise SchemaError(f"{source}: unknown field(s) {sorted(unknown)}")
        name = data.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise SchemaError(f"{source}: 'name' must be a non-empty string of letters, digits, '_', '.', '-'")
        lists = {}
        for field in ("model_types", "repeated_blocks"):
            value = data.get(field, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise SchemaError(f"{source}: {field!r} must be a list of non-empty strings")
            lists[field] = tuple(value)
        if not lists["model_types"]:
            raise SchemaError(f"{source}: 'model_types' must name at least one model type")
        for pattern in lists["repeated_blocks"]:
            if pattern.count("*") != 1:
                raise SchemaError(f"{source}: repeated block {pattern!r} must contain exactly one '*' (the index)")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise SchemaError(f"{source}: 'description' must be a string")
        return cls(name=name, description=description, source=source, **lists)


def _rules_dirs() -> list[Path]:
    dirs = []
    for candidate in (_PACKAGE_DIR / "configs", _PACKAGE_DIR.parent / "configs"):
        if candidate.is_dir():
            dirs.append(candidate)
            break
    for entry in os.environ.get(RULES_PATH_ENV, "").split(os.pathsep):
        if entry:
            dirs.append(Path(entry))
    return dirs


def load_all_rules() -> dict[str, ArchitectureRules]:
    """All rules files, by name. Raises :class:`SchemaError` naming a bad file."""
    rules: dict[str, ArchitectureRules] = {}
    for directory in _rules_dirs():
        if not directory.is_dir():
            raise SchemaError(f"{RULES_PATH_ENV}: {directory} is not a directory")
        for path in sorted(directory.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise SchemaError(f"{path}: cannot read rules file ({e})") from e
            item = ArchitectureRules.from_json(data, str(path))
            rules[item.name] = item
    return rules


def rules_for_model_type(model_type: str | None) -> ArchitectureRules | None:
    """The rules that apply to a transformers ``model_type``, or ``None`` (generic mechanism only)."""
    if model_type is None:
        return None
    found = None
    for item in load_all_rules().values():
        if model_type in item.model_types:
            found = item
    return found


def check_repeated_blocks(rules: ArchitectureRules, attributions: Iterable[tuple[str, str]]) -> list[str]:
    """Problems found in repeated blocks, given (module path, op type) of every node; empty if none.

    Every instance of a repeated block must hold the same multiset of
    (path relative to the instance, op type).
    """
    pairs = list(attributions)
    problems = []
    for pattern in rules.repeated_blocks:
        prefix, _, suffix = pattern.partition("*")
        regex = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + r"(?:\.(.*))?$")
        blocks: dict[str, collections.Counter[tuple[str, str]]] = collections.defaultdict(collections.Counter)
        for path, op_type in pairs:
            match = regex.match(path)
            if match is not None:
                blocks[match.group(1)][(match.group(2) or "", op_type)] += 1
        if len(blocks) < 2:
            continue
        ordered = sorted(blocks, key=int)
        reference = blocks[ordered[0]]
        for index in ordered[1:]:
            if blocks[index] != reference:
                diff = (blocks[index] - reference) + (reference - blocks[index])
                sample = ", ".join(f"{p or '<block>'}:{op}" for p, op in sorted(diff)[:4])
                problems.append(
                    f"{prefix}{index}{suffix} differs from {prefix}{ordered[0]}{suffix} in {sum(diff.values())} "
                    f"node(s) ({sample})"
                )
    return problems
