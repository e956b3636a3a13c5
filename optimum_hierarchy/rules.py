"""Per-architecture rules: data files in ``configs/`` that refine the generic mechanism.

A rules file is JSON::

    {
      "name": "bert",                      # unique name, recorded in each annotated file
      "description": "BERT ...",           # free text
      "model_types": ["bert"],             # transformers `config.model_type` values it applies to
                                           # ("*": every model, after the model's own rules)
      "repeated_blocks": ["encoder.layer.*"],  # globs of blocks that must be attributed alike
      "fused_nodes": [                     # where nodes created by ONNX Runtime belong
        {"op_types": ["SkipLayerNormalization"], "module": ["parent:input:2", "input:4"],
         "why": "gamma (input 2) is the LayerNorm's; the residual Add is in its parent; input 4 is
                 the bias of the Linear before it"}
      ]
    }

``repeated_blocks`` names the instances of a repeated block (``*`` stands for the index). After
attribution, every instance must hold the same multiset of (path relative to the block, op type);
a difference means a node went to the wrong layer, and is reported.

``fused_nodes`` rules apply to nodes of the listed op types (any domain) that an optimizer or
quantizer created. The node's module is the lowest common ancestor of the terms of ``module`` that
resolve (a term that does not resolve is skipped; if none does, the rule does not apply):

* ``input:K`` / ``input:*``: the module owning the parameter or buffer that input ``K`` (any input)
  is, by the initializer's name (``encoder.layer.0.attention.output.dense.bias``);
* ``output:K`` / ``output:*``: the module of the TorchScript scope in output ``K``'s tensor name
  (``/encoder/layer.0/attention/self/Reshape_3_output_0``: ``encoder.layer.0.attention.self``);
* ``node``: the module of the scope in the node's own name;
* ``parent:TERM``: the parent module of what ``TERM`` gives.

They are used in two places. After an optimization of an annotated file (provenance stored), a
rule narrows a node inside a group of created nodes to a module within what the provenance proves
(:mod:`optimum_hierarchy.passes.reattribute`); it can never move a node outside it. In a file
annotated after the fact, without provenance, rules are the first evidence for nodes whose own name
carries no scope (source ``rule``). Each rule should say ``why``.

Files are read from the ``configs`` directory shipped inside the package (or, in a source checkout,
the repository's top-level ``configs/``), then from each directory in the ``OPTIMUM_HIERARCHY_RULES_PATH``
environment variable (``os.pathsep``-separated); a later file with the same name replaces an earlier one.
"""

from __future__ import annotations

__all__ = [
    "RULES_PATH_ENV",
    "ArchitectureRules",
    "FusedNodeRule",
    "ModelRules",
    "check_repeated_blocks",
    "fused_node_rules",
    "load_all_rules",
    "model_rules",
    "rules_for_model_type",
]

import collections
import dataclasses
import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from optimum_hierarchy.errors import SchemaError
from optimum_hierarchy.modules import ModuleTree, ancestor_at, depth_of
from optimum_hierarchy.scope import producer_name_of_output

RULES_PATH_ENV = "OPTIMUM_HIERARCHY_RULES_PATH"

_PACKAGE_DIR = Path(__file__).resolve().parent


_TERM = re.compile(r"^(?:parent:)*(?:input:(?:\d+|\*)|output:(?:\d+|\*)|node)$")


@dataclasses.dataclass(frozen=True)
class FusedNodeRule:
    """Where nodes of some op types belong, as terms over their tensors (see the module docstring)."""

    op_types: frozenset[str]
    module: tuple[str, ...]
    why: str = ""

    @classmethod
    def from_json(cls, data: Any, where: str) -> FusedNodeRule:
        if not isinstance(data, dict):
            raise SchemaError(f"{where}: a fused_nodes rule must be an object")
        unknown = set(data) - {"op_types", "module", "why"}
        if unknown:
            raise SchemaError(f"{where}: unknown field(s) {sorted(unknown)}")
        op_types, terms, why = data.get("op_types"), data.get("module"), data.get("why", "")
        if not isinstance(op_types, list) or not op_types or not all(isinstance(o, str) and o for o in op_types):
            raise SchemaError(f"{where}: 'op_types' must be a non-empty list of op type names")
        if not isinstance(terms, list) or not terms or not all(isinstance(t, str) for t in terms):
            raise SchemaError(f"{where}: 'module' must be a non-empty list of terms")
        for term in terms:
            if not _TERM.match(term):
                raise SchemaError(
                    f"{where}: bad term {term!r}; use input:K, input:*, output:K, output:*, node, "
                    "each optionally prefixed by parent:"
                )
        if not isinstance(why, str):
            raise SchemaError(f"{where}: 'why' must be a string")
        return cls(op_types=frozenset(op_types), module=tuple(terms), why=why)

    def evaluate(
        self,
        inputs: Sequence[str],
        outputs: Sequence[str],
        node_name: str,
        parameter_owner: Callable[[str], str | None],
        scope_of: Callable[[str], str | None],
    ) -> str | None:
        """The module this rule gives a node, or ``None`` when no term resolves."""
        found = []
        for spelled in self.module:
            term, lifts = spelled, 0
            while term.startswith("parent:"):
                term, lifts = term[len("parent:") :], lifts + 1
            if term == "node":
                values = [scope_of(node_name)]
            else:
                kind, _, index = term.partition(":")
                names = inputs if kind == "input" else outputs
                if index == "*":
                    picked = [n for n in names if n]
                else:
                    k = int(index)
                    picked = [names[k]] if k < len(names) and names[k] else []
                resolve = parameter_owner if kind == "input" else _output_scope(scope_of)
                values = [resolve(n) for n in picked]
            for value in values:
                if value is not None:
                    found.append(ancestor_at(value, depth_of(value) - lifts))
        return ModuleTree.lowest_common_ancestor(found)


def _output_scope(scope_of: Callable[[str], str | None]) -> Callable[[str], str | None]:
    def resolve(tensor: str) -> str | None:
        node_name = producer_name_of_output(tensor)
        return scope_of(node_name) if node_name is not None else None

    return resolve


@dataclasses.dataclass(frozen=True)
class ArchitectureRules:
    name: str
    model_types: tuple[str, ...]
    description: str = ""
    repeated_blocks: tuple[str, ...] = ()
    fused_nodes: tuple[FusedNodeRule, ...] = ()
    source: str = ""
    """File the rules were read from."""

    @classmethod
    def from_json(cls, data: Any, source: str) -> ArchitectureRules:
        if not isinstance(data, dict):
            raise SchemaError(f"{source}: a rules file must hold a JSON object")
        unknown = set(data) - {"name", "description", "model_types", "repeated_blocks", "fused_nodes"}
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
        fused = data.get("fused_nodes", [])
        if not isinstance(fused, list):
            raise SchemaError(f"{source}: 'fused_nodes' must be a list of rules")
        fused_nodes = tuple(FusedNodeRule.from_json(r, f"{source}: fused_nodes[{i}]") for i, r in enumerate(fused))
        return cls(name=name, description=description, source=source, fused_nodes=fused_nodes, **lists)


def _packaged_dir() -> Path | None:
    for candidate in (_PACKAGE_DIR / "configs", _PACKAGE_DIR.parent / "configs"):
        if candidate.is_dir():
            return candidate
    return None


def _read_rules(path: Path) -> ArchitectureRules:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SchemaError(f"{path}: cannot read rules file ({e})") from e
    return ArchitectureRules.from_json(data, str(path))


@functools.lru_cache(maxsize=64)
def _read_packaged_rules(path: Path, mtime_ns: int, size: int) -> ArchitectureRules:
    """A packaged rules file, read once per process (an edit in a source checkout changes the key)."""
    return _read_rules(path)


def load_all_rules() -> dict[str, ArchitectureRules]:
    """All rules files, by name. Raises :class:`SchemaError` naming a bad file.

    The packaged files are read once; those of ``OPTIMUM_HIERARCHY_RULES_PATH`` on every call, since a
    user's file may be rewritten within the resolution of its modification time.
    """
    rules: dict[str, ArchitectureRules] = {}
    packaged = _packaged_dir()
    if packaged is not None:
        for path in sorted(packaged.glob("*.json")):
            try:
                stat = path.stat()
            except OSError as e:
                raise SchemaError(f"{path}: cannot read rules file ({e})") from e
            item = _read_packaged_rules(path, stat.st_mtime_ns, stat.st_size)
            rules[item.name] = item
    for directory in (Path(entry) for entry in os.environ.get(RULES_PATH_ENV, "").split(os.pathsep) if entry):
        if not directory.is_dir():
            raise SchemaError(f"{RULES_PATH_ENV}: {directory} is not a directory")
        for path in sorted(directory.glob("*.json")):
            item = _read_rules(path)
            rules[item.name] = item
    return rules


def rules_for_model_type(model_type: str | None) -> ArchitectureRules | None:
    """The rules written for a transformers ``model_type``, or ``None`` (generic mechanism only)."""
    return _own_rules(load_all_rules().values(), model_type)


def _own_rules(rules: Iterable[ArchitectureRules], model_type: str | None) -> ArchitectureRules | None:
    """The last rules file naming ``model_type`` (a later file replaces an earlier one)."""
    found = None
    if model_type is not None:
        for item in rules:
            if model_type in item.model_types:
                found = item
    return found


@dataclasses.dataclass(frozen=True)
class ModelRules:
    """The rules of one model type, looked up once: its own file and every ``fused_nodes`` rule that applies."""

    own: ArchitectureRules | None
    """The rules file naming the model type (:func:`rules_for_model_type`), ``None`` for the generic mechanism."""
    fused_nodes: tuple[FusedNodeRule, ...]
    """:func:`fused_node_rules`: the own file's first, then those of ``"*"`` files."""


def model_rules(model_type: str | None) -> ModelRules:
    """:func:`rules_for_model_type` and :func:`fused_node_rules` of ``model_type``, from one reading of the files."""
    everything = load_all_rules().values()
    own = _own_rules(everything, model_type)
    found = list(own.fused_nodes) if own is not None else []
    for item in everything:
        if "*" in item.model_types and item is not own:
            found.extend(item.fused_nodes)
    return ModelRules(own=own, fused_nodes=tuple(found))


def fused_node_rules(model_type: str | None) -> list[FusedNodeRule]:
    """``fused_nodes`` rules for a model type: its own rules first, then those of ``"*"`` files."""
    return list(model_rules(model_type).fused_nodes)


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
