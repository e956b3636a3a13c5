"""fp16 by module: ONNX Runtime's float16 converter with module globs for what stays float32.

``onnxruntime.transformers.float16.convert_float_to_float16`` converts a model's float tensors and
computation to float16 except for the nodes in its ``node_block_list``, which keep computing in float32
behind ``Cast`` nodes; an initializer only blocked nodes read stays float32. Here the blocked nodes are
the nodes of the modules to keep (module globs resolved to the node names of the exact file, fused
nodes that replaced part of a kept module included), and the result is re-attributed from the file's
provenance (the ``Cast`` nodes the converter adds get the module around them). No optimum-onnx is needed.
"""

from __future__ import annotations

__all__ = ["Fp16Result", "convert_fp16"]

import collections
import dataclasses
import logging
import os
from pathlib import Path

import onnx

from optimum_hierarchy.annotate import annotate_proto
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
