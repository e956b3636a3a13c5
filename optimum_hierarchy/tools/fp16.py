"""fp16 by module: ONNX Runtime's float16 converter, with module globs for what stays float32.

``onnxruntime.transformers.float16.convert_float_to_float16`` converts a model's float tensors and
computation to float16. Its ``node_block_list`` is not enough to keep a module in float32: it casts each
blocked node's output to float16 and back before the next blocked node reads it, so every activation
inside a kept module would still be rounded. So the kept modules' nodes (module globs resolved to the node
names of the exact file, fused nodes that replaced part of a kept module included, and the ops of the
converter's default op block list) are left out of what the converter sees:

1. The graph is split in two regions: the *kept* nodes and the *converted* ones (an ``If`` / ``Loop`` /
   ``Scan`` body goes with the node that holds it). The graph's float inputs belong to the converted
   region, and its float outputs must be float16, unless ``keep_io_types``.
2. Each float tensor one region produces and the other reads (the graph's inputs and outputs included)
   gets one ``Cast`` to the reader's precision, shared by all its readers there. The tensor keeps its
   name in the region that produces it; the cast copy gets a new one (a graph output keeps its name in
   the precision it must have, and the producer's value is renamed).
3. The converted region alone is converted (``keep_io_types=False``: everything it reads and writes is
   float16). A float initializer both regions read is kept twice: float32 for the kept nodes, a float16
   copy for the others. The kept nodes and their initializers are not touched.

So a kept module computes exactly as in the float model, and ``Cast`` nodes appear only where data crosses
between the regions. The nodes are then sorted topologically (onnx_ir's stable sort), the value infos of
initializers take their initializer's type, and the result is re-attributed from the file's provenance
(the added ``Cast`` nodes get the module around them). No optimum-onnx is needed.
"""

from __future__ import annotations

__all__ = ["Fp16Result", "convert_fp16"]

import collections
import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import onnx
import onnx_ir as ir

from optimum_hierarchy.annotation.file import annotate_proto
from optimum_hierarchy.atomic import check_output_path, save_onnx
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.schema import AttributionSummary, decode_model_metadata, read_props
from optimum_hierarchy.tools.boundary import outer_scope_inputs, tensor_types
from optimum_hierarchy.tools.selection import Globs, ModuleSelection, nodes_for_modules
from optimum_hierarchy.walk import subgraphs
from optimum_hierarchy.wire import PROTOBUF_LIMIT, read_model_file

logger = logging.getLogger(__name__)

_FLOAT, _FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


@dataclasses.dataclass(frozen=True)
class Fp16Result:
    output: Path
    selection: ModuleSelection | None
    """The modules kept in float32 (``None``: none kept)."""
    initializers: dict[str, int]
    """Float initializers of the output by type: ``{"float16": n, "float32": m}``."""
    casts_added: int
    summary: AttributionSummary
    external_data: bool


def convert_fp16(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    keep_fp32_modules: Globs = (),
    keep_io_types: bool = False,
) -> Fp16Result:
    """Convert ``model`` to float16, keeping the modules ``keep_fp32_modules`` match in float32; write ``output``.

    A kept module computes wholly in float32, as in ``model``; ``Cast`` nodes are added only where a tensor
    crosses between it and the converted nodes (see the module docstring).
    ``keep_io_types``: graph inputs and outputs stay float32 (a ``Cast`` after / before them).
    ``model`` must carry the hierarchy when globs are given; a glob that matches nothing is an error
    naming the closest modules. External data is read, and written to ``<output>_data`` when the input
    had it or the output exceeds 2 GB; ``output`` is written atomically and never over ``model``.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    source, target = Path(model), Path(output)
    if not source.is_file():
        raise HierarchyError(f"{source}: no such ONNX file.")
    check_output_path(source, target)
    globs = (keep_fp32_modules,) if isinstance(keep_fp32_modules, str) else tuple(keep_fp32_modules)
    with read_model_file(source) as light:  # no weight values
        external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in light.proto.graph.initializer)
        meta = decode_model_metadata(read_props(light.proto), source=str(source))
        before = sum(1 for n in light.proto.graph.node if n.op_type == "Cast")
    selection = nodes_for_modules(source, exclude_modules=globs) if globs else None
    proto = onnx.load(str(source))
    if selection is None:
        converted = convert_float_to_float16(
            proto,
            keep_io_types=keep_io_types,
            disable_shape_infer=external,  # shape inference needs the model in memory, under 2 GB
        )
    else:
        converted = _convert_around(
            proto, set(selection.nodes_to_exclude), keep_io_types=keep_io_types, disable_shape_infer=external
        )
    _sort_topologically(converted)
    _type_initializer_values(converted)
    summary, _ = annotate_proto(converted, meta.tree, meta.export, where=str(target))
    kinds = collections.Counter(
        onnx.TensorProto.DataType.Name(t.data_type).lower()
        for t in converted.graph.initializer
        if t.data_type in (_FLOAT, _FLOAT16)
    )
    use_external = external or converted.ByteSize() >= PROTOBUF_LIMIT
    save_onnx(converted, target, external_data=use_external)
    casts = sum(1 for n in converted.graph.node if n.op_type == "Cast") - before
    result = Fp16Result(
        output=target,
        selection=selection,
        initializers={"float16": kinds.get("float16", 0), "float32": kinds.get("float", 0)},
        casts_added=casts,
        summary=summary,
        external_data=use_external,
    )
    logger.info("%s: float16 (%s); %s", target, result.initializers, summary.describe())
    return result


def _convert_around(
    proto: onnx.ModelProto, blocked: set[str], *, keep_io_types: bool, disable_shape_infer: bool
) -> onnx.ModelProto:
    """``proto`` with every main-graph node but the ``blocked`` ones converted to float16, and one ``Cast`` per float
    tensor crossing between the two regions (steps 1 to 3 of the module docstring). ``proto`` is consumed."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    graph = proto.graph
    kept = [n.name in blocked or n.op_type in DEFAULT_OP_BLOCK_LIST for n in graph.node]
    inputs = {v.name for v in graph.input}
    outputs = {v.name for v in graph.output}
    weights = {t.name for t in graph.initializer}
    # Where each tensor is made (True: the kept region, float32) and where it is read.
    home = {name: keep_io_types for name in inputs if name not in weights}
    home.update({t: k for n, k in zip(graph.node, kept, strict=True) for t in n.output if t})
    readers: dict[str, set[bool]] = collections.defaultdict(set)
    for node, k in zip(graph.node, kept, strict=True):
        for t in _reads(node):
            readers[t].add(k)
    for name in outputs:
        readers[name].add(keep_io_types)
    crossing = [t for t in home if readers[t] - {home[t]}]
    types = tensor_types(proto, dict.fromkeys([*crossing, *inputs, *outputs]))
    taken = _names(graph)

    renamed: dict[bool, dict[str, str]] = {True: {}, False: {}}  # per region: tensor -> the name read there
    produced_as: dict[str, str] = {}  # tensor -> the name its producer writes, where it is not its own
    casts: list[onnx.NodeProto] = []
    cast_values: dict[str, onnx.ValueInfoProto] = {}
    for t in crossing:
        if types[t].tensor_type.elem_type != _FLOAT:
            continue  # integers, booleans: the same in both regions
        made = home[t]
        if t in outputs and made != keep_io_types and t not in inputs:
            # The graph output keeps its name, in the precision it must have; the producer's value is renamed.
            own = _fresh(f"{t}_{_PRECISION[made]}", taken)
            produced_as[t] = renamed[made][t] = own
            casts.append(_cast(own, t, to_fp32=not made, taken=taken))
            cast_values[own] = _value(own, types[t], fp32=made)
        else:
            copy = _fresh(f"{t}_cast_to_{_PRECISION[not made]}", taken)
            renamed[not made][t] = copy
            casts.append(_cast(t, copy, to_fp32=not made, taken=taken))
            cast_values[copy] = _value(copy, types[t], fp32=not made)
    # A float initializer both regions read: the converted region reads a copy of its own.
    for tensor in graph.initializer:
        if tensor.data_type == _FLOAT and readers.get(tensor.name) == {True, False}:
            renamed[False][tensor.name] = _fresh(f"{tensor.name}_fp16", taken)

    kept_nodes: list[onnx.NodeProto] = []
    region_nodes: list[onnx.NodeProto] = []
    for node, k in zip(graph.node, kept, strict=True):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        _rename_reads(copy, renamed[k])
        copy.output[:] = [produced_as.get(t, t) for t in copy.output]
        (kept_nodes if k else region_nodes).append(copy)
    kept_reads = {t for n in kept_nodes for t in _reads(n)}
    region_reads = {t for n in region_nodes for t in _reads(n)}
    kept_weights = []
    for tensor in graph.initializer:
        if tensor.name in kept_reads:
            own_copy = onnx.TensorProto()
            own_copy.CopyFrom(tensor)
            kept_weights.append(own_copy)
    drop = []  # the converted region's initializers are those it reads, renamed where shared (in place: no copy)
    for i, tensor in enumerate(graph.initializer):
        tensor.name = renamed[False].get(tensor.name, tensor.name)
        if tensor.name not in region_reads:
            drop.append(i)
    for i in reversed(drop):
        del graph.initializer[i]

    # The converted region as a model of its own: what it reads from outside, what is read from it (every such
    # tensor crosses, or is a graph input or output: its type is known).
    original = {v.name: v.type for v in graph.value_info} | {n: types[n] for n in types}
    made_as = {own: t for t, own in produced_as.items()}
    region_made = {t for n in region_nodes for t in n.output if t}
    region_weights = {t.name for t in graph.initializer}
    read_outside = kept_reads | {c.input[0] for c in casts} | outputs
    region_in = [t for t in sorted(region_reads) if t not in region_made and t not in region_weights]
    region_out = [t for t in sorted(region_made) if t in read_outside]

    def value(name: str) -> onnx.ValueInfoProto:
        if name in cast_values:
            return cast_values[name]
        return onnx.helper.make_value_info(name, original[made_as.get(name, name)])

    interface = ([_copied(v) for v in graph.input], [_copied(v) for v in graph.output])
    del graph.node[:], graph.input[:], graph.output[:]
    graph.node.extend(region_nodes)
    graph.input.extend(value(t) for t in region_in)
    graph.output.extend(value(t) for t in region_out)
    inner = [_copied(v) for v in graph.value_info if v.name in region_made]
    del graph.value_info[:]
    graph.value_info.extend(inner)
    if region_nodes:
        proto = convert_float_to_float16(proto, keep_io_types=False, disable_shape_infer=disable_shape_infer)
    graph = proto.graph

    # Both regions and the casts between them, under the model's own inputs and outputs.
    io = {v.name for v in (*interface[0], *interface[1])}
    values = {v.name: v for v in (*graph.value_info, *graph.input, *graph.output) if v.name not in io}
    for node in kept_nodes:
        for t in node.output:
            if t and t not in io and t not in values and made_as.get(t, t) in original:
                values[t] = value(t)
    values.update({n: v for n, v in cast_values.items() if n not in io})
    present = {t.name for t in graph.initializer}
    graph.initializer.extend(t for t in kept_weights if t.name not in present)
    graph.node.extend([*kept_nodes, *casts])
    del graph.input[:], graph.output[:], graph.value_info[:]
    for target, side in ((graph.input, interface[0]), (graph.output, interface[1])):
        for v in side:
            if not keep_io_types and v.type.tensor_type.elem_type == _FLOAT:
                v.type.tensor_type.elem_type = _FLOAT16
            target.append(v)
    graph.value_info.extend(values.values())
    return proto


_PRECISION = {True: "fp32", False: "fp16"}


def _copied(value: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(value)
    return copy


def _reads(node: onnx.NodeProto) -> list[str]:
    return [t for t in (*node.input, *outer_scope_inputs(node)) if t]


def _rename_reads(node: onnx.NodeProto, renamed: Mapping[str, str]) -> None:
    """Rename what ``node`` reads, its subgraphs' references to the enclosing scopes included."""
    if not renamed:
        return
    node.input[:] = [renamed.get(t, t) for t in node.input]

    def visit(body: onnx.GraphProto, defined: set[str]) -> None:
        local = defined | {v.name for v in body.input} | {t.name for t in body.initializer}
        for inner in body.node:
            inner.input[:] = [t if t in local else renamed.get(t, t) for t in inner.input]
            for sub in subgraphs(inner):
                visit(sub, local)
            local |= {t for t in inner.output if t}
        for v in body.output:
            if v.name not in local and v.name in renamed:
                v.name = renamed[v.name]

    for sub in subgraphs(node):
        visit(sub, set())


def _names(graph: onnx.GraphProto) -> set[str]:
    """Every node and tensor name of ``graph`` and its subgraphs."""
    names: set[str] = set()
    for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        names.add(v.name)
    for node in graph.node:
        names.add(node.name)
        names.update(node.input)
        names.update(node.output)
        for sub in subgraphs(node):
            names |= _names(sub)
    return names


def _fresh(name: str, taken: set[str]) -> str:
    fresh, i = name, 0
    while fresh in taken:
        i += 1
        fresh = f"{name}_{i}"
    taken.add(fresh)
    return fresh


def _cast(source: str, target: str, *, to_fp32: bool, taken: set[str]) -> onnx.NodeProto:
    return onnx.helper.make_node(
        "Cast", [source], [target], name=_fresh(f"{target}_node", taken), to=_FLOAT if to_fp32 else _FLOAT16
    )


def _value(name: str, like: onnx.TypeProto, *, fp32: bool) -> onnx.ValueInfoProto:
    value = onnx.helper.make_value_info(name, like)
    value.type.tensor_type.elem_type = _FLOAT if fp32 else _FLOAT16
    return value


def _sort_topologically(proto: onnx.ModelProto) -> None:
    """Reorder the nodes of ``proto`` (and of its subgraphs) topologically, in place, with onnx_ir's stable sort.

    Only the order changes: each node proto (its metadata included) is kept as it is.
    """
    model = ir.serde.deserialize_model(proto)  # node i of each graph is node i of the proto's graph
    pairs = list(_graph_pairs(proto.graph, model.graph))
    before = [{id(node): i for i, node in enumerate(graph)} for _, graph in pairs]
    model.graph.sort()
    for (proto_graph, graph), index in zip(pairs, before, strict=True):
        order = [index[id(node)] for node in graph]
        if order != sorted(order):
            nodes = [proto_graph.node[i] for i in order]
            kept = [onnx.NodeProto() for _ in nodes]
            for copy, node in zip(kept, nodes, strict=True):
                copy.CopyFrom(node)
            del proto_graph.node[:]
            proto_graph.node.extend(kept)


def _type_initializer_values(proto: onnx.ModelProto) -> None:
    """Give each value info of an initializer (main graph) the initializer's own element type."""
    types = {t.name: t.data_type for t in proto.graph.initializer}
    for value in proto.graph.value_info:
        if value.name in types and value.type.HasField("tensor_type"):
            value.type.tensor_type.elem_type = types[value.name]


def _graph_pairs(proto_graph: onnx.GraphProto, graph: ir.Graph) -> Iterator[tuple[onnx.GraphProto, ir.Graph]]:
    """Each graph of the proto with the onnx_ir graph deserialized from it, subgraphs included."""
    yield proto_graph, graph
    for proto_node, node in zip(proto_graph.node, graph, strict=True):
        for attribute in proto_node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graph_pairs(attribute.g, node.attributes[attribute.name].as_graph())
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                subs = node.attributes[attribute.name].as_graphs()
                for proto_sub, sub in zip(attribute.graphs, subs, strict=True):
                    yield from _graph_pairs(proto_sub, sub)
