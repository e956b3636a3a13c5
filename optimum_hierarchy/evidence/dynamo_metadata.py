"""Evidence from torch's dynamo exporter: the module paths it writes into every node's metadata.

``torch.onnx.export(..., dynamo=True)`` gives each node three keys (torch 2.9 and later):

* ``pkg.torch.onnx.name_scopes``: the Python ``repr`` of a list of strings, e.g.
  ``['', 'embeddings', 'embeddings.word_embeddings', 'embedding']``. Every entry but the last is the
  dotted path of a module on the call stack, outermost first (``''`` is the exported module; the
  exporter sometimes omits it); the last entry is the FX node's own name. A node with an empty
  module stack (top-level code of the exported module) has :data:`NO_MODULE_MARKER` instead.
* ``pkg.torch.onnx.class_hierarchy``: the same list for the qualified class names of those modules,
  the last entry being the ATen operator (``aten.embedding.default``).
* ``namespace``: both joined in one string, for Model Explorer.

The values are read by :func:`parse_string_list`, a strict parser of a list of Python string
literals with bounds on size and length; nothing is evaluated. A node's module is the deepest path
of its ``name_scopes`` (relative to the exported module). A value that does not parse, or names a
module the tree does not have, is no evidence: the node is left to the other sources, with the
reason.

onnxscript's rewriter (which runs inside the export by default) gives a fused node the metadata of
the *first* node it matched. So the exports of this package take their provenance before that
optimizer runs (:mod:`optimum_hierarchy.exporters.dynamo`), and on a file annotated after the fact
a node's ``name_scopes`` is only believed when its module contains the parameters the node reads.
"""

from __future__ import annotations

__all__ = [
    "CLASS_HIERARCHY_KEY",
    "NAME_SCOPES_KEY",
    "NO_MODULE_MARKER",
    "REWRITE_RULE_KEY",
    "DynamoScopes",
    "has_dynamo_metadata",
    "module_scopes",
    "parse_string_list",
    "scope_classes",
]

import collections
import logging
from collections.abc import Iterable, Mapping

from optimum_hierarchy.evidence.base import Found, GraphView, Missing
from optimum_hierarchy.modules import (
    ModuleTree,
    common_ancestor,
    is_well_formed,
    join_path,
    within,
)
from optimum_hierarchy.schema import AttributionSource

logger = logging.getLogger(__name__)

NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
NO_MODULE_MARKER = "_empty_nn_module_stack_from_metadata_hook"
"""What torch writes as the only "module" of a node whose module stack is empty: a node at the top level of
the exported program (a ``sym_size`` of an input), i.e. in the exported module's own code."""
CLASS_HIERARCHY_KEY = "pkg.torch.onnx.class_hierarchy"
REWRITE_RULE_KEY = "pkg.onnxscript.rewriter.rule_name"
"""What onnxscript's rewriter (and transformers' ONNX Runtime fusions, built on it) writes on a node it created:
the names of the rules that made it. Such a node carries the ``name_scopes`` of the first node it matched."""

MAX_CHARS = 64 * 1024
"""Longest ``name_scopes`` / ``class_hierarchy`` value read (a real one is a few hundred characters)."""
MAX_ITEMS = 256
"""Most entries read (one per nesting level of modules, plus the node's own name)."""

_SIMPLE_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0"}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


def parse_string_list(text: str, *, max_chars: int = MAX_CHARS, max_items: int = MAX_ITEMS) -> list[str]:
    """Parse the ``repr`` of a Python list of strings (``['', 'encoder', "it's"]``) without evaluating it.

    Accepted: ``[``, string literals in single or double quotes separated by commas (a trailing
    comma allowed), ``]``, and spaces between them. Escapes: ``\\\\ \\' \\" \\n \\t \\r \\0 \\xhh
    \\uhhhh \\Uhhhhhhhh``. Anything else, a value over ``max_chars`` characters or a list of more than
    ``max_items`` entries raises :class:`ValueError` saying what is wrong and where.
    """
    if len(text) > max_chars:
        raise ValueError(f"{len(text)} characters, over the limit of {max_chars}")
    items: list[str] = []
    n = len(text)
    pos = _skip_spaces(text, 0)
    if pos >= n or text[pos] != "[":
        raise ValueError("not a list: it does not start with '['")
    pos = _skip_spaces(text, pos + 1)
    while True:
        if pos >= n:
            raise ValueError("unterminated list: no closing ']'")
        if text[pos] == "]":
            pos += 1
            break
        if len(items) >= max_items:
            raise ValueError(f"more than {max_items} entries")
        value, pos = _string_literal(text, pos)
        items.append(value)
        pos = _skip_spaces(text, pos)
        if pos < n and text[pos] == ",":
            pos = _skip_spaces(text, pos + 1)
        elif pos < n and text[pos] != "]":
            raise ValueError(f"expected ',' or ']' at character {pos}, found {text[pos]!r}")
    if _skip_spaces(text, pos) != n:
        raise ValueError(f"unexpected text after the list, at character {pos}")
    return items


def _skip_spaces(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\n\r":
        pos += 1
    return pos


def _string_literal(text: str, pos: int) -> tuple[str, int]:
    quote = text[pos]
    if quote not in "'\"":
        raise ValueError(f"expected a string literal at character {pos}, found {quote!r}")
    out: list[str] = []
    i = pos + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\n":
            break
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:
            break
        e = text[i + 1]
        if e in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[e])
            i += 2
        elif e in _HEX_ESCAPES:
            width = _HEX_ESCAPES[e]
            digits = text[i + 2 : i + 2 + width]
            if len(digits) != width or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(f"bad \\{e} escape at character {i}")
            code = int(digits, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise ValueError(f"escape at character {i} is not a Unicode character")
            out.append(chr(code))
            i += 2 + width
        else:
            raise ValueError(f"unsupported escape \\{e} at character {i}")
    raise ValueError(f"unterminated string starting at character {pos}")


def module_scopes(metadata: Mapping[str, str]) -> list[str] | None:
    """The module paths of a node's ``name_scopes``, outermost first (the node's own name dropped).

    ``None`` when the node has no such key. Raises :class:`ValueError` for a malformed value.
    """
    text = metadata.get(NAME_SCOPES_KEY)
    if text is None:
        return None
    entries = parse_string_list(text)
    if not entries:
        raise ValueError("an empty list (the node's own name is missing)")
    modules = [m for m in entries[:-1] if m != NO_MODULE_MARKER]  # an empty stack: the exported module
    bad = [m for m in modules if not is_well_formed(m)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a module path")
    return modules


def scope_classes(metadata: Mapping[str, str]) -> tuple[list[str], list[str] | None] | None:
    """The module paths of a node's ``name_scopes`` (:func:`module_scopes`) and the classes its
    ``class_hierarchy`` gives them, position by position; the classes are ``None`` when that value is
    missing, unreadable or of another length. ``None`` when the node has no ``name_scopes``.

    Raises :class:`ValueError` for a malformed ``name_scopes``.
    """
    scopes = module_scopes(metadata)
    if scopes is None:
        return None
    try:
        hierarchy = parse_string_list(metadata.get(CLASS_HIERARCHY_KEY, "[]"))
    except ValueError:
        return scopes, None
    classes = [c for c in hierarchy[:-1] if c != NO_MODULE_MARKER]
    return scopes, classes if len(classes) == len(scopes) else None


def has_dynamo_metadata(nodes_metadata: Iterable[Mapping[str, str]]) -> bool:
    return any(NAME_SCOPES_KEY in m for m in nodes_metadata)


class DynamoScopes:
    """The deepest module path in the node's ``pkg.torch.onnx.name_scopes``.

    ``check_parameters``: also require that this module contains every parameter the node reads
    (through any of a tied parameter's owners); used where onnxscript's rewriter may have fused the
    node after the metadata was written (a file annotated after the fact). A parameter read by
    several nodes is not checked: onnxscript's optimizer merges equal initializers (zero biases,
    unit LayerNorm weights) into one named after the first, so that name says nothing about its
    other readers. A node a rewrite rule made (``REWRITE_RULE_KEY``) whose parameters lie outside its
    recorded module stands for the node it was recorded from and for the nodes that read those
    parameters (a Conv with the BatchNorm folded into it: recorded as the norm, reading the conv's
    weight): it is placed at their lowest common ancestor (source ``context``; not at the root, which
    needs a witness). Any other node whose parameters lie outside its recorded module is refused.
    """

    name = "dynamo-metadata"

    def __init__(self, *, check_parameters: bool = False) -> None:
        self.check_parameters = check_parameters
        self._owners: dict[str, frozenset[str]] | None = None
        self._readers: tuple[GraphView, collections.Counter[str]] | None = None

    def locate(self, view: GraphView, i: int) -> Found | Missing:
        try:
            scopes = module_scopes(view.metadata(i))
        except ValueError as e:
            return Missing(f"its {NAME_SCOPES_KEY} cannot be read ({e})", rejected=True)
        if scopes is None:
            return Missing(f"no {NAME_SCOPES_KEY} metadata")
        named = view.full_path(scopes[-1] if scopes else "")
        deepest = view.tree.canonical(named)  # a shared module may be named by any of its paths
        if deepest is None:
            return Missing(
                f"its {NAME_SCOPES_KEY} names module {named!r}, which is not in the module tree", rejected=True
            )
        if self.check_parameters:
            outside = self._parameters_outside(view, i, deepest)
            if outside and REWRITE_RULE_KEY in view.metadata(i):
                holders = self._owner_sets(view.tree).get(view.full_path(outside), frozenset())
                both = common_ancestor([deepest, *holders]) if len(holders) == 1 else None
                if both:  # (not "" : the root is no evidence)
                    return Found(both, AttributionSource.CONTEXT)
            if outside:
                return Missing(
                    f"its {NAME_SCOPES_KEY} module {deepest!r} does not hold the parameter {outside!r} it reads "
                    "(a node fused by onnxscript's rewriter carries the metadata of the first node it matched)",
                    rejected=True,
                )
        return Found(deepest, AttributionSource.METADATA)

    def _parameters_outside(self, view: GraphView, i: int, module: str) -> str | None:
        owners = self._owner_sets(view.tree)
        if self._readers is None or self._readers[0] is not view:
            self._readers = (view, collections.Counter(n for names in view.table.inputs for n in set(names)))
        readers = self._readers[1]
        for name in view.table.inputs[i]:
            if not name or readers[name] > 1:
                continue
            full = view.full_path(name)
            holders = owners.get(full)
            if holders and not any(within(h, module) for h in holders):
                return name
        return None

    def _owner_sets(self, tree: ModuleTree) -> dict[str, frozenset[str]]:
        """Full tensor name -> every module holding that tensor (several for tied weights)."""
        if self._owners is None:
            groups: dict[str, set[str]] = collections.defaultdict(set)
            canonical: dict[str, str] = {}
            for path in tree:
                info = tree[path]
                for p in (*info.parameters, *info.buffers):
                    full = join_path(path, p.name)
                    key = p.tied_to or full
                    canonical[full] = key
                    groups[key].add(path)
            self._owners = {full: frozenset(groups[key]) for full, key in canonical.items()}
        return self._owners
