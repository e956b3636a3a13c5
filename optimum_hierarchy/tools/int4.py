"""int4 weight-only quantization by module: ONNX Runtime's ``MatMulNBitsQuantizer`` with module globs.

``MatMulNBitsQuantizer`` turns each ``MatMul`` whose weight is a constant into a ``MatMulNBits``
(int4 weights in blocks along the input axis, one scale per block), and selects nodes by name only
(``nodes_to_exclude`` / ``nodes_to_include``). Here module globs are resolved to the node names of the
exact file (:func:`optimum_hierarchy.tools.selection.nodes_for_modules`: an excluded module keeps all
its nodes float, fused nodes that replaced part of it included), the quantizer runs, and the result is
re-attributed from the file's provenance: each ``MatMulNBits`` lands in the module of the ``MatMul`` it
replaced (its ``nn.Linear``), source ``fusion``. No optimum-onnx is needed.

The quantizer takes ``MatMul`` only, while exporters write some linear layers as ``Gemm`` (GPT-2's
``Conv1D``: ``addmm``; a Linear on a 2-D input). Before it runs, each selected ``Gemm`` with a constant
weight, ``alpha = 1``, ``transA = 0`` and ``beta = 1`` is rewritten exactly as a ``MatMul`` (weight
transposed for ``transB = 1``), followed by an ``Add`` of its bias if it has one: the ``MatMul``
keeps the ``Gemm``'s name and output when there is no bias; with a bias it is ``<name>_MatMul``
(output ``<output>_MatMul``) and the ``Add`` produces the ``Gemm``'s output, both in the ``Gemm``'s
module. A ``Gemm`` that does not fit stays float.
"""

from __future__ import annotations

__all__ = ["BLOCK_SIZES", "Int4Result", "quantize_int4"]

import dataclasses
import logging
import os
from pathlib import Path

import onnx

from optimum_hierarchy.annotation.file import annotate_proto
from optimum_hierarchy.atomic import check_output_path, save_onnx
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.schema import AttributionSummary, decode_model_metadata, decode_node, read_props
from optimum_hierarchy.tools.selection import Globs, ModuleSelection, nodes_for_modules
from optimum_hierarchy.wire import PROTOBUF_LIMIT, read_model_file

logger = logging.getLogger(__name__)

BLOCK_SIZES = (16, 32, 64, 128, 256)
"""Block sizes ``MatMulNBits`` takes (a power of two, at least 16)."""


@dataclasses.dataclass(frozen=True)
class Int4Result:
    output: Path
    selection: ModuleSelection
    quantized: tuple[tuple[str, str | None], ...]
    """Each ``MatMulNBits`` node of the output and its module."""
    summary: AttributionSummary
    external_data: bool


def quantize_int4(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    block_size: int = 128,
    symmetric: bool = True,
    accuracy_level: int | None = None,
    exclude_modules: Globs = (),
    include_modules: Globs = (),
) -> Int4Result:
    """Quantize the ``MatMul`` weights of ``model`` to int4 (``MatMulNBits``), by module; write ``output``.

    ``exclude_modules`` / ``include_modules``: module globs as ``optimum-cli hierarchy tree`` prints the
    paths (``*`` one segment, ``**`` any number); a glob that matches nothing is an error naming the
    closest modules. ``model`` must carry the hierarchy. Weights in external data are read; the
    output's weights go to ``<output>_data`` when the input's were external or they exceed protobuf's
    2 GB limit. ``output`` is written atomically and never over ``model``; on failure nothing is left.
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    source, target = Path(model), Path(output)
    if block_size not in BLOCK_SIZES:
        raise HierarchyError(f"--block-size {block_size}: MatMulNBits takes {', '.join(map(str, BLOCK_SIZES))}.")
    if not source.is_file():
        raise HierarchyError(f"{source}: no such ONNX file.")
    check_output_path(source, target)
    selection = nodes_for_modules(source, exclude_modules=exclude_modules, include_modules=include_modules)
    with read_model_file(source) as light:  # no weight values
        external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in light.proto.graph.initializer)
        meta = decode_model_metadata(read_props(light.proto), source=str(source))
    proto = onnx.load(str(source))  # with the weights: they are what gets quantized
    gemms = _gemms_as_matmuls(proto, selection)
    excluded = set(selection.nodes_to_exclude)
    include = list(selection.nodes_to_quantize) if selection.restricts else None
    if include is not None:  # a Gemm rewritten with its bias is quantized as <name>_MatMul
        include += [f"{name}_MatMul" for name in gemms if name in selection.nodes_to_quantize]
    if include == []:
        quantized_proto = proto  # nothing selected: ONNX Runtime reads an empty include list as "all"
    else:
        quantizer = MatMulNBitsQuantizer(
            proto,
            bits=4,
            block_size=block_size,
            is_symmetric=symmetric,
            accuracy_level=accuracy_level,
            nodes_to_exclude=[*selection.nodes_to_exclude, *(f"{n}_MatMul" for n in gemms if n in excluded)],
            nodes_to_include=include,
            op_types_to_quantize=("MatMul",),
        )
        quantizer.process()
        quantized_proto = quantizer.model.model
    summary, _ = annotate_proto(quantized_proto, meta.tree, meta.export, where=str(target))
    use_external = external or quantized_proto.ByteSize() >= PROTOBUF_LIMIT
    save_onnx(quantized_proto, target, external_data=use_external)
    nodes = tuple(
        (n.name, decode_node(read_props(n), n.name, strict=False).module)
        for n in quantized_proto.graph.node
        if n.op_type == "MatMulNBits"
    )
    logger.info(
        "%s: %d MatMul weights in int4 (%d Gemm rewritten as MatMul first); %s",
        target,
        len(nodes),
        len(gemms),
        summary.describe(),
    )
    return Int4Result(output=target, selection=selection, quantized=nodes, summary=summary, external_data=use_external)


def _gemms_as_matmuls(proto: onnx.ModelProto, selection: ModuleSelection) -> list[str]:
    """Rewrite the selected ``Gemm`` nodes that are a ``MatMul`` (+ bias) as such (see the module docstring).

    Main graph only; the names of the rewritten ``Gemm`` nodes are returned.
    """
    from onnx import numpy_helper

    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    excluded = set(selection.nodes_to_exclude)
    included = set(selection.nodes_to_quantize) if selection.restricts else None
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    rewritten: list[str] = []
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        fits = (
            node.op_type == "Gemm"
            and node.domain in {"", "ai.onnx"}
            and node.name
            and node.name not in excluded
            and (included is None or node.name in included)
            and len(node.input) >= 2
            and node.input[1] in initializers
            and attrs.get("alpha", 1.0) == 1.0
            and attrs.get("transA", 0) == 0
            and (len(node.input) < 3 or not node.input[2] or attrs.get("beta", 1.0) == 1.0)
        )
        if not fits:
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            transposed = numpy_helper.from_array(
                numpy_helper.to_array(initializers[weight], base_dir="").T.copy(), f"{weight}_transposed"
            )
            if users.get(weight, 0) == 1:
                graph.initializer.remove(initializers[weight])
            graph.initializer.append(transposed)
            weight = transposed.name
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        output = node.output[0]
        matmul = onnx.helper.make_node(
            "MatMul",
            [node.input[0], weight],
            [f"{output}_MatMul" if bias else output],
            name=f"{node.name}_MatMul" if bias else node.name,
        )
        matmul.metadata_props.extend(node.metadata_props)
        nodes.append(matmul)
        if bias:
            add = onnx.helper.make_node("Add", [matmul.output[0], bias], [output], name=f"{node.name}_Add")
            add.metadata_props.extend(node.metadata_props)
            nodes.append(add)
        rewritten.append(node.name)
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
    return rewritten
