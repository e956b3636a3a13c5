"""A module tree rebuilt from a graph's names: TorchScript scopes and parameter-named initializers."""

from __future__ import annotations

__all__ = ["from_names", "parameters_from_initializers", "tree_from_names"]

import onnx

from optimum_hierarchy.modules import ModuleInfo, ModuleTree, ParameterInfo
from optimum_hierarchy.scope import call_suffix_base, producer_name_of_output, scope_segments
from optimum_hierarchy.trees.base import FileEvidence, FoundTree
from optimum_hierarchy.walk import iter_proto_nodes


def from_names(evidence: FileEvidence) -> FoundTree:
    """The tree of the file's names; always one (the last source), classes unknown."""
    return FoundTree(tree=tree_from_names(evidence.proto), origin="the graph's names")


def tree_from_names(proto: onnx.ModelProto) -> ModuleTree:
    """A module tree rebuilt from a graph's names alone (classes unknown: ``class_name`` is ``""``).

    Modules come from the initializers named like parameters (``encoder.layer.0.output.dense.bias``;
    their shapes are the initializers'), and from the TorchScript scopes in node and output tensor
    names, with the exporter's quirks undone where the parameters show the real path (a repeated
    container level, a ``_N`` call suffix).
    """
    parameters = parameters_from_initializers(proto)
    known: set[str] = set()
    for owner in parameters:
        parts = owner.split(".")
        known.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))

    paths = set(known)
    for node, _ in iter_proto_nodes(proto.graph):
        for name in (node.name, *(producer_name_of_output(t) or "" for t in node.output)):
            segments = scope_segments(name) if name else None
            if segments and "" not in ".".join(segments).split("."):  # no module path has an empty part
                paths.update(_scope_paths(segments, known))
    for path in list(paths):  # a dotted segment (layer.0) with no parameter to show its parent (layer)
        parts = path.split(".")
        paths.update(".".join(parts[:n]) for n in range(1, len(parts)))
    modules = [ModuleInfo(path="", class_name="")]
    for path in sorted(paths, key=lambda p: (p.count("."), p)):
        modules.append(ModuleInfo(path=path, class_name="", parameters=tuple(parameters.get(path, ()))))
    return ModuleTree(modules)


def parameters_from_initializers(proto: onnx.ModelProto) -> dict[str, list[ParameterInfo]]:
    """Module path -> the parameters named by initializers (``encoder.layer.0.output.dense.bias``)."""
    parameters: dict[str, list[ParameterInfo]] = {}
    for init in proto.graph.initializer:
        owner, dot, leaf = init.name.rpartition(".")
        named_like_a_parameter = (
            dot and leaf and "" not in owner.split(".") and not init.name.startswith(("/", "onnx::"))
        )
        if named_like_a_parameter and min(init.dims, default=0) >= 0:
            parameters.setdefault(owner, []).append(
                ParameterInfo(name=leaf, shape=tuple(init.dims), dtype=_numpy_dtype_name(init.data_type))
            )
    return parameters


def _numpy_dtype_name(data_type: int) -> str | None:
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(data_type).name)
    except KeyError:  # not an ONNX data type
        return None


def _scope_paths(segments: list[str], known: set[str]) -> list[str]:
    found = []
    current = ""
    for segment in segments:
        joined = f"{current}.{segment}" if current else segment
        if joined not in known and segment in known:
            joined = segment  # a repeated container level: /layer1/layer1.0/...
        elif joined not in known:
            stem = call_suffix_base(segment)
            base = None if stem is None else (f"{current}.{stem}" if current else stem)
            if base is not None and base in known:
                joined = base  # a module called twice: act_1
        current = joined
        found.append(current)
    return found
