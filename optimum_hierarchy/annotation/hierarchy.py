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
  first of the sources :mod:`optimum_hierarchy.trees.sources` orders (the export record, the
  model's ``config.json`` on PyTorch's ``meta`` device, the dynamo exporter's node metadata, the
  graph's names). Such results are marked ``metadata``, ``name``, ``rule`` or ``context``, never ``scope`` or
  ``fusion``.
"""

from __future__ import annotations

__all__ = ["annotate_hierarchy", "restore_if_annotated"]

import logging
import os
from pathlib import Path

import onnx

from optimum_hierarchy.annotation.export_info import make_export_info
from optimum_hierarchy.annotation.file import annotate_source
from optimum_hierarchy.annotation.results import AnnotatedFile
from optimum_hierarchy.atomic import directory_lock
from optimum_hierarchy.errors import HierarchyError, InvalidModelFileError, MissingHierarchyError
from optimum_hierarchy.passes.attribute_nodes import Mode
from optimum_hierarchy.rules import model_rules
from optimum_hierarchy.schema import HierarchyMetadata, decode_model_metadata, read_props
from optimum_hierarchy.trees.sources import tree_of_file
from optimum_hierarchy.walk import check_text
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

    The file is parsed once and its metadata decoded once. This is what runs after ``optimum-cli
    onnxruntime optimize|quantize``.
    """
    path = Path(path)
    with directory_lock(path.parent, shared=True), read_model_file(path) as source:
        meta = _stored_metadata(source.proto, path)
        return None if meta is None else _reannotate(path, source, meta, strict=False, scope_names=False)


def _restore_file(path: Path, config: Path | None, strict: bool, scope_names: bool) -> AnnotatedFile:
    with read_model_file(path) as source:
        check_text(source.proto, str(path))  # the names read below must be text
        meta = _stored_metadata(source.proto, path)
        if meta is not None:
            return _reannotate(path, source, meta, strict, scope_names)
        return _annotate_after_the_fact(path, source, config, strict, scope_names)


def _stored_metadata(proto: onnx.ModelProto, path: Path) -> HierarchyMetadata | None:
    try:
        return decode_model_metadata(read_props(proto), source=str(path))
    except MissingHierarchyError:
        return None


def _reannotate(
    path: Path, source: ModelFile, meta: HierarchyMetadata, strict: bool, scope_names: bool
) -> AnnotatedFile:
    """Attribute again, from the tree, export record and provenance the file carries."""
    rules = model_rules(meta.export.model_type)
    summary = annotate_source(
        source,
        path,
        meta.tree,
        meta.export,
        strict=strict,
        rules=rules.own,
        scope_names=scope_names,
        fused_rules=rules.fused_nodes,
    )
    return AnnotatedFile(path=path, root=meta.export.root, summary=summary, rules=meta.export.rules)


def _annotate_after_the_fact(
    path: Path, source: ModelFile, config: Path | None, strict: bool, scope_names: bool
) -> AnnotatedFile:
    """Attribute a file nobody annotated, in the tree its own evidence gives (:mod:`optimum_hierarchy.trees`)."""
    found = tree_of_file(path, source.proto, config)
    root = found.root if found.root is not None else ""
    export, rules = make_export_info(root, found.model_type, found.model_class)
    summary = annotate_source(
        source,
        path,
        found.tree,
        export,
        strict=strict,
        rules=rules,
        mode=Mode.AFTER_THE_FACT,
        scope_names=scope_names,
    )
    logger.info("%s: annotated after the fact (tree from %s): %s", path, found.origin, summary.describe())
    return AnnotatedFile(path=path, root=root, summary=summary, rules=export.rules)
