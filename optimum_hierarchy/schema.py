"""optimum_hierarchy metadata in ONNX models: every key, its encoding, and how it is carried; the rest of the
package reads and writes it through the functions here (a graph rewrite may copy entries as they are).

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

* Per model, in ``ModelProto.metadata_props`` (JSON values; the provenance compressed):

  - ``pkg.optimum_hierarchy.schema_version``: ``1``.
  - ``pkg.optimum_hierarchy.modules``: the module tree of the full PyTorch model.
  - ``pkg.optimum_hierarchy.export``: what this file is (``root``: the path of the exported
    module inside the full model, ``model_type``, ``rules``).
  - ``pkg.optimum_hierarchy.summary``: node counts by source and the unattributed nodes.
  - ``pkg.optimum_hierarchy.provenance``: the graph as it was last annotated (node names, op
    types, modules, input and output tensor names), zlib-compressed JSON in base64. ONNX Runtime's
    optimizer keeps model metadata but drops node metadata; this is what lets a later annotation
    re-attribute fused nodes exactly (see :mod:`optimum_hierarchy.provenance`).
  - ``pkg.optimum_hierarchy.module_outputs``: each module's output tensors in the graph as exported,
    written once, at export.
  - ``pkg.optimum_hierarchy.precision_plan``: the plan of ``hierarchy quantize|convert --max-error``
    (the modules kept in higher precision and the error measured; :mod:`optimum_hierarchy.tools.plan`),
    written by that command only, kept when the file is re-annotated.

:data:`KEYS` lists every key we write with its encoding and what becomes of it when a graph is
transformed (optimized, quantized, converted, extracted). A model's or node's metadata is read with
:func:`read_props`; our keys on a node are a :class:`NodeRecord` (:func:`decode_node`,
:func:`encode_node`, :func:`write_node`); :func:`replace_props` puts ours onto a proto, keeping the
rest. The module tree itself and the algebra of module paths are :mod:`optimum_hierarchy.modules`
(re-exported here).
"""

from __future__ import annotations

__all__ = [
    "DIRECT_SOURCES",
    "EXPORT_KEY",
    "KEYS",
    "MODEL_KEY_PREFIX",
    "MODULES_KEY",
    "MODULE_OUTPUTS_KEY",
    "NAMESPACE_KEY",
    "NODE_MODULE_KEY",
    "NODE_REASON_KEY",
    "NODE_SOURCES_KEY",
    "NODE_SOURCE_KEY",
    "PRECISION_PLAN_KEY",
    "PROVENANCE_KEY",
    "SCHEMA_VERSION",
    "SCHEMA_VERSION_KEY",
    "SUMMARY_KEY",
    "AttributionSource",
    "AttributionSummary",
    "Carry",
    "Encoding",
    "ExportInfo",
    "HierarchyMetadata",
    "KeyRule",
    "Level",
    "ModuleInfo",
    "ModuleTree",
    "NodeRecord",
    "ParameterInfo",
    "UnattributedNode",
    "decode_model_metadata",
    "decode_module_tree",
    "decode_node",
    "decode_node_sources",
    "dumps_json",
    "encode_model_metadata",
    "encode_module_tree",
    "encode_node",
    "is_annotated",
    "is_ours",
    "loads_json",
    "namespace_of",
    "read_props",
    "replace_props",
    "set_prop",
    "update_props",
    "write_node",
]

import dataclasses
import enum
import json
from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from optimum_hierarchy.errors import MissingHierarchyError, SchemaError, UnattributedNode
from optimum_hierarchy.modules import ModuleInfo, ModuleTree, ParameterInfo

if TYPE_CHECKING:
    from typing import TypeAlias

    import onnx
    import onnx_ir as ir
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

    Entries: TypeAlias = RepeatedCompositeFieldContainer[onnx.StringStringEntryProto]
    """A proto's ``metadata_props``."""

SCHEMA_VERSION = 1

MODEL_KEY_PREFIX = "pkg.optimum_hierarchy."
SCHEMA_VERSION_KEY = MODEL_KEY_PREFIX + "schema_version"
MODULES_KEY = MODEL_KEY_PREFIX + "modules"
EXPORT_KEY = MODEL_KEY_PREFIX + "export"
SUMMARY_KEY = MODEL_KEY_PREFIX + "summary"
PROVENANCE_KEY = MODEL_KEY_PREFIX + "provenance"
MODULE_OUTPUTS_KEY = MODEL_KEY_PREFIX + "module_outputs"
PRECISION_PLAN_KEY = MODEL_KEY_PREFIX + "precision_plan"

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


class Level(str, enum.Enum):
    """Where a key is stored."""

    MODEL = "model"
    """``ModelProto.metadata_props``."""
    NODE = "node"
    """``NodeProto.metadata_props`` (of every node, subgraphs included)."""


class Encoding(str, enum.Enum):
    """How a key's value is written."""

    TEXT = "text"
    """The string itself (a module path, a source name, a reason)."""
    JSON = "json"
    """Compact JSON with sorted keys (:func:`dumps_json`)."""
    ZLIB_JSON = "zlib_json"
    """JSON, zlib-compressed, in base64 (:mod:`optimum_hierarchy.provenance`)."""


class Carry(str, enum.Enum):
    """What becomes of a key's value when the graph is transformed and then annotated again."""

    KEPT = "kept"
    """A fact about the PyTorch model or the export: copied unchanged into a graph derived from this one
    (optimized, quantized, converted, extracted), and the next annotation leaves the same value."""
    RECOMPUTED = "recomputed"
    """A fact about this graph: the next annotation writes it anew for the graph it finds. Model keys are
    copied into a derived graph meanwhile (the provenance is what that annotation re-attributes from);
    node keys are dropped by ONNX Runtime's optimizer, copied to every part of a node our tools split
    (``int4`` rewriting a ``Gemm`` as ``MatMul`` + ``Add``), and for a node that replaced several, set
    as :attr:`KeyRule.merged` says."""


@dataclasses.dataclass(frozen=True)
class KeyRule:
    """One key we write: where, how, and what becomes of it when the graph is transformed."""

    key: str
    level: Level
    encoding: Encoding
    carry: Carry
    merged: str = ""
    """For a node key, what a node that replaced several (a fusion, a quantized operator) gets. Computed
    by :mod:`optimum_hierarchy.passes.reattribute` from the stored provenance, not merged from the
    replaced nodes' metadata (ONNX Runtime drops it), unlike onnxscript's ``MetadataMerger``."""


KEYS: Mapping[str, KeyRule] = {
    rule.key: rule
    for rule in (
        KeyRule(SCHEMA_VERSION_KEY, Level.MODEL, Encoding.JSON, Carry.KEPT),
        KeyRule(MODULES_KEY, Level.MODEL, Encoding.JSON, Carry.KEPT),
        KeyRule(EXPORT_KEY, Level.MODEL, Encoding.JSON, Carry.KEPT),
        KeyRule(MODULE_OUTPUTS_KEY, Level.MODEL, Encoding.JSON, Carry.KEPT),  # written at export only
        KeyRule(PRECISION_PLAN_KEY, Level.MODEL, Encoding.JSON, Carry.KEPT),  # hierarchy quantize --max-error
        KeyRule(SUMMARY_KEY, Level.MODEL, Encoding.JSON, Carry.RECOMPUTED),
        KeyRule(PROVENANCE_KEY, Level.MODEL, Encoding.ZLIB_JSON, Carry.RECOMPUTED),
        KeyRule(
            NODE_MODULE_KEY,
            Level.NODE,
            Encoding.TEXT,
            Carry.RECOMPUTED,
            merged="the lowest common ancestor of the modules of the nodes it replaced, or a module inside it "
            "that a per-architecture rule or the node's own name gives",
        ),
        KeyRule(
            NODE_SOURCE_KEY,
            Level.NODE,
            Encoding.TEXT,
            Carry.RECOMPUTED,
            merged="fusion (rule or name where those narrowed the module)",
        ),
        KeyRule(
            NODE_SOURCES_KEY,
            Level.NODE,
            Encoding.JSON,
            Carry.RECOMPUTED,
            merged="the modules of the nodes it replaced (of a replaced fused node, the modules it stood for) "
            "that lie within its module, sorted; absent when that is its own module alone",
        ),
        KeyRule(
            NODE_REASON_KEY,
            Level.NODE,
            Encoding.TEXT,
            Carry.RECOMPUTED,
            merged="absent: a node placed from the nodes it replaced is attributed",
        ),
        KeyRule(NAMESPACE_KEY, Level.NODE, Encoding.TEXT, Carry.RECOMPUTED, merged="derived from its module"),
    )
}
"""Every key this package writes, by key."""

_NODE_KEYS = tuple(k for k, rule in KEYS.items() if rule.level is Level.NODE)


def is_ours(key: str, level: Level) -> bool:
    """Whether an annotation owns ``key`` at ``level`` (replaces it, drops it when stale).

    Every key under ``pkg.optimum_hierarchy.`` is ours, those of :data:`KEYS` and any other version of
    this package may write; so are the other keys :data:`KEYS` lists at that level (``namespace`` on nodes).
    """
    if key.startswith(MODEL_KEY_PREFIX):
        return True
    rule = KEYS.get(key)
    return rule is not None and rule.level is level


def encode_module_tree(tree: ModuleTree) -> list[dict[str, Any]]:
    """The JSON value of ``pkg.optimum_hierarchy.modules``: one record per module, in the tree's order."""
    out = []
    for path, info in tree.items():
        record: dict[str, Any] = {
            "path": path,
            "class": info.class_name,
            "parent": info.parent,
            "depth": info.depth,
            "leaf": tree.is_leaf(path),
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


def decode_module_tree(data: Any, *, key: str = MODULES_KEY) -> ModuleTree:
    """The tree :func:`encode_module_tree` encoded; a :class:`SchemaError` names ``key`` and the record."""
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
            parameters=tuple(_tensor_from_json(p, f"{where}.parameters") for p in _list(record, "parameters", where)),
            buffers=tuple(_tensor_from_json(p, f"{where}.buffers") for p in _list(record, "buffers", where)),
            aliases=tuple(_alias_from_json(a, f"{where}.aliases") for a in _list(record, "aliases", where)),
        )
        if "depth" in record and record["depth"] != info.depth:
            raise SchemaError(f"{where}: depth {record['depth']!r} does not match path {path!r}")
        if "parent" in record and record["parent"] != info.parent:
            raise SchemaError(f"{where}: parent {record['parent']!r} does not match path {path!r}")
        modules.append(info)
    return ModuleTree(modules)


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


@dataclasses.dataclass(frozen=True)
class NodeRecord:
    """Our metadata on one node: where it comes from, or why that is unknown."""

    module: str | None = None
    """The module path; ``None`` for an unattributed node."""
    source: str | None = None
    """An :class:`AttributionSource` value."""
    sources: tuple[str, ...] = ()
    """For a node that replaced several export-time nodes (a fusion, a quantized operator): their modules."""
    reason: str | None = None
    """For an unattributed node: why."""

    @property
    def namespace(self) -> str | None:
        """The ``namespace`` written beside the module (derived from it, so not read back)."""
        return None if self.module is None else namespace_of(self.module)


def decode_node(props: Mapping[str, str], node_name: str = "", *, strict: bool = True) -> NodeRecord:
    """Our metadata among a node's ``metadata_props`` (see :func:`read_props`); an empty record when there is none.

    Raises:
        SchemaError: ``pkg.optimum_hierarchy.sources`` is malformed (the message names ``node_name``).
            With ``strict=False`` such a value reads as absent instead.
    """
    try:
        sources = decode_node_sources(props.get(NODE_SOURCES_KEY), node_name)
    except SchemaError:
        if strict:
            raise
        sources = ()
    return NodeRecord(
        module=props.get(NODE_MODULE_KEY),
        source=props.get(NODE_SOURCE_KEY),
        sources=sources,
        reason=props.get(NODE_REASON_KEY),
    )


def is_annotated(props: Mapping[str, str]) -> bool:
    """Whether an annotation has seen the node: it carries a module or a reason (ONNX Runtime's optimizer
    drops both, and a node an optimizer created has neither)."""
    return NODE_MODULE_KEY in props or NODE_REASON_KEY in props


def encode_node(record: NodeRecord) -> dict[str, str]:
    """The ``metadata_props`` entries of ``record``, in the order they are written (absent fields left out)."""
    out: dict[str, str] = {}
    if record.module is not None:
        out[NODE_MODULE_KEY] = record.module
    if record.source is not None:
        out[NODE_SOURCE_KEY] = record.source
    if record.module is not None:
        out[NAMESPACE_KEY] = namespace_of(record.module)
    if record.sources:
        out[NODE_SOURCES_KEY] = dumps_json(list(record.sources))
    if record.reason is not None:
        out[NODE_REASON_KEY] = record.reason
    return out


def write_node(node: onnx.NodeProto | ir.Node, record: NodeRecord) -> bool:
    """Write ``record`` onto ``node``, replacing only the node keys of :data:`KEYS`; True when that changed it.

    Other entries stay as they are. An ``onnx_ir`` node is edited in place (an entry that stays keeps its
    place); on a ``NodeProto`` ours follow the others, sorted by key, as :func:`replace_props` writes them.
    """
    wanted = encode_node(record)
    props = node.metadata_props
    if isinstance(props, MutableMapping):
        changed = update_props(props, wanted)
        for key in _NODE_KEYS:
            if key not in wanted and key in props:
                del props[key]
                changed = True
        return changed
    before = [(p.key, p.value) for p in props]
    _rewrite(props, [(k, v) for k, v in before if k not in _NODE_KEYS], sorted(wanted.items()))
    return [(p.key, p.value) for p in props] != before


def read_props(owner: onnx.ModelProto | onnx.NodeProto | ir.Model | ir.Node) -> dict[str, str]:
    """The ``metadata_props`` of a model or node, ``onnx`` proto or ``onnx_ir`` object, as a new dict."""
    props = owner.metadata_props
    if isinstance(props, Mapping):
        return dict(props)
    return {p.key: p.value for p in props}


def replace_props(entries: Entries, values: Mapping[str, str], level: Level) -> None:
    """Replace our entries (:func:`is_ours`) of a proto's ``metadata_props`` by ours among ``values``.

    The other entries stay, in their order; ours follow them, sorted by key. This is how an annotation
    writes its result onto the file's proto, and how our model keys are copied into a derived graph.
    """
    kept = [(p.key, p.value) for p in entries if not is_ours(p.key, level)]
    _rewrite(entries, kept, sorted((k, v) for k, v in values.items() if is_ours(k, level)))


def set_prop(entries: Entries, key: str, value: str) -> None:
    """Set ``key`` in a proto's ``metadata_props`` to ``value``: its old entries removed, the new one last."""
    _rewrite(entries, [(p.key, p.value) for p in entries if p.key != key], [(key, value)])


def update_props(props: MutableMapping[str, str], values: Mapping[str, str]) -> bool:
    """Set ``values`` in an ``onnx_ir`` model's or node's ``metadata_props`` where they differ; True on a change."""
    changed = False
    for key, value in values.items():
        if props.get(key) != value:
            props[key] = value
            changed = True
    return changed


def _rewrite(entries: Entries, kept: Iterable[tuple[str, str]], ours: Iterable[tuple[str, str]]) -> None:
    """Replace the repeated ``StringStringEntryProto`` field ``entries`` by ``kept`` then ``ours``."""
    pairs = [*kept, *ours]
    del entries[:]
    for key, value in pairs:
        entries.add(key=key, value=value)


def encode_model_metadata(meta: HierarchyMetadata) -> dict[str, str]:
    """Model-level ``metadata_props`` entries for ``meta``; deterministic (sorted keys, no spaces)."""
    out = {
        SCHEMA_VERSION_KEY: dumps_json(meta.schema_version),
        MODULES_KEY: dumps_json(encode_module_tree(meta.tree)),
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
    tree = decode_module_tree(loads_json(props[MODULES_KEY], MODULES_KEY))
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
