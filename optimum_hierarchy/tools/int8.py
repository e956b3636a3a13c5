"""int8 dynamic quantization by module: ONNX Runtime's ``quantize_dynamic`` with module globs, on either stack.

:mod:`optimum_hierarchy.tools.quantize` goes through Optimum's ``ORTQuantizer`` (the ``onnx`` extra);
this calls ``onnxruntime.quantization.quantize_dynamic`` directly, so it needs no optimum-onnx. Each
``MatMul`` whose weight is a constant becomes ``DynamicQuantizeLinear`` + ``MatMulInteger`` (int8
weights, one scale per tensor, or per output channel with ``per_channel``); ``Gemm`` nodes stay float
(the dynamic quantizer does not take them; this is also what int8 means in
:mod:`~optimum_hierarchy.tools.sensitivity`, so a plan's candidates are the modules quantized here).
Module globs are resolved to the node names of the exact file
(:func:`~optimum_hierarchy.tools.selection.nodes_for_modules`: an excluded module keeps all its nodes
float, fused nodes that replaced part of it included). The result is re-attributed from the file's
provenance: the quantized nodes land in the module of the ``MatMul`` they replaced.
"""

from __future__ import annotations

__all__ = ["Int8Result", "quantize_int8"]

import dataclasses
import logging
import os
import tempfile
from pathlib import Path

import onnx

from optimum_hierarchy.annotation.file import annotate_proto
from optimum_hierarchy.atomic import check_output_path, save_onnx
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.schema import (
    AttributionSummary,
    Level,
    decode_model_metadata,
    decode_node,
    read_props,
    replace_props,
)
from optimum_hierarchy.tools.selection import Globs, ModuleSelection, nodes_for_modules
from optimum_hierarchy.wire import PROTOBUF_LIMIT, read_model_file

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Int8Result:
    output: Path
    selection: ModuleSelection
    quantized: tuple[tuple[str, str | None], ...]
    """Each ``MatMulInteger`` node of the output and its module."""
    summary: AttributionSummary
    external_data: bool


def quantize_int8(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    per_channel: bool = False,
    exclude_modules: Globs = (),
    include_modules: Globs = (),
) -> Int8Result:
    """Quantize the ``MatMul`` weights of ``model`` to int8 (dynamic quantization), by module; write ``output``.

    Globs as :func:`~optimum_hierarchy.tools.int4.quantize_int4` takes them; a glob that matches nothing
    is an error naming the closest modules. ``model`` must carry the hierarchy. ``output`` is written
    atomically (weights in ``<output>_data`` when the input's were external or they exceed 2 GB), never
    over ``model``; on failure nothing is left.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, target = Path(model), Path(output)
    if not source.is_file():
        raise HierarchyError(f"{source}: no such ONNX file.")
    check_output_path(source, target)
    selection = nodes_for_modules(source, exclude_modules=exclude_modules, include_modules=include_modules)
    with read_model_file(source) as light:
        external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in light.proto.graph.initializer)
        props = read_props(light.proto)
    meta = decode_model_metadata(props, source=str(source))
    proto = onnx.load(str(source))
    include = list(selection.nodes_to_quantize) if selection.restricts else None
    if include == []:
        quantized = proto  # nothing selected: ONNX Runtime reads an empty list as "all"
    else:
        with tempfile.TemporaryDirectory(prefix="optimum_hierarchy_int8_") as tmp:
            written = Path(tmp) / "int8.onnx"
            try:
                quantize_dynamic(
                    proto,
                    written,
                    op_types_to_quantize=["MatMul"],
                    per_channel=per_channel,
                    weight_type=QuantType.QInt8,
                    nodes_to_quantize=include,
                    nodes_to_exclude=list(selection.nodes_to_exclude),
                    use_external_data_format=external or proto.ByteSize() >= PROTOBUF_LIMIT,
                )
            except (ValueError, RuntimeError, onnx.checker.ValidationError) as e:
                raise HierarchyError(f"{source}: ONNX Runtime's dynamic int8 quantization failed: {e}") from e
            quantized = onnx.load(str(written))
    replace_props(quantized.metadata_props, props, Level.MODEL)  # the provenance re-attribution reads
    summary, _ = annotate_proto(quantized, meta.tree, meta.export, where=str(target))
    use_external = external or quantized.ByteSize() >= PROTOBUF_LIMIT
    save_onnx(quantized, target, external_data=use_external)
    nodes = tuple(
        (n.name, decode_node(read_props(n), n.name, strict=False).module)
        for n in quantized.graph.node
        if n.op_type == "MatMulInteger"
    )
    logger.info("%s: %d MatMul weights in int8; %s", target, len(nodes), summary.describe())
    return Int8Result(output=target, selection=selection, quantized=nodes, summary=summary, external_data=use_external)
