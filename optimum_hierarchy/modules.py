"""PyTorch module paths and the module tree they form.

A module path is what ``named_modules()`` names a module: dotted segments from the root
(``encoder.layer.0.attention``); the root module is the empty path ``""``. Paths are compared
segment by segment, never as strings: ``encoder.layer.1`` does not contain ``encoder.layer.10``,
and the root contains every path. Nothing here reads or writes ONNX metadata (that is
:mod:`optimum_hierarchy.schema`, which stores the tree as JSON) or knows torch (that is
:mod:`optimum_hierarchy.trees.live_model`).
"""

from __future__ import annotations

__all__ = [
    "ModuleInfo",
    "ModuleTree",
    "ParameterInfo",
    "ancestor_at",
    "ancestors",
    "common_ancestor",
    "depth_of",
    "is_well_formed",
    "join_path",
    "name_of",
    "parent_of",
    "relative_to",
    "segments",
    "within",
]

import dataclasses
from collections.abc import Iterable, Iterator, Mapping

from optimum_hierarchy.errors import SchemaError

# --- the algebra of paths ------------------------------------------------------------------------


def segments(path: str) -> list[str]:
    """The segments of ``path`` from the root down; ``[]`` for the root."""
    return path.split(".") if path else []


def join_path(parent: str, name: str) -> str:
    """The path of ``name`` (a child module, a parameter, or a relative path) below ``parent``."""
    return f"{parent}.{name}" if parent else name


def is_well_formed(path: str) -> bool:
    """True for the root and for paths without an empty segment (``a..b``, ``.a``, ``a.`` are not)."""
    return path == "" or "" not in path.split(".")


def parent_of(path: str) -> str | None:
    """The parent's path; ``None`` for the root."""
    return None if not path else path.rpartition(".")[0]


def name_of(path: str) -> str:
    """The last segment (``attention`` for ``encoder.layer.0.attention``); ``""`` for the root."""
    return path.rpartition(".")[2]


def depth_of(path: str) -> int:
    """Number of segments: the root is at depth 0, its children at depth 1."""
    return 0 if not path else path.count(".") + 1


def within(path: str, ancestor: str) -> bool:
    """Whether ``path`` is ``ancestor`` or lies below it; everything lies within the root ``""``."""
    return not ancestor or path == ancestor or path.startswith(ancestor + ".")


def relative_to(path: str, ancestor: str) -> str | None:
    """``path`` seen from ``ancestor`` (``""`` for the ancestor itself); ``None`` when it is not within it."""
    if not within(path, ancestor):
        return None
    return path[len(ancestor) + 1 :] if ancestor else path


def ancestors(path: str) -> tuple[str, ...]:
    """The paths from the root down to ``path``, both included (``("",)`` for the root)."""
    parts = segments(path)
    return ("", *(".".join(parts[:k]) for k in range(1, len(parts) + 1)))


def ancestor_at(path: str, depth: int) -> str:
    """The ancestor of ``path`` at ``depth`` (the root for ``depth <= 0``); ``path`` itself when it is no deeper."""
    parts = segments(path)
    return ".".join(parts[: max(depth, 0)]) if len(parts) > depth else path


def common_ancestor(paths: Iterable[str]) -> str | None:
    """Deepest path that is an ancestor of (or equal to) every path given; ``None`` for no paths."""
    common: list[str] | None = None
    for path in paths:
        parts = segments(path)
        if common is None:
            common = parts
            continue
        n = 0
        for a, b in zip(common, parts, strict=False):
            if a != b:
                break
            n += 1
        del common[n:]
        if not common:
            return ""
    return None if common is None else ".".join(common)


# --- the tree ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ParameterInfo:
    """A parameter or buffer owned directly by a module."""

    name: str
    """Name relative to its module (``weight``)."""
    shape: tuple[int, ...]
    tied_to: str | None = None
    """Full path of the first occurrence when the tensor is shared (tied weights)."""
    dtype: str | None = None
    """PyTorch dtype name (``float32``), ``None`` when unknown."""

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int | None:
        """Size in bytes, ``None`` when the dtype is unknown."""
        size = _DTYPE_BYTES.get(self.dtype or "")
        return None if size is None else size * self.numel


_DTYPE_BYTES = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
    "complex64": 8,
    "complex128": 16,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
}


@dataclasses.dataclass(frozen=True)
class ModuleInfo:
    """One entry of ``named_modules()``."""

    path: str
    """Dotted path from the root; the root is ``""``."""
    class_name: str
    """Qualified class name (``transformers.models.bert.modeling_bert.BertLayer``)."""
    parameters: tuple[ParameterInfo, ...] = ()
    buffers: tuple[ParameterInfo, ...] = ()
    aliases: tuple[str, ...] = ()
    """Other paths of the same module object (a shared or tied module: T5's ``shared`` is also
    ``encoder.embed_tokens``); ``path`` is its first one in ``named_modules()``."""

    @property
    def parent(self) -> str | None:
        return parent_of(self.path)

    @property
    def depth(self) -> int:
        return depth_of(self.path)

    @property
    def name(self) -> str:
        return name_of(self.path)

    @property
    def parameter_count(self) -> int:
        """Number of elements of the parameters this module owns (tied copies excluded)."""
        return sum(p.numel for p in self.parameters if p.tied_to is None)

    @property
    def parameter_bytes(self) -> int:
        """Bytes of the parameters this module owns (tied copies excluded; unknown dtypes count 0)."""
        return sum(p.nbytes or 0 for p in self.parameters if p.tied_to is None)


class ModuleTree(Mapping[str, ModuleInfo]):
    """The module tree of a PyTorch model: a read-only mapping from path to :class:`ModuleInfo`.

    Its JSON form, as stored in model metadata, is :func:`optimum_hierarchy.schema.encode_module_tree`.
    """

    def __init__(self, modules: Iterable[ModuleInfo]) -> None:
        self._modules: dict[str, ModuleInfo] = {}
        for info in modules:
            if info.path in self._modules:
                raise SchemaError(f"module tree: module {info.path!r} appears twice")
            if not is_well_formed(info.path):
                raise SchemaError(f"module tree: module path {info.path!r} has an empty segment")
            self._modules[info.path] = info
        if "" not in self._modules:
            raise SchemaError("module tree: the root module (path '') is missing")
        self._children: dict[str, list[str]] = {path: [] for path in self._modules}
        for path, info in self._modules.items():
            parent = info.parent
            if parent is None:
                continue
            if parent not in self._modules:
                raise SchemaError(f"module tree: module {path!r} has no parent {parent!r} in the tree")
            self._children[parent].append(path)
        self._alias: dict[str, str] = {}
        for path, info in self._modules.items():
            for alias in info.aliases:
                if alias in self._modules or alias in self._alias or not alias or not is_well_formed(alias):
                    raise SchemaError(
                        f"module tree: alias {alias!r} of {path!r} is a module path, repeated or malformed"
                    )
                self._alias[alias] = path
        self._tensor_owner: dict[str, str] = {}
        for path, info in self._modules.items():
            for p in (*info.parameters, *info.buffers):
                self._tensor_owner.setdefault(join_path(path, p.name), path)

    def __getitem__(self, path: str) -> ModuleInfo:
        return self._modules[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModuleTree):
            return NotImplemented
        return list(self._modules.values()) == list(other._modules.values())

    __hash__ = None  # type: ignore[assignment]

    @property
    def root(self) -> ModuleInfo:
        return self._modules[""]

    def children(self, path: str) -> tuple[str, ...]:
        return tuple(self._children[path])

    def is_leaf(self, path: str) -> bool:
        return not self._children[path]

    def canonical(self, path: str) -> str | None:
        """``path`` if it is a module's path, the module's path if it is one of its aliases, else ``None``."""
        if path in self._modules:
            return path
        return self._alias.get(path)

    @property
    def aliases(self) -> Mapping[str, str]:
        """Every alias path -> the path of its module."""
        return self._alias

    def owner_of_tensor(self, full_name: str) -> str | None:
        """Module owning the parameter or buffer named ``full_name`` (``encoder.layer.0.attention.self.query.bias``)."""
        return self._tensor_owner.get(full_name)

    @staticmethod
    def lowest_common_ancestor(paths: Iterable[str]) -> str | None:
        """Deepest path that is an ancestor of (or equal to) every path given; ``None`` for no paths."""
        return common_ancestor(paths)
