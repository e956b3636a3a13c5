"""The boundary of a module in a graph: the tensors that enter its nodes and the tensors that leave them.

A module's nodes are the main-graph nodes attributed to it or to a module below it (an ``If`` /
``Loop`` / ``Scan`` body goes with the node that holds it). Its *inputs* are the tensors those nodes
read (bodies' outer-scope references included) that none of them produces and that are not
initializers; its *initializers* are the initializers they read; its *outputs* are the tensors they
produce that a node outside the module reads or that are graph outputs.
"""

from __future__ import annotations

__all__ = ["BoundaryFinder", "ModuleBoundary", "module_boundary", "outer_scope_inputs", "tensor_types"]

import dataclasses
from collections.abc import Iterable, Sequence

import onnx

from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.retriever import HierarchyRetriever
from optimum_hierarchy.walk import subgraphs


@dataclasses.dataclass(frozen=True)
class ModuleBoundary:
    module: str
    nodes: tuple[int, ...]
    """Indexes of the module's nodes in ``graph.node`` (graph order)."""
    inputs: tuple[str, ...]
    initializers: tuple[str, ...]
    outputs: tuple[str, ...]
    """In the order their producing nodes come in the graph."""


def outer_scope_inputs(node: onnx.NodeProto) -> list[str]:
    """Names a node's subgraphs read from the enclosing scopes (in first-use order)."""
    seen: dict[str, None] = {}

    def visit(graph: onnx.GraphProto, defined: set[str]) -> None:
        local = set(defined)
        local.update(i.name for i in graph.input)
        local.update(t.name for t in graph.initializer)
        local.update(t.name for t in graph.sparse_initializer)
        for inner in graph.node:
            for name in inner.input:
                if name and name not in local:
                    seen.setdefault(name, None)
            for sub in subgraphs(inner):
                visit(sub, local)
            local.update(o for o in inner.output if o)
        for output in graph.output:
            if output.name not in local:
                seen.setdefault(output.name, None)

    for sub in subgraphs(node):
        visit(sub, set())
    return list(seen)


def _reads(node: onnx.NodeProto) -> list[str]:
    return [name for name in (*node.input, *outer_scope_inputs(node)) if name]


def module_boundary(proto: onnx.ModelProto, retriever: HierarchyRetriever, module: str) -> ModuleBoundary:
    """The boundary of ``module`` in the main graph of ``proto`` (the model ``retriever`` reads).

    Raises:
        KeyError: no such module (the message lists what to run to see the modules).
        HierarchyError: the module has no node in the main graph.
    """
    return BoundaryFinder(proto, retriever).boundary(module)


class BoundaryFinder:
    """Boundaries of several modules of one graph: what each node reads is worked out once."""

    def __init__(self, proto: onnx.ModelProto, retriever: HierarchyRetriever) -> None:
        self._graph = proto.graph
        self._retriever = retriever
        self._reads = [_reads(node) for node in self._graph.node]
        self._readers: dict[str, set[int]] = {}
        for i, names in enumerate(self._reads):
            for name in names:
                self._readers.setdefault(name, set()).add(i)
        self._graph_outputs = {o.name for o in self._graph.output}
        self._initializers = {t.name for t in self._graph.initializer} | {
            t.name for t in self._graph.sparse_initializer
        }

    def boundary(self, module: str) -> ModuleBoundary:
        """As :func:`module_boundary`."""
        graph = self._graph
        names = {n.name for n in self._retriever.get_nodes_by_module(module, subtree=True) if n.graph == graph.name}
        indexes = tuple(i for i, node in enumerate(graph.node) if node.name in names)
        if not indexes:
            raise HierarchyError(
                f"Module {module!r} has no node in the main graph (its computation may have been folded away, or "
                "lie inside a subgraph of another module's node); see `optimum-cli hierarchy nodes FILE MODULE`."
            )
        return self.of_nodes(module, indexes)

    def of_nodes(self, module: str, indexes: Sequence[int]) -> ModuleBoundary:
        """The boundary of the main-graph nodes ``indexes`` (graph order), named ``module``: part of a module."""
        graph = self._graph
        indexes = tuple(sorted(indexes))
        chosen = set(indexes)
        produced: dict[str, None] = {}
        read: dict[str, None] = {}
        for i in indexes:
            read.update(dict.fromkeys(self._reads[i]))
            produced.update(dict.fromkeys(o for o in graph.node[i].output if o))
        return ModuleBoundary(
            module=module,
            nodes=indexes,
            inputs=tuple(n for n in read if n not in produced and n not in self._initializers),
            initializers=tuple(n for n in read if n not in produced and n in self._initializers),
            outputs=tuple(n for n in produced if n in self._graph_outputs or not self._readers.get(n, set()) <= chosen),
        )


def tensor_types(proto: onnx.ModelProto, names: Iterable[str]) -> dict[str, onnx.TypeProto]:
    """The type of each named tensor of the main graph, as ONNX Runtime infers it (contrib ops included).

    Weights in external data are not read: for such a model, initializers are replaced by graph
    inputs of the same type for this purpose.
    """
    from optimum_hierarchy.tools.runtime import make_session

    wanted = list(dict.fromkeys(names))
    known = {v.name: v.type for v in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info)}
    missing = [n for n in wanted if n not in known or not known[n].tensor_type.elem_type]
    if missing:
        probe = onnx.ModelProto()
        probe.CopyFrom(proto)
        graph = probe.graph
        del graph.output[:]
        graph.output.extend(onnx.ValueInfoProto(name=n) for n in missing)
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer):
            _initializers_as_inputs(graph)
        session = make_session(probe, optimization_level="disable")
        for output in session.get_outputs():
            known[output.name] = _type_from_ort(output.type, output.shape)
    return {n: known[n] for n in wanted}


def _initializers_as_inputs(graph: onnx.GraphProto) -> None:
    existing = {i.name for i in graph.input}
    for tensor in graph.initializer:
        if tensor.name not in existing:
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    del graph.initializer[:]


_ORT_TYPES = {
    f"tensor({onnx.helper.tensor_dtype_to_string(t).removeprefix('TensorProto.').lower()})": t
    for t in onnx.TensorProto.DataType.values()
    if t != onnx.TensorProto.UNDEFINED
}
_ORT_TYPES.update({"tensor(float)": onnx.TensorProto.FLOAT, "tensor(double)": onnx.TensorProto.DOUBLE})


def _type_from_ort(type_string: str, shape: Sequence[int | str | None]) -> onnx.TypeProto:
    elem_type = _ORT_TYPES.get(type_string)
    if elem_type is None:
        raise HierarchyError(f"Unsupported tensor type {type_string!r} at a module boundary.")
    dims = [d if isinstance(d, (int, str)) else None for d in shape]
    return onnx.helper.make_tensor_type_proto(elem_type, dims)
