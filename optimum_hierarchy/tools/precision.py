"""The precision of each module's weights in an annotated file: fp32, fp16, bf16, int8 or int4.

A module's precision is read from the nodes attributed to it (``pkg.optimum_hierarchy.module``) and the
weights they read, so it describes the exact file, whatever wrote it:

* ``MatMulNBits`` (ONNX Runtime's n-bit weights): ``int<bits>`` (``int4`` by default);
* int8 operators (``MatMulInteger``, ``ConvInteger``, ``QLinearMatMul``, ``QLinearConv``, ``QGemm``,
  ``DynamicQuantizeLinear``, ``DynamicQuantizeMatMul``, ``MatMulIntegerToFloat``, ``QAttention``), and a
  ``DequantizeLinear`` of an int8 / uint8 initializer (QDQ weights): ``int8``; of an int4 / uint4 one: ``int4``;
* otherwise a float initializer of more than one element the node reads: its type (``fp32``, ``fp16``,
  ``bf16``, ``fp64``).

The modules listed are those with parameters of their own in the file's module tree (every module, when
the tree records no parameter) that have such a node; a module whose nodes read weights in several
precisions is given the lowest (a Linear in int4 whose bias ``Add`` reads float32 is ``int4``). A fused
node counts for the module it is attributed to. Weight values are never read (the file's light proto).
"""

from __future__ import annotations

__all__ = ["module_precisions"]

import os
from pathlib import Path

import onnx

from optimum_hierarchy.schema import decode_model_metadata, decode_node, read_props
from optimum_hierarchy.walk import iter_proto_nodes
from optimum_hierarchy.wire import read_model_file

_INT8_OPS = frozenset(
    {
        "MatMulInteger",
        "ConvInteger",
        "QLinearMatMul",
        "QLinearConv",
        "QGemm",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QAttention",
    }
)
_T = onnx.TensorProto
_FLOATS: dict[int, str] = {_T.FLOAT: "fp32", _T.FLOAT16: "fp16", _T.BFLOAT16: "bf16", _T.DOUBLE: "fp64"}
_INTEGERS: dict[int, str] = {_T.INT8: "int8", _T.UINT8: "int8", _T.INT4: "int4", _T.UINT4: "int4"}
_RANK = {"int2": 0, "int3": 1, "int4": 2, "int5": 3, "int6": 4, "int7": 5, "int8": 6, "fp16": 7, "bf16": 7}
"""Lowest first; anything else (fp32, fp64) ranks after these."""


def _precision(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> str | None:
    """What precision the weights a node reads are in; ``None`` when it reads none."""
    if node.op_type == "MatMulNBits":
        bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
        return f"int{bits}"
    if node.op_type in _INT8_OPS:
        return "int8"
    weights = [initializers[name] for name in node.input if name in initializers]
    if node.op_type == "DequantizeLinear" and weights and weights[0].name == node.input[0]:
        return _INTEGERS.get(weights[0].data_type)
    found = [_FLOATS[t.data_type] for t in weights if t.data_type in _FLOATS and _numel(t) > 1]
    return min(found, key=_order) if found else None


def _numel(tensor: onnx.TensorProto) -> int:
    n = 1
    for d in tensor.dims:
        n *= d
    return n


def _order(precision: str) -> tuple[int, str]:
    return _RANK.get(precision, len(_RANK)), precision


def module_precisions(model: str | os.PathLike[str] | onnx.ModelProto, *, where: str = "model") -> dict[str, str]:
    """Module path -> the precision of its weights (see the module docstring), in the module tree's order.

    ``model``: a file, or a ``ModelProto`` already read (its weight values are not needed: a proto read without
    them, as :func:`~optimum_hierarchy.wire.read_model_file` gives it, will do; ``where`` names it in errors).

    Raises:
        HierarchyError: the file cannot be read (``InvalidModelFileError``) or carries no hierarchy
            (``MissingHierarchyError``).
    """
    if isinstance(model, onnx.ModelProto):
        return _precisions_of(model, where)
    path = Path(model)
    with read_model_file(path) as source:  # no weight values: only the initializers' types and shapes
        return _precisions_of(source.proto, str(path))


def _precisions_of(proto: onnx.ModelProto, where: str) -> dict[str, str]:
    meta = decode_model_metadata(read_props(proto), source=where)
    initializers = {t.name: t for t in proto.graph.initializer}
    found: dict[str, str] = {}
    for node, _ in iter_proto_nodes(proto.graph):
        module = decode_node(read_props(node), node.name, strict=False).module
        if module is None:
            continue
        precision = _precision(node, initializers)
        if precision is not None and (module not in found or _order(precision) < _order(found[module])):
            found[module] = precision
    with_parameters = {info.path for info in meta.tree.values() if info.parameters}
    if not with_parameters:
        with_parameters = set(meta.tree)
    return {m: found[m] for m in meta.tree if m in found and m in with_parameters}
