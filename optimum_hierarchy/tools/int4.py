"""int4 weight-only quantization by module: ONNX Runtime's ``MatMulNBitsQuantizer`` with module globs.

``MatMulNBitsQuantizer`` turns each ``MatMul`` whose weight is a constant into a ``MatMulNBits``
(int4 weights in blocks along the input axis, one scale per block), and selects nodes by name only
(``nodes_to_exclude`` / ``nodes_to_include``). Here module globs are resolved to the node names of the
exact file (:func:`optimum_hierarchy.tools.selection.nodes_for_modules`: an excluded module keeps all
its nodes float, fused nodes that replaced part of it included), the quantizer runs, and the result is
re-attributed from the file's provenance: each ``MatMulNBits`` lands in the module of the ``MatMul`` it
replaced (its ``nn.Linear``), source ``fusion``. No optimum-onnx is needed.
"""

from __future__ import annotations

__all__ = ["BLOCK_SIZES", "Int4Result", "quantize_int4"]

import dataclasses
import logging
import os
from pathlib import Path

import onnx

from optimum_hierarchy.annotate import annotate_onnx_model
from optimum_hierarchy.atomic import check_output_path, save_onnx
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.schema import NODE_MODULE_KEY, AttributionSummary, decode_model_metadata
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
        meta = decode_model_metadata({p.key: p.value for p in light.proto.metadata_props}, source=str(source))
    proto = onnx.load(str(source))  # with the weights: they are what gets quantized
    include = list(selection.nodes_to_quantize) if selection.restricts else None
    if include == []:
        quantized_proto = proto  # nothing selected: ONNX Runtime reads an empty include list as "all"
    else:
        quantizer = MatMulNBitsQuantizer(
            proto,
            bits=4,
            block_size=block_size,
            is_symmetric=symmetric,
            accuracy_level=accuracy_level,
            nodes_to_exclude=list(selection.nodes_to_exclude),
            nodes_to_include=include,
            op_types_to_quantize=("MatMul",),
        )
        quantizer.process()
        quantized_proto = quantizer.model.model
    summary, _ = annotate_onnx_model(quantized_proto, meta.tree, meta.export, where=str(target))
    use_external = external or quantized_proto.ByteSize() >= PROTOBUF_LIMIT
    save_onnx(quantized_proto, target, external_data=use_external)
    nodes = tuple(
        (n.name, next((p.value for p in n.metadata_props if p.key == NODE_MODULE_KEY), None))
        for n in quantized_proto.graph.node
        if n.op_type == "MatMulNBits"
    )
    logger.info("%s: %d MatMul weights in int4; %s", target, len(nodes), summary.describe())
    return Int4Result(output=target, selection=selection, quantized=nodes, summary=summary, external_data=use_external)
