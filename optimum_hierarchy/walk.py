"""Walks over every node of a model, subgraphs included, in one fixed order for protos and onnx_ir."""

from __future__ import annotations

__all__ = ["Site", "iter_ir_sites", "iter_proto_nodes"]

import dataclasses
from collections.abc import Iterator

import onnx
import onnx_ir as ir


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


def iter_proto_nodes(graph: onnx.GraphProto) -> Iterator[tuple[onnx.NodeProto, str]]:
    """(node, graph name) in the same order as :func:`iter_ir_sites` on the deserialized graph."""
    for node in graph.node:
        yield node, graph.name
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_proto_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from iter_proto_nodes(sub)
