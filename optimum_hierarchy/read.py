"""Read the hierarchy back from an annotated ONNX file, ``ModelProto``, ONNX Runtime session or ``ORTModel``."""

from __future__ import annotations

__all__ = ["ModelHierarchy", "NodeAttribution", "read_export_hierarchy", "read_hierarchy"]

import dataclasses
import os
from pathlib import Path
from typing import Any

import onnx

from optimum_hierarchy import schema
from optimum_hierarchy.errors import HierarchyError, SchemaError
from optimum_hierarchy.schema import HierarchyMetadata, decode_model_metadata
from optimum_hierarchy.trees.export_record import MANIFEST, component_programs, manifest_components
from optimum_hierarchy.walk import check_text, iter_proto_nodes
from optimum_hierarchy.wire import read_model_file


@dataclasses.dataclass(frozen=True)
class NodeAttribution:
    """The module of one node, as stored in the file."""

    name: str
    op_type: str
    graph: str
    """Name of the graph holding the node (the main graph or an ``If`` / ``Loop`` / ``Scan`` body)."""
    module: str | None
    """Module path; ``None`` when the node was left unattributed."""
    source: str | None
    reason: str | None = None
    sources: tuple[str, ...] = ()
    """For a node that replaced several export-time nodes (a fusion, a quantized op): their modules."""
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    @property
    def spanning(self) -> bool:
        """Whether the node stands for parts of several modules and sits at their common ancestor."""
        return bool(self.sources) and self.module not in self.sources


@dataclasses.dataclass(frozen=True)
class ModelHierarchy:
    """The hierarchy stored in one ONNX file."""

    metadata: HierarchyMetadata
    nodes: tuple[NodeAttribution, ...]
    path: Path | None = None

    @property
    def tree(self) -> schema.ModuleTree:
        return self.metadata.tree

    @property
    def export(self) -> schema.ExportInfo:
        return self.metadata.export

    def module_of(self, node_name: str) -> str | None:
        """Module path of the (first) node called ``node_name``; ``KeyError`` if there is none."""
        for node in self.nodes:
            if node.name == node_name:
                return node.module
        raise KeyError(node_name)


def _from_proto(proto: onnx.ModelProto, path: Path | None) -> ModelHierarchy:
    where = str(path) if path is not None else "model"
    metadata = decode_model_metadata(schema.read_props(proto), source=where)
    nodes = []
    for node, graph_name in iter_proto_nodes(proto.graph):
        node_props = schema.read_props(node)
        name, op_type, inputs, outputs = node.name, node.op_type, tuple(node.input), tuple(node.output)
        try:  # protobuf gives bytes for a text field that is not UTF-8; str.join refuses them
            "".join((name, op_type, graph_name, *inputs, *outputs, *node_props, *node_props.values()))
        except TypeError:
            check_text(proto, where)  # names the field
            raise
        record = schema.decode_node(node_props, name)
        for key, named in (
            (schema.NODE_MODULE_KEY, record.module),
            *((schema.NODE_SOURCES_KEY, s) for s in record.sources),
        ):
            if named is not None and named not in metadata.tree:
                raise SchemaError(
                    f"{key} of node {name!r}: {named!r} is not a module of the stored tree "
                    f"({schema.MODULES_KEY}); the file's hierarchy metadata is inconsistent. "
                    "Annotate it again with `optimum-cli hierarchy annotate`."
                )
        nodes.append(
            NodeAttribution(
                name=name,
                op_type=op_type,
                graph=graph_name,
                module=record.module,
                source=record.source,
                reason=record.reason,
                sources=record.sources,
                inputs=inputs,
                outputs=outputs,
            )
        )
    return ModelHierarchy(metadata=metadata, nodes=tuple(nodes), path=path)


def _from_file(path: Path) -> ModelHierarchy:
    """Read without weight values: neither external data nor the tensors stored in the file."""
    with read_model_file(path) as source:
        return _from_proto(source.proto, path)


def _session_path(obj: Any) -> Path | None:
    """The model file behind an ``ORTModel`` / ``ORTSessionMixin`` or an ``InferenceSession``."""
    session = getattr(obj, "session", obj)
    model_path = getattr(session, "_model_path", None)
    return Path(model_path) if model_path else None


def _from_ir(model: Any) -> ModelHierarchy:
    """An ``onnx_ir.Model``: read from its file when it was loaded from one, else serialized (weights copied)."""
    import onnx_ir as ir

    loaded_from = model.meta.get("path") if hasattr(model, "meta") else None
    if loaded_from:
        return _from_file(Path(loaded_from))
    return _from_proto(ir.serde.serialize_model(model), None)


def _export_parts(source: str | os.PathLike[str] | Any) -> dict[str, Path | Any]:
    """``{component name: its file, or its in-memory onnx_ir.Model}`` of an export of transformers' exporter."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not (path / MANIFEST).is_file():
            raise HierarchyError(f"{path}: no {MANIFEST} here; not a directory written by transformers' exporter.")
        return {name: path / entry["file"] for name, entry in manifest_components(path).items()}
    if not _is_exported_model(source):
        raise HierarchyError(f"{type(source).__name__}: expected transformers' ExportedModel or its directory.")
    if str(source.export_format) != "onnx":
        raise HierarchyError(f"an ExportedModel of format {source.export_format!r}: only ONNX files carry a hierarchy.")
    return component_programs(source)


def _is_exported_model(source: Any) -> bool:
    return isinstance(getattr(source, "components", None), dict) and hasattr(source, "export_format")


def _read_part(part: Path | Any) -> ModelHierarchy:
    return _from_file(part) if isinstance(part, Path) else _from_ir(part)


def read_export_hierarchy(source: str | os.PathLike[str] | Any) -> dict[str, ModelHierarchy]:
    """Every component's hierarchy of an export of transformers' exporter: ``{component name: ModelHierarchy}``.

    ``source`` is an ``ExportedModel`` (in memory, or loaded with ``ExportedModel.from_pretrained``) or the
    directory it was saved to (with ``export.json``). Weights are not read from files.
    """
    return {name: _read_part(part) for name, part in _export_parts(source).items()}


def read_hierarchy(
    source: str | os.PathLike[str] | onnx.ModelProto | Any,
    *,
    path: str | os.PathLike[str] | None = None,
    component: str | None = None,
) -> ModelHierarchy:
    """The hierarchy of an annotated model; weights in external data are never read.

    ``source`` is a path, an ``onnx.ModelProto``, an ``onnx_ir.Model``, an
    ``onnxruntime.InferenceSession`` or a loaded ``ORTModel``
    (``read_hierarchy(ORTModelForFeatureExtraction.from_pretrained("out/"))``). For a seq2seq
    ``ORTModel``, pass its ``.encoder`` or ``.decoder``. ``path``: the file a proto was read from,
    named in errors and kept as :attr:`ModelHierarchy.path`.

    For an export of transformers' exporter, an ``ExportedModel`` or the directory it was saved to
    (with ``export.json``), ``component`` names the component (``"prefill"``, ``"decode"``, ...); it
    may be left out when there is only one. :func:`read_export_hierarchy` reads them all.
    """
    if isinstance(source, onnx.ModelProto):
        return _from_proto(source, Path(path) if path is not None else None)
    exported = _is_exported_model(source) or (
        isinstance(source, (str, os.PathLike)) and Path(source).is_dir() and (Path(source) / MANIFEST).is_file()
    )
    if exported:
        components = _export_parts(source)
        if component is None and len(components) == 1:
            component = next(iter(components))
        if component not in components:
            raise HierarchyError(
                f"component={component!r}: the export has {', '.join(components)}; pass one of them as component= "
                "(or read_export_hierarchy for all)."
            )
        return _read_part(components[component])  # that component's file only
    if component is not None:
        raise HierarchyError("component= is for an export of transformers' exporter (ExportedModel or its directory).")
    if isinstance(source, (str, os.PathLike)):
        file = Path(source)
        if file.is_dir():
            raise HierarchyError(
                f"{file}: is a directory without {MANIFEST}; pass one of its .onnx files "
                "(or a directory written by transformers' exporter)."
            )
        return _from_file(file)
    if type(source).__name__ == "Model" and type(source).__module__.startswith("onnx_ir"):
        return _from_ir(source)
    session_file = _session_path(source)
    if session_file is None:
        parts = [name for name in ("encoder", "decoder") if hasattr(source, name)]
        hint = f" Pass one of its parts: {', '.join('.' + p for p in parts)}." if parts else ""
        raise HierarchyError(
            f"cannot find the ONNX file behind {type(source).__name__}: expected a path, an onnx.ModelProto, "
            f"an onnxruntime.InferenceSession or an ORTModel.{hint}"
        )
    return _from_file(session_file)
