"""Cut one module out of an annotated model into a standalone ONNX model.

The extracted model holds exactly the module's nodes (see :mod:`optimum_hierarchy.tools.boundary`),
in graph order, with the module's boundary tensors as graph inputs and outputs and only the
initializers those nodes read. Fed the boundary inputs captured from the full model, it computes
the full model's values of the boundary outputs. It carries the hierarchy: its nodes keep their
module paths, and it can be queried, profiled or optimized like any annotated model.
"""

from __future__ import annotations

__all__ = ["ExtractedModule", "extract_module", "write_extracted_module"]

import dataclasses
import os
from pathlib import Path

import onnx
from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

from optimum_hierarchy.annotation.file import annotate_proto, load_model_proto
from optimum_hierarchy.atomic import check_output_path, save_onnx
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.retriever import HierarchyRetriever
from optimum_hierarchy.schema import read_props
from optimum_hierarchy.tools.boundary import ModuleBoundary, module_boundary, tensor_types
from optimum_hierarchy.wire import PROTOBUF_LIMIT


@dataclasses.dataclass(frozen=True)
class ExtractedModule:
    module: str
    model: onnx.ModelProto
    boundary: ModuleBoundary

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.boundary.inputs

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.boundary.outputs


def _model_and_dir(model: str | os.PathLike[str] | onnx.ModelProto) -> tuple[onnx.ModelProto, Path | None]:
    if isinstance(model, onnx.ModelProto):
        return model, None
    path = Path(model)
    return load_model_proto(path), path.parent


def extract_module(model: str | os.PathLike[str] | onnx.ModelProto, module: str) -> ExtractedModule:
    """The standalone model of ``module`` of an annotated model (a path or a proto).

    Weights in external data are read only for the initializers the module uses.

    Raises:
        KeyError: ``module`` is not a module of the model.
        HierarchyError: the model carries no hierarchy, or the module has no node in the main graph.
    """
    proto, base_dir = _model_and_dir(model)
    retriever = HierarchyRetriever(proto)
    boundary = module_boundary(proto, retriever, module)
    graph = proto.graph
    types = tensor_types(proto, (*boundary.inputs, *boundary.outputs))
    wanted = set(boundary.initializers)
    initializers = []
    for tensor in graph.initializer:
        if tensor.name in wanted:
            copy = onnx.TensorProto()
            copy.CopyFrom(tensor)
            if uses_external_data(copy):
                if base_dir is None:
                    raise HierarchyError(
                        f"Initializer {tensor.name!r} is stored in external data; pass the model's path, not a proto."
                    )
                load_external_data_for_tensor(copy, str(base_dir))
                copy.data_location = onnx.TensorProto.DEFAULT
                del copy.external_data[:]
            initializers.append(copy)
    sparse = [t for t in graph.sparse_initializer if t.values.name in wanted]
    new_graph = onnx.helper.make_graph(
        [graph.node[i] for i in boundary.nodes],
        f"{graph.name or 'graph'}:{module}",
        inputs=[onnx.helper.make_value_info(n, types[n]) for n in boundary.inputs],
        outputs=[onnx.helper.make_value_info(n, types[n]) for n in boundary.outputs],
        initializer=initializers,
        sparse_initializer=sparse,
    )
    kept_names = {n for node in new_graph.node for n in (*node.input, *node.output)}
    new_graph.value_info.extend(v for v in graph.value_info if v.name in kept_names)
    extracted = onnx.helper.make_model(
        new_graph,
        opset_imports=list(proto.opset_import),
        ir_version=proto.ir_version,
        producer_name=proto.producer_name,
        producer_version=proto.producer_version,
        functions=list(proto.functions),
    )
    onnx.helper.set_model_props(extracted, read_props(proto))
    metadata = retriever.hierarchy.metadata
    # Re-annotate from the full model's provenance: every node is kept, so it keeps its module and
    # source (fused nodes too), and the summary and provenance now describe the extracted graph.
    annotate_proto(extracted, metadata.tree, metadata.export)
    return ExtractedModule(module=module, model=extracted, boundary=boundary)


def write_extracted_module(
    model: str | os.PathLike[str], module: str, output: str | os.PathLike[str]
) -> ExtractedModule:
    """Extract ``module`` and write it to ``output`` (atomically); the source file is never overwritten.

    A module over protobuf's 2 GB is written with its weights in ``<output>_data`` beside it.
    """
    source, target = Path(model), Path(output)
    check_output_path(source, target)
    extracted = extract_module(source, module)
    try:
        save_onnx(extracted.model, target, external_data=extracted.model.ByteSize() > PROTOBUF_LIMIT)
    except OSError as e:
        raise HierarchyError(
            f"{target}: cannot be written ({e.strerror or e}). Check the directory's permissions and free space."
        ) from e
    return extracted
