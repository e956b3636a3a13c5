"""Give ONNX files their hierarchy back: after an optimization or quantization, or when nobody annotated them.

``annotate_hierarchy(path)`` is the one call after ``ORTOptimizer.optimize`` / ``ORTQuantizer.quantize``
(``optimum-cli onnxruntime optimize|quantize`` runs it by itself, ``optimum-cli hierarchy annotate``
is the command). For each ONNX file:

* a file that carries hierarchy metadata (exported with ``--hierarchy``, then optimized or
  quantized) is re-attributed from the provenance stored in it: exact, see
  :mod:`optimum_hierarchy.passes.reattribute`;
* a file without it (an Optimum export made elsewhere, optimized or not) is annotated after the
  fact from the dynamo exporter's node metadata (``metadata``), its node and tensor names, the
  per-architecture rules, and the modules around each node. The module tree comes from the
  model's ``config.json`` (the one given, or the one Optimum writes next to the model),
  instantiated on PyTorch's ``meta`` device so that no weight is allocated; without a config it is
  rebuilt from the dynamo exporter's ``name_scopes`` and ``class_hierarchy`` (real class names),
  else from the scopes in the names and the initializer names (module classes then unknown).
  Such results are marked ``metadata``, ``name``, ``rule`` or ``context``, never ``scope`` or
  ``fusion``.
"""

from __future__ import annotations

__all__ = ["annotate_hierarchy", "restore_if_annotated", "tree_from_config", "tree_from_names"]

import logging
import os
from pathlib import Path

import onnx

from optimum_hierarchy.annotation.export_info import make_export_info, rules_of
from optimum_hierarchy.annotation.file import annotate_file
from optimum_hierarchy.annotation.results import AnnotatedFile
from optimum_hierarchy.atomic import directory_lock
from optimum_hierarchy.capture.module_tree import capture_module_tree, qualified_class_name
from optimum_hierarchy.errors import HierarchyError, InvalidModelFileError, MissingHierarchyError
from optimum_hierarchy.evidence.dynamo_metadata import has_dynamo_metadata, tree_from_dynamo
from optimum_hierarchy.export_record import tree_for_exported_component
from optimum_hierarchy.schema import (
    HierarchyMetadata,
    ModuleInfo,
    ModuleTree,
    ParameterInfo,
    decode_model_metadata,
    read_props,
)
from optimum_hierarchy.scope import ScopeResolver, call_suffix_base, producer_name_of_output, scope_segments
from optimum_hierarchy.walk import check_text, iter_proto_nodes
from optimum_hierarchy.wire import ModelFile, read_model_file

logger = logging.getLogger(__name__)


def annotate_hierarchy(
    path: str | os.PathLike[str],
    *,
    config: str | os.PathLike[str] | None = None,
    strict: bool = False,
    scope_names: bool = False,
) -> list[AnnotatedFile]:
    """Annotate (again) the ONNX file at ``path``, or every ``.onnx`` file under the directory ``path``.

    Args:
        path: an ``.onnx`` file or a directory (searched recursively).
        config: a ``config.json`` (or the directory holding it) of the model the files came from;
            used only for files that carry no hierarchy. Default: the ``config.json`` beside each file.
        strict: raise :class:`~optimum_hierarchy.errors.AttributionError` if any node stays
            unattributed (the file is then left as it was).
        scope_names: rename nodes whose names carry no scope (``Attention_0``) after their module's
            scope as the exporter spelled it (``/encoder/layer.0/attention/self/Attention_0``), for
            tools that group nodes by ``/`` in their names (scripts, profile viewers); Netron groups
            nothing, and Model Explorer's ONNX adapter groups by the ``namespace`` metadata.

    Returns:
        One record per file, with its attribution summary.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.onnx"))
        if not files:
            raise InvalidModelFileError(f"{path}: no .onnx file in this directory.")
    elif path.exists():
        files = [path]
    else:
        raise InvalidModelFileError(f"{path}: no such file or directory. Pass an .onnx file or a directory.")
    config_path = _config_file(Path(config)) if config is not None else None
    with directory_lock(path if path.is_dir() else path.parent, shared=True):
        return [_restore_file(f, config_path, strict, scope_names) for f in files]


def _config_file(config: Path) -> Path:
    candidate = config / "config.json" if config.is_dir() else config
    if not candidate.is_file():
        raise HierarchyError(f"{config}: no config.json there. Pass the model directory or its config.json.")
    return candidate


def restore_if_annotated(path: str | os.PathLike[str]) -> AnnotatedFile | None:
    """Re-attribute ``path`` if it carries hierarchy metadata; ``None`` (file untouched) otherwise.

    The file is parsed once. This is what runs after ``optimum-cli onnxruntime optimize|quantize``.
    """
    path = Path(path)
    with directory_lock(path.parent, shared=True), read_model_file(path) as source:
        if _metadata(path, source.proto) is None:
            return None
        return _restore_file(path, None, strict=False, scope_names=False, source=source)


def _metadata(path: Path, proto: onnx.ModelProto) -> HierarchyMetadata | None:
    try:
        return decode_model_metadata(read_props(proto), source=str(path))
    except MissingHierarchyError:
        return None


def _restore_file(
    path: Path, config: Path | None, strict: bool, scope_names: bool, source: ModelFile | None = None
) -> AnnotatedFile:
    if source is None:
        with read_model_file(path) as opened:
            return _restore_file(path, config, strict, scope_names, opened)
    proto = source.proto
    check_text(proto, str(path))  # the names read below must be text
    meta = _metadata(path, proto)
    if meta is not None:
        rules = rules_of(meta.export)
        summary = annotate_file(
            path, meta.tree, meta.export, strict=strict, rules=rules, source=source, scope_names=scope_names
        )
        return AnnotatedFile(path=path, root=meta.export.root, summary=summary, rules=meta.export.rules)

    if config is None and (path.parent / "config.json").is_file():
        config = path.parent / "config.json"
    model_type = model_class = None
    nodes_metadata = [read_props(node) for node, _ in iter_proto_nodes(proto.graph)]
    dynamo = has_dynamo_metadata(nodes_metadata)
    record = tree_for_exported_component(path, config, nodes_metadata) if dynamo else None
    root: str | None = None
    if record is not None:  # transformers' exporter: the tree and root its export.json and node records agree on
        tree, root, model_type, model_class = record.tree, record.root, record.model_type, record.model_class
        tree_origin = record.origin
    elif config is not None:
        tree, model_type, model_class = tree_from_config(config)
        tree_origin = str(config)
    elif dynamo:
        tree = tree_from_dynamo(nodes_metadata, _parameters_from_initializers(proto))
        tree_origin = "the dynamo exporter's node metadata"
    else:
        tree = tree_from_names(proto)
        tree_origin = "the graph's names"
    if root is None:
        root = _best_root(tree, proto)
    export, rules = make_export_info(root, model_type, model_class)
    summary = annotate_file(
        path, tree, export, strict=strict, rules=rules, source=source, after_the_fact=True, scope_names=scope_names
    )
    logger.info(
        "%s: annotated after the fact (tree from %s): %s",
        path,
        tree_origin,
        summary.describe(),
    )
    return AnnotatedFile(path=path, root=root, summary=summary, rules=export.rules)


def tree_from_config(config: str | os.PathLike[str]) -> tuple[ModuleTree, str | None, str | None]:
    """The module tree of the model a ``config.json`` describes, built on the ``meta`` device (no weights).

    Returns the tree, the config's ``model_type`` and the class instantiated (the first of the
    config's ``architectures`` that transformers has, else the ``AutoModel`` class). Remote code is
    never run.
    """
    import torch
    import transformers

    config_path = Path(config)
    try:
        cfg = transformers.AutoConfig.from_pretrained(str(config_path.parent), trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        raise HierarchyError(f"{config_path}: cannot be read as a transformers config ({e}).") from e
    classes = [getattr(transformers, name, None) for name in (getattr(cfg, "architectures", None) or [])]
    cls = next((c for c in classes if isinstance(c, type)), None)
    with torch.device("meta"):
        model = cls(cfg) if cls is not None else transformers.AutoModel.from_config(cfg)  # type: ignore[no-untyped-call]
    return capture_module_tree(model), getattr(cfg, "model_type", None), qualified_class_name(model)


def tree_from_names(proto: onnx.ModelProto) -> ModuleTree:
    """A module tree rebuilt from a graph's names alone (classes unknown: ``class_name`` is ``""``).

    Modules come from the initializers named like parameters (``encoder.layer.0.output.dense.bias``;
    their shapes are the initializers'), and from the TorchScript scopes in node and output tensor
    names, with the exporter's quirks undone where the parameters show the real path (a repeated
    container level, a ``_N`` call suffix).
    """
    parameters = _parameters_from_initializers(proto)
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


def _parameters_from_initializers(proto: onnx.ModelProto) -> dict[str, list[ParameterInfo]]:
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


def _best_root(tree: ModuleTree, proto: onnx.ModelProto) -> str:
    """The module the file's scopes are relative to: the one under which most node names resolve."""
    names = [node.name for node, _ in iter_proto_nodes(proto.graph) if scope_segments(node.name)]
    candidates = [""] + [p for p in tree if p and tree[p].depth <= 2]
    best, best_count = "", -1
    for root in candidates:
        resolver = ScopeResolver(tree, root)
        count = sum(resolver.resolve(n) is not None for n in names)
        if count > best_count:
            best, best_count = root, count
    return best
