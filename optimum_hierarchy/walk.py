"""Walks over every node of a model, subgraphs included, in one fixed order for protos and onnx_ir."""

from __future__ import annotations

__all__ = ["Site", "check_text", "find_non_text", "iter_ir_sites", "iter_proto_nodes", "subgraphs"]

import dataclasses
from collections.abc import Iterator

import onnx
import onnx_ir as ir

from optimum_hierarchy.errors import InvalidModelFileError


@dataclasses.dataclass
class Site:
    """An onnx_ir node and where it lives."""

    node: ir.Node
    graph_name: str
    parent: ir.Node | None
    """The node whose subgraph attribute holds this node (``If``, ``Loop``, ``Scan``), if any."""


def iter_ir_sites(graph: ir.Graph, parent: ir.Node | None = None) -> Iterator[Site]:
    """Each node, then the nodes of its graph attributes (in attribute order), depth first."""
    for node in graph:
        yield Site(node, graph.name or "", parent)
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                yield from iter_ir_sites(attr.as_graph(), node)
            elif attr.type == ir.AttributeType.GRAPHS:
                for sub in attr.as_graphs():
                    yield from iter_ir_sites(sub, node)


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs held by the node's attributes (``If`` branches, ``Loop`` / ``Scan`` bodies), in attribute order."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def iter_proto_nodes(graph: onnx.GraphProto) -> Iterator[tuple[onnx.NodeProto, str]]:
    """(node, graph name) in the same order as :func:`iter_ir_sites` on the deserialized graph."""
    for node in graph.node:
        yield node, graph.name
        if node.attribute:  # skips a generator per plain node: a fifth of the walk's time
            for sub in subgraphs(node):
                yield from iter_proto_nodes(sub)


def find_non_text(model: onnx.ModelProto) -> str | None:
    """Which text field of ``model`` is not UTF-8, or ``None`` when they all are.

    ONNX's protobuf strings must be UTF-8; a file that breaks this still parses, but protobuf hands
    such a field over as ``bytes``, where every reader expects ``str``. Checked: model and node
    metadata, and the names of nodes, op types, domains, tensors, graphs and attributes.
    """
    # str.join refuses bytes: one C-level pass per node instead of an isinstance per field.
    join = "".join
    try:
        join([p.key + p.value for p in model.metadata_props])
    except TypeError:
        return "a model metadata entry"
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        try:
            join((graph.name, *(t.name for t in graph.initializer)))
            join(v.name for v in (*graph.input, *graph.output, *graph.value_info))
        except TypeError:
            return f"a tensor name in graph {graph.name!r}"
        for node in graph.node:
            try:
                join((node.name, node.op_type, node.domain, *node.input, *node.output))
                if node.attribute:
                    join(a.name for a in node.attribute)
                if node.metadata_props:
                    join([p.key + p.value for p in node.metadata_props])
            except TypeError:
                return f"a name or metadata entry of node {node.name!r}"
            if node.attribute:
                stack.extend(subgraphs(node))
    return None


def check_text(model: onnx.ModelProto, where: str) -> None:
    """Raise :class:`InvalidModelFileError` when a text field of ``model`` is not UTF-8 (see :func:`find_non_text`)."""
    found = find_non_text(model)
    if found is not None:
        raise InvalidModelFileError(f"{where}: not a valid ONNX model: {found} is not UTF-8 text.")
