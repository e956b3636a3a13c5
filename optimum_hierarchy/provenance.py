"""Provenance: the annotated graph's topology, stored in model metadata so fused nodes can be re-attributed.

ONNX Runtime's optimizer (``ORTOptimizer``, ``optimum-cli ... --optimize``) drops every node's
``metadata_props`` but keeps the model's. Each annotation therefore also stores, under
``pkg.optimum_hierarchy.provenance``, a snapshot of the graph it has just attributed: for every node
(subgraphs included) its name, op type, module, attribution source, the modules it stands for when
it is itself a fused node, and its input and output tensor names. The next annotation of the same
file, after an optimizer or quantizer rewrote it, compares the new graph with that snapshot (see
:mod:`optimum_hierarchy.passes.reattribute`) and then stores a snapshot of the new graph.

Encoding: one JSON object ``{"v": 1, "s": [strings], "n": [[name, op, module, source, [sources],
[inputs], [outputs]], ...]}`` where every string is an index into ``s`` (``-1``: no module), compressed
with zlib and written as base64 text. Tensor and node names of TorchScript exports repeat long
scope prefixes, so this costs about 0.1% of a base-size model's file.
"""

from __future__ import annotations

__all__ = [
    "PROVENANCE_VERSION",
    "NodeTable",
    "Provenance",
    "ProvenanceNode",
    "decode_module_outputs",
    "decode_provenance",
    "encode_module_outputs",
    "encode_provenance",
    "module_outputs",
    "provenance_from_node_metadata",
    "snapshot",
]

import base64
import binascii
import dataclasses
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from optimum_hierarchy.errors import SchemaError
from optimum_hierarchy.modules import common_ancestor, parent_of
from optimum_hierarchy.schema import (
    MODULE_OUTPUTS_KEY,
    PROVENANCE_KEY,
    decode_node,
    dumps_json,
    is_annotated,
    loads_json,
    read_props,
)
from optimum_hierarchy.walk import iter_proto_nodes

if TYPE_CHECKING:
    import onnx

PROVENANCE_VERSION = 1

# Untrusted files: bound what the compressed value may expand to.
_MAX_DECOMPRESSED = 512 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ProvenanceNode:
    """One node of the graph as it was annotated."""

    name: str
    op_type: str
    module: str | None
    source: str
    """The :class:`~optimum_hierarchy.schema.AttributionSource` value it was attributed with."""
    sources: tuple[str, ...]
    """Modules of the original nodes it stands for when it is a fused node; empty otherwise."""
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Provenance:
    nodes: tuple[ProvenanceNode, ...]


@dataclasses.dataclass(frozen=True)
class NodeTable:
    """A graph's nodes (subgraphs included, in walk order) as parallel sequences."""

    names: Sequence[str]
    op_types: Sequence[str]
    inputs: Sequence[Sequence[str]]
    """Input tensor names; ``""`` for an omitted optional input."""
    outputs: Sequence[Sequence[str]]

    def __len__(self) -> int:
        return len(self.names)


def encode_provenance(provenance: Provenance) -> str:
    strings: dict[str, int] = {}

    def ref(text: str) -> int:
        index = strings.get(text)
        if index is None:
            index = strings[text] = len(strings)
        return index

    rows = []
    for node in provenance.nodes:
        rows.append(
            [
                ref(node.name),
                ref(node.op_type),
                -1 if node.module is None else ref(node.module),
                ref(node.source),
                [ref(s) for s in node.sources],
                [ref(t) for t in node.inputs],
                [ref(t) for t in node.outputs],
            ]
        )
    payload = dumps_json({"v": PROVENANCE_VERSION, "s": list(strings), "n": rows})
    return base64.b64encode(zlib.compress(payload.encode("utf-8"), 9)).decode("ascii")


def decode_provenance(props: Mapping[str, str]) -> Provenance | None:
    """The provenance stored in model ``metadata_props``; ``None`` when there is none.

    Raises:
        SchemaError: the value is there but malformed (the message names the key).
    """
    text = props.get(PROVENANCE_KEY)
    if text is None:
        return None
    key = PROVENANCE_KEY
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise SchemaError(f"{key}: not base64 text ({e})") from e
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(raw, _MAX_DECOMPRESSED)
    except zlib.error as e:
        raise SchemaError(f"{key}: not zlib-compressed data ({e})") from e
    if inflater.unconsumed_tail:
        raise SchemaError(f"{key}: expands beyond {_MAX_DECOMPRESSED} bytes")
    if not inflater.eof:
        raise SchemaError(f"{key}: compressed data is truncated")
    try:
        payload = loads_json(data.decode("utf-8"), key)
    except UnicodeDecodeError as e:
        raise SchemaError(f"{key}: not UTF-8 ({e})") from e
    if not isinstance(payload, dict) or payload.get("v") != PROVENANCE_VERSION:
        version = payload.get("v") if isinstance(payload, dict) else None
        raise SchemaError(f"{key}: unknown provenance version {version!r} (this version reads {PROVENANCE_VERSION})")
    strings, rows = payload.get("s"), payload.get("n")
    if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
        raise SchemaError(f"{key}: 's' must be a list of strings")
    if not isinstance(rows, list):
        raise SchemaError(f"{key}: 'n' must be a list of nodes")

    def get(index: object, where: str) -> str:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(strings):
            raise SchemaError(f"{key}: {where}: {index!r} is not an index into the string table")
        text: str = strings[index]
        return text

    def get_all(indexes: object, where: str) -> tuple[str, ...]:
        if not isinstance(indexes, list):
            raise SchemaError(f"{key}: {where}: expected a list")
        return tuple(get(i, where) for i in indexes)

    nodes = []
    for i, row in enumerate(rows):
        where = f"node {i}"
        if not isinstance(row, list) or len(row) != 7:
            raise SchemaError(f"{key}: {where}: expected a list of 7 fields")
        module_ref = row[2]
        nodes.append(
            ProvenanceNode(
                name=get(row[0], where),
                op_type=get(row[1], where),
                module=None if module_ref == -1 else get(module_ref, where),
                source=get(row[3], where),
                sources=get_all(row[4], where),
                inputs=get_all(row[5], where),
                outputs=get_all(row[6], where),
            )
        )
    return Provenance(nodes=tuple(nodes))


def snapshot(
    table: NodeTable, modules: Mapping[int, str], sources: Mapping[int, str], fused: Mapping[int, tuple[str, ...]]
) -> Provenance:
    """The provenance of an attributed graph (modules, sources and fused source modules by node index)."""
    return Provenance(
        nodes=tuple(
            ProvenanceNode(
                name=table.names[i],
                op_type=table.op_types[i],
                module=modules.get(i),
                source=sources.get(i, "unattributed"),
                sources=fused.get(i, ()),
                inputs=tuple(table.inputs[i]),
                outputs=tuple(table.outputs[i]),
            )
            for i in range(len(table))
        )
    )


def module_outputs(
    table: NodeTable, modules: Mapping[int, str], main: Sequence[bool], graph_outputs: Sequence[str]
) -> dict[str, list[str]]:
    """Each module's output tensors in the graph as exported: what its nodes produce and others read.

    A tensor produced by a main-graph node of module ``p`` is an output of ``p`` and of each of its
    ancestors that some reader of the tensor (any node, subgraphs included) lies outside of; a graph
    output is an output of every one of them up to the root. Tensors are listed in the order they
    are produced. Stored once, at export (key ``pkg.optimum_hierarchy.module_outputs``): optimizers
    keep the names of the tensors a fused subgraph produced, so a module whose output tensor still
    exists can be compared with its PyTorch output by name.
    """
    readers: dict[str, list[str | None]] = {}
    for i, names in enumerate(table.inputs):
        for name in names:
            if name:
                readers.setdefault(name, []).append(modules.get(i))
    final = set(graph_outputs)
    result: dict[str, list[str]] = {}
    for i, names in enumerate(table.outputs):
        producer = modules.get(i)
        if producer is None or not main[i]:
            continue
        for name in names:
            if not name or (name not in final and name not in readers):
                continue
            if name in final or None in readers.get(name, ()):
                top: str | None = None  # read by the graph's caller (or an unattributed node): up to the root
            else:
                top = common_ancestor([producer, *(r for r in readers[name] if r is not None)])
            path: str | None = producer
            while path is not None and path != top:
                result.setdefault(path, []).append(name)
                path = parent_of(path)
    return result


def encode_module_outputs(outputs: Mapping[str, Sequence[str]]) -> str:
    return dumps_json({module: list(names) for module, names in outputs.items()})


def decode_module_outputs(props: Mapping[str, str]) -> dict[str, tuple[str, ...]] | None:
    """The export-time module outputs stored in model ``metadata_props``; ``None`` when there are none.

    Raises:
        SchemaError: the value is there but malformed (the message names the key).
    """
    text = props.get(MODULE_OUTPUTS_KEY)
    if text is None:
        return None
    value = loads_json(text, MODULE_OUTPUTS_KEY)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(n, str) for n in v) for k, v in value.items()
    ):
        raise SchemaError(f"{MODULE_OUTPUTS_KEY}: expected an object mapping module paths to lists of tensor names")
    return {k: tuple(v) for k, v in value.items()}


def provenance_from_node_metadata(proto: onnx.ModelProto) -> Provenance:
    """The provenance of a graph whose nodes already carry their attribution (module, source, sources).

    For a file assembled from annotated files rather than annotated itself: Optimum's merged decoder,
    whose two ``If`` branches copy the nodes of the two decoders, each just re-attributed from its
    own provenance. Annotating the file with this provenance keeps every such node where it was.
    """
    # A node no annotation has seen (the merged file's If, the constants the merge added) is left out: it is
    # new, and gets its module from the generic evidence.
    seen: list[tuple[onnx.NodeProto, dict[str, str]]] = []
    for node, _ in iter_proto_nodes(proto.graph):
        props = read_props(node)
        if is_annotated(props):
            seen.append((node, props))
    nodes = [node for node, _ in seen]
    modules: dict[int, str] = {}
    sources: dict[int, str] = {}
    fused: dict[int, tuple[str, ...]] = {}
    for i, (node, props) in enumerate(seen):
        # A malformed sources value stands for nothing, as if absent.
        record = decode_node(props, node.name, strict=False)
        if record.module is not None:
            modules[i] = record.module
            sources[i] = record.source if record.source is not None else "unattributed"
        if record.sources:
            fused[i] = record.sources
    table = NodeTable(
        names=[n.name for n in nodes],
        op_types=[n.op_type for n in nodes],
        inputs=[list(n.input) for n in nodes],
        outputs=[list(n.output) for n in nodes],
    )
    return snapshot(table, modules, sources, fused)
