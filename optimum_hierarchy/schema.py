"""The only code that reads or writes optimum_hierarchy metadata in ONNX models.

Layout (schema version 1):

* Per node, in ``NodeProto.metadata_props``:

  - ``pkg.optimum_hierarchy.module``: the module path (``encoder.layer.0.attention.self``;
    the empty string is the root module). Absent when the node could not be attributed.
  - ``pkg.optimum_hierarchy.source``: how the path was found, one of :class:`AttributionSource`.
  - ``pkg.optimum_hierarchy.reason``: only on unattributed nodes, why.
  - ``pkg.optimum_hierarchy.sources``: only on nodes that stand for several original nodes (a
    fusion by ONNX Runtime's optimizer, a quantized operator): a JSON list of the module paths of
    the export-time nodes it replaced. The node's module is their lowest common ancestor (or a
    narrower module a rule or the node's name points to).
  - ``namespace``: the module path as ``/``-separated tree levels
    (``encoder/layer/0/attention/self``), the key Google's Model Explorer groups nodes by.

  These values are single strings and are stored as plain text; everything structured is JSON.

* Per model, in ``ModelProto.metadata_props`` (all values JSON):

  - ``pkg.optimum_hierarchy.schema_version``: ``1``.
  - ``pkg.optimum_hierarchy.modules``: the module tree of the full PyTorch model.
  - ``pkg.optimum_hierarchy.export``: what this file is (``root``: the path of the exported
    module inside the full model, ``model_type``, ``rules``).
  - ``pkg.optimum_hierarchy.summary``: node counts by source and the unattributed nodes.
  - ``pkg.optimum_hierarchy.provenance``: the graph as it was last annotated (node names, op
    types, modules, input and output tensor names), zlib-compressed JSON in base64. ONNX Runtime's
    optimizer keeps model metadata but drops node metadata; this is what lets a later annotation
    re-attribute fused nodes exactly (see :mod:`optimum_hierarchy.provenance`).
"""

from __future__ import annotations

__all__ = [
    "DIRECT_SOURCES",
    "EXPORT_KEY",
    "MODEL_KEY_PREFIX",
    "MODULES_KEY",
    "MODULE_OUTPUTS_KEY",
    "NAMESPACE_KEY",
    "NODE_MODULE_KEY",
    "NODE_REASON_KEY",
    "NODE_SOURCES_KEY",
    "NODE_SOURCE_KEY",
    "PROVENANCE_KEY",
    "SCHEMA_VERSION",
    "SCHEMA_VERSION_KEY",
    "SUMMARY_KEY",
    "AttributionSource",
    "AttributionSummary",
    "ExportInfo",
    "HierarchyMetadata",
    "ModuleInfo",
    "ModuleTree",
    "ParameterInfo",
    "UnattributedNode",
    "decode_model_metadata",
    "decode_node_sources",
    "dumps_json",
    "encode_model_metadata",
    "loads_json",
    "namespace_of",
]

import dataclasses
import enum
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from optimum_hierarchy.errors import MissingHierarchyError, SchemaError

SCHEMA_VERSION = 1

MODEL_KEY_PREFIX = "pkg.optimum_hierarchy."
SCHEMA_VERSION_KEY = MODEL_KEY_PREFIX + "schema_version"
MODULES_KEY = MODEL_KEY_PREFIX + "modules"
EXPORT_KEY = MODEL_KEY_PREFIX + "export"
SUMMARY_KEY = MODEL_KEY_PREFIX + "summary"
PROVENANCE_KEY = MODEL_KEY_PREFIX + "provenance"
MODULE_OUTPUTS_KEY = MODEL_KEY_PREFIX + "module_outputs"

NODE_MODULE_KEY = MODEL_KEY_PREFIX + "module"
NODE_SOURCE_KEY = MODEL_KEY_PREFIX + "source"
NODE_REASON_KEY = MODEL_KEY_PREFIX + "reason"
NODE_SOURCES_KEY = MODEL_KEY_PREFIX + "sources"
NAMESPACE_KEY = "namespace"

# Untrusted files: bound what a JSON value may cost to parse.
_MAX_JSON_CHARS = 64 * 1024 * 1024
_MAX_JSON_DEPTH = 32


class AttributionSource(str, enum.Enum):
    """How a node's module was found."""

    SCOPE = "scope"
    """From the TorchScript scope in the node name (``/encoder/layer.0/.../MatMul``)."""
    METADATA = "metadata"
    """From the exporter's own node metadata: the module paths torch's dynamo exporter writes under
    ``pkg.torch.onnx.name_scopes``."""
    PARAMETER = "parameter"
    """From the parameters or buffers the node reads, writes or aliases."""
    CONTEXT = "context"
    """Lowest common ancestor of the modules of the nodes that consume (or produce) its values."""
    SUBGRAPH = "subgraph"
    """Inherited from the ``If`` / ``Loop`` / ``Scan`` node whose body holds the node."""
    FUSION = "fusion"
    """A node created by an optimizer or quantizer: the lowest common ancestor of the modules of the
    export-time nodes it replaced, found from the stored provenance."""
    RULE = "rule"
    """From a per-architecture rule (``configs/*.json``) applied to the node's op type and tensors."""
    NAME = "name"
    """From the scope in the node's name or its output tensors' names, without export-time capture
    (a file annotated after the fact), or a created node named after the node it replaced."""
    UNATTRIBUTED = "unattributed"
    """Not placed; the node carries a reason instead of a module."""


DIRECT_SOURCES = frozenset(
    {
        AttributionSource.SCOPE.value,
        AttributionSource.METADATA.value,
        AttributionSource.PARAMETER.value,
        AttributionSource.FUSION.value,
        AttributionSource.RULE.value,
        AttributionSource.NAME.value,
    }
)
"""Sources that read evidence about the node itself; ``context`` and ``subgraph`` only infer from
neighbours what those found."""


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
        if not self.path:
            return None
        return self.path.rpartition(".")[0]

    @property
    def depth(self) -> int:
        return 0 if not self.path else self.path.count(".") + 1

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]

    @property
    def parameter_count(self) -> int:
        """Number of elements of the parameters this module owns (tied copies excluded)."""
        return sum(p.numel for p in self.parameters if p.tied_to is None)

    @property
    def parameter_bytes(self) -> int:
        """Bytes of the parameters this module owns (tied copies excluded; unknown dtypes count 0)."""
        return sum(p.nbytes or 0 for p in self.parameters if p.tied_to is None)


class ModuleTree(Mapping[str, ModuleInfo]):
    """The module tree of a PyTorch model: a read-only mapping from path to :class:`ModuleInfo`."""

    def __init__(self, modules: Iterable[ModuleInfo]) -> None:
        self._modules: dict[str, ModuleInfo] = {}
        for info in modules:
            if info.path in self._modules:
                raise SchemaError(f"module tree: module {info.path!r} appears twice")
            if info.path and "" in info.path.split("."):
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
                if alias in self._modules or alias in self._alias or not alias or "" in alias.split("."):
                    raise SchemaError(
                        f"module tree: alias {alias!r} of {path!r} is a module path, repeated or malformed"
                    )
                self._alias[alias] = path
        self._tensor_owner: dict[str, str] = {}
        for path, info in self._modules.items():
            for p in (*info.parameters, *info.buffers):
                full = f"{path}.{p.name}" if path else p.name
                self._tensor_owner.setdefault(full, path)

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
        common: list[str] | None = None
        for path in paths:
            parts = path.split(".") if path else []
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

    def to_json(self) -> list[dict[str, Any]]:
        out = []
        for path, info in self._modules.items():
            record: dict[str, Any] = {
                "path": path,
                "class": info.class_name,
                "parent": info.parent,
                "depth": info.depth,
                "leaf": self.is_leaf(path),
            }
            if info.parameters:
                record["parameters"] = [_tensor_to_json(p) for p in info.parameters]
                record["parameter_count"] = info.parameter_count
            if info.buffers:
                record["buffers"] = [_tensor_to_json(p) for p in info.buffers]
            if info.aliases:
                record["aliases"] = list(info.aliases)
            out.append(record)
        return out

    @classmethod
    def from_json(cls, data: Any, *, key: str = MODULES_KEY) -> ModuleTree:
        if not isinstance(data, list):
            raise SchemaError(f"{key}: expected a JSON list of modules, got {type(data).__name__}")
        modules = []
        for i, record in enumerate(data):
            where = f"{key}[{i}]"
            if not isinstance(record, dict):
                raise SchemaError(f"{where}: expected an object")
            path = _expect(record, "path", str, where)
            class_name = _expect(record, "class", str, where)
            info = ModuleInfo(
                path=path,
                class_name=class_name,
                parameters=tuple(
                    _tensor_from_json(p, f"{where}.parameters") for p in _list(record, "parameters", where)
                ),
                buffers=tuple(_tensor_from_json(p, f"{where}.buffers") for p in _list(record, "buffers", where)),
                aliases=tuple(_alias_from_json(a, f"{where}.aliases") for a in _list(record, "aliases", where)),
            )
            if "depth" in record and record["depth"] != info.depth:
                raise SchemaError(f"{where}: depth {record['depth']!r} does not match path {path!r}")
            if "parent" in record and record["parent"] != info.parent:
                raise SchemaError(f"{where}: parent {record['parent']!r} does not match path {path!r}")
            modules.append(info)
        return cls(modules)


def _alias_from_json(data: Any, where: str) -> str:
    if not isinstance(data, str):
        raise SchemaError(f"{where}: expected a module path string, got {type(data).__name__}")
    return data


def _tensor_to_json(p: ParameterInfo) -> dict[str, Any]:
    record: dict[str, Any] = {"name": p.name, "shape": list(p.shape)}
    if p.tied_to is not None:
        record["tied_to"] = p.tied_to
    if p.dtype is not None:
        record["dtype"] = p.dtype
    return record


def _tensor_from_json(data: Any, where: str) -> ParameterInfo:
    if not isinstance(data, dict):
        raise SchemaError(f"{where}: expected an object")
    shape = _expect(data, "shape", list, where)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise SchemaError(f"{where}: shape must be a list of non-negative integers")
    tied = data.get("tied_to")
    if tied is not None and not isinstance(tied, str):
        raise SchemaError(f"{where}: tied_to must be a string")
    dtype = data.get("dtype")
    if dtype is not None and not isinstance(dtype, str):
        raise SchemaError(f"{where}: dtype must be a string")
    return ParameterInfo(name=_expect(data, "name", str, where), shape=tuple(shape), tied_to=tied, dtype=dtype)


def _list(record: Mapping[str, Any], field: str, where: str) -> list[Any]:
    """An optional list field (empty when absent)."""
    value = record.get(field, [])
    if not isinstance(value, list):
        raise SchemaError(f"{where}.{field}: expected a list, got {type(value).__name__}")
    return value


def _expect(record: Mapping[str, Any], field: str, typ: type, where: str) -> Any:
    if field not in record:
        raise SchemaError(f"{where}: missing field {field!r}")
    value = record[field]
    if not isinstance(value, typ) or isinstance(value, bool):
        raise SchemaError(f"{where}.{field}: expected {typ.__name__}, got {type(value).__name__}")
    return value


@dataclasses.dataclass(frozen=True)
class ExportInfo:
    """What an annotated file is, relative to the full model."""

    root: str = ""
    """Path, in the full model, of the module that was exported to this file."""
    model_type: str | None = None
    model_class: str | None = None
    rules: str | None = None
    """Name of the architecture rules used, ``None`` when the generic mechanism ran alone."""


@dataclasses.dataclass(frozen=True)
class UnattributedNode:
    node: str
    op_type: str
    graph: str
    reason: str


@dataclasses.dataclass(frozen=True)
class AttributionSummary:
    """Counts of an attribution run over one model file (subgraphs included)."""

    nodes: int
    by_source: Mapping[str, int]
    unattributed: tuple[UnattributedNode, ...] = ()

    @property
    def attributed(self) -> int:
        return self.nodes - len(self.unattributed)

    @property
    def coverage(self) -> float:
        return 1.0 if self.nodes == 0 else self.attributed / self.nodes

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "attributed": self.attributed,
            "by_source": dict(sorted(self.by_source.items())),
            "unattributed": [dataclasses.asdict(u) for u in self.unattributed],
        }

    @classmethod
    def from_json(cls, data: Any, *, key: str = SUMMARY_KEY) -> AttributionSummary:
        if not isinstance(data, dict):
            raise SchemaError(f"{key}: expected an object")
        nodes = _expect(data, "nodes", int, key)
        if nodes < 0:
            raise SchemaError(f"{key}.nodes: expected a count, got {nodes}")
        by_source = _expect(data, "by_source", dict, key)
        if not all(isinstance(k, str) and _is_count(v) for k, v in by_source.items()):
            raise SchemaError(f"{key}.by_source: expected a mapping of source name to count")
        unattributed = []
        for i, u in enumerate(_list(data, "unattributed", key)):
            where = f"{key}.unattributed[{i}]"
            if not isinstance(u, dict):
                raise SchemaError(f"{where}: expected an object")
            unattributed.append(
                UnattributedNode(**{f: _expect(u, f, str, where) for f in ("node", "op_type", "graph", "reason")})
            )
        return cls(nodes=nodes, by_source=by_source, unattributed=tuple(unattributed))

    @property
    def direct(self) -> int:
        """Nodes placed by evidence about themselves (:data:`DIRECT_SOURCES`), not inferred from neighbours."""
        return sum(n for source, n in self.by_source.items() if source in DIRECT_SOURCES)

    @property
    def without_evidence(self) -> bool:
        """True when no node carries evidence of its own: every module is then a guess from neighbours."""
        return self.nodes > 0 and self.direct == 0

    def describe(self) -> str:
        """One line, e.g. ``210/210 nodes attributed (100.0%): scope 199, context 11``."""
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.by_source.items(), key=lambda kv: (-kv[1], kv[0])))
        line = f"{self.attributed}/{self.nodes} nodes attributed ({100.0 * self.coverage:.1f}%): {parts}"
        if self.without_evidence:
            line += " (no node carries evidence of its own: no scope, exporter metadata or parameter name)"
        return line


@dataclasses.dataclass(frozen=True)
class HierarchyMetadata:
    """Everything stored at model level."""

    tree: ModuleTree
    export: ExportInfo
    summary: AttributionSummary | None = None
    schema_version: int = SCHEMA_VERSION


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def decode_node_sources(text: str | None, node_name: str) -> tuple[str, ...]:
    """A node's ``pkg.optimum_hierarchy.sources`` (the modules a fused node stands for); ``()`` when absent."""
    if text is None:
        return ()
    value = loads_json(text, f"{NODE_SOURCES_KEY} of node {node_name!r}")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SchemaError(f"{NODE_SOURCES_KEY} of node {node_name!r}: expected a JSON list of module paths")
    return tuple(value)


def namespace_of(path: str) -> str:
    """Model Explorer namespace of a module path: one ``/``-separated level per tree level."""
    return path.replace(".", "/")


def encode_model_metadata(meta: HierarchyMetadata) -> dict[str, str]:
    """Model-level ``metadata_props`` entries for ``meta``; deterministic (sorted keys, no spaces)."""
    out = {
        SCHEMA_VERSION_KEY: dumps_json(meta.schema_version),
        MODULES_KEY: dumps_json(meta.tree.to_json()),
        EXPORT_KEY: dumps_json(dataclasses.asdict(meta.export)),
    }
    if meta.summary is not None:
        out[SUMMARY_KEY] = dumps_json(meta.summary.to_json())
    return out


def decode_model_metadata(props: Mapping[str, str], *, source: str = "model") -> HierarchyMetadata:
    """Decode model-level ``metadata_props``.

    Raises:
        MissingHierarchyError: ``props`` has no hierarchy metadata.
        SchemaError: it has, but it is malformed or of an unknown schema version.
    """
    if SCHEMA_VERSION_KEY not in props:
        raise MissingHierarchyError(
            f"{source} has no hierarchy metadata (no {SCHEMA_VERSION_KEY!r} key). "
            f"Annotate it with `optimum-cli hierarchy annotate {source}` (add `--config MODEL_DIR` if no config.json "
            "is beside it), or export it with `optimum-cli export onnx --hierarchy ...`."
        )
    version = loads_json(props[SCHEMA_VERSION_KEY], SCHEMA_VERSION_KEY)
    if type(version) is not int or version != SCHEMA_VERSION:  # not True, not 1.0
        raise SchemaError(
            f"{SCHEMA_VERSION_KEY}: {source} uses hierarchy schema version {version!r}; this version of "
            f"optimum_hierarchy reads version {SCHEMA_VERSION} only. Upgrade optimum_hierarchy."
        )
    for key in (MODULES_KEY, EXPORT_KEY):
        if key not in props:
            raise SchemaError(f"{key}: missing from {source}")
    tree = ModuleTree.from_json(loads_json(props[MODULES_KEY], MODULES_KEY))
    export_raw = loads_json(props[EXPORT_KEY], EXPORT_KEY)
    if not isinstance(export_raw, dict):
        raise SchemaError(f"{EXPORT_KEY}: expected an object")
    fields = {f.name for f in dataclasses.fields(ExportInfo)}
    for field, value in export_raw.items():
        if field in fields and not (isinstance(value, str) or (value is None and field != "root")):
            raise SchemaError(f"{EXPORT_KEY}.{field}: expected a string, got {type(value).__name__}")
    export = ExportInfo(**{k: v for k, v in export_raw.items() if k in fields})
    if export.root not in tree:
        raise SchemaError(f"{EXPORT_KEY}: root {export.root!r} is not a module of the stored tree")
    summary = None
    if SUMMARY_KEY in props:
        summary = AttributionSummary.from_json(loads_json(props[SUMMARY_KEY], SUMMARY_KEY))
    return HierarchyMetadata(tree=tree, export=export, summary=summary, schema_version=version)


def dumps_json(value: Any) -> str:
    """Deterministic compact JSON (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def loads_json(text: str, key: str) -> Any:
    """Parse an untrusted JSON value, bounded in size and depth; a :class:`SchemaError` names ``key``."""
    if len(text) > _MAX_JSON_CHARS:
        raise SchemaError(f"{key}: value is {len(text)} characters, over the limit of {_MAX_JSON_CHARS}")
    try:
        # ValueError also covers integers longer than Python's int-to-string digit limit.
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise SchemaError(f"{key}: not valid JSON ({e})") from e
    _check_value(value, key)
    return value


def _check_value(value: Any, key: str) -> None:
    """Depth within the limit, and every string valid Unicode (``"\\ud800"`` decodes to a lone surrogate,
    which could never be written back into a protobuf string)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_JSON_DEPTH:
            raise SchemaError(f"{key}: JSON nested deeper than {_MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((k, depth + 1) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as e:
                raise SchemaError(f"{key}: a string is not valid Unicode ({e})") from e
