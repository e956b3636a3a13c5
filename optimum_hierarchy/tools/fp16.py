"""fp16 by module: ONNX Runtime's float16 converter with module globs for what stays float32.

``onnxruntime.transformers.float16.convert_float_to_float16`` converts a model's float tensors and
computation to float16 except for the nodes in its ``node_block_list``, which keep computing in float32
behind ``Cast`` nodes; an initializer only blocked nodes read stays float32. Here the blocked nodes are
the nodes of the modules to keep (module globs resolved to the node names of the exact file, fused
nodes that replaced part of a kept module included), and the result is re-attributed from the file's
provenance (the ``Cast`` nodes the converter adds get the module around them). The converter appends
some ``Cast`` nodes after their readers, so the nodes are sorted topologically (onnx_ir's stable sort)
before the file is written; and it types the value infos of the initializers it keeps in float32 as
float16, so those take their initializer's type again (the file passes ``onnx.checker``'s full check).
No optimum-onnx is needed.
"""

from __future__ import annotations

__all__ = ["Fp16Result", "convert_fp16"]

import collections
import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnx_ir as ir

from optimum_hierarchy.annotation.file import annotate_proto
from optimum_hierarchy.atomic import check_output_path, save_onnx
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.schema import AttributionSummary, decode_model_metadata, read_props
from optimum_hierarchy.tools.selection import Globs, ModuleSelection, nodes_for_modules
from optimum_hierarchy.wire import PROTOBUF_LIMIT, read_model_file

logger = logging.getLogger(__name__)


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
    converted = convert_float_to_float16(
        proto,
        keep_io_types=keep_io_types,
        node_block_list=list(selection.nodes_to_exclude) if selection is not None else None,
        disable_shape_infer=external,  # shape inference needs the model in memory, under 2 GB
    )
    _sort_topologically(converted)
    _type_initializer_values(converted)
    summary, _ = annotate_proto(converted, meta.tree, meta.export, where=str(target))
    kinds = collections.Counter(
        onnx.TensorProto.DataType.Name(t.data_type).lower()
        for t in converted.graph.initializer
        if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
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
