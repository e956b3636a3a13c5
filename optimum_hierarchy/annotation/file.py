"""Annotate ONNX files on disk: load without weights, run the attribution pass, write atomically.

Three ways in, by what the caller holds: :func:`annotate_file` (a file on disk, rewritten in place when its
annotation changes; :func:`annotate_source` when the caller has read it already), :func:`write_annotated`
(the bytes an exporter is about to write, written annotated) and :func:`annotate_proto` (a ``ModelProto`` in
memory). What the graph is, an exporter's output or a file nobody annotated, is a :class:`Mode`.
"""

from __future__ import annotations

__all__ = [
    "annotate_file",
    "annotate_proto",
    "annotate_source",
    "check_block_consistency",
    "load_model_proto",
    "write_annotated",
]

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import onnx
import onnx_ir as ir

from optimum_hierarchy.atomic import atomic_write
from optimum_hierarchy.errors import AttributionError, InvalidModelFileError
from optimum_hierarchy.passes.annotate_graph import AnnotateGraphPass
from optimum_hierarchy.passes.attribute_nodes import SUMMARY_META_KEY, AttributeNodesPass, Mode
from optimum_hierarchy.provenance import decode_provenance
from optimum_hierarchy.rules import ArchitectureRules, FusedNodeRule, check_repeated_blocks, fused_node_rules
from optimum_hierarchy.schema import (
    AttributionSource,
    AttributionSummary,
    ExportInfo,
    Level,
    ModuleTree,
    decode_node,
    read_props,
    replace_props,
)
from optimum_hierarchy.walk import check_text, iter_ir_sites, iter_proto_nodes
from optimum_hierarchy.wire import PROTOBUF_LIMIT, ModelFile, parse_model_bytes, read_model_file, write_model_file

logger = logging.getLogger(__name__)


def load_model_proto(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load an ONNX model with the weights stored in the file but not its external data, with a clear
    error for bad files (:class:`InvalidModelFileError`). To read a model's structure without any weight
    value, use :func:`~optimum_hierarchy.wire.read_model_file`."""
    with read_model_file(path, light_threshold=sys.maxsize) as source:
        return source.proto


def _write_metadata(model: ir.Model, proto: onnx.ModelProto) -> None:
    """Copy the hierarchy metadata from the pass's IR model onto the original proto (same node order).

    Only metadata changes: the rest of the file stays byte for byte what the exporter wrote
    (re-serializing the IR would also add value_info entries and copy every weight).
    """
    ir_nodes = [site.node for site in iter_ir_sites(model.graph)]
    proto_nodes = [node for node, _ in iter_proto_nodes(proto.graph)]
    if len(ir_nodes) != len(proto_nodes):
        raise AssertionError(f"node count mismatch between IR ({len(ir_nodes)}) and proto ({len(proto_nodes)})")
    for ir_node, node in zip(ir_nodes, proto_nodes, strict=True):
        if ir_node.op_type != node.op_type:
            raise AssertionError(f"node order mismatch at {node.name!r}")
        if (ir_node.name or "") != node.name:  # renamed with scope_names=True
            node.name = ir_node.name or ""
        replace_props(node.metadata_props, ir_node.metadata_props, Level.NODE)
    replace_props(proto.metadata_props, model.metadata_props, Level.MODEL)


def annotate_proto(
    proto: onnx.ModelProto,
    tree: ModuleTree,
    export: ExportInfo | None = None,
    *,
    strict: bool = False,
    mode: Mode = Mode.EXPORT,
    scope_names: bool = False,
    where: str = "model",
    fused_rules: Sequence[FusedNodeRule] | None = None,
) -> tuple[AttributionSummary, bool]:
    """Attribute every node of ``proto`` in place; returns the summary and whether anything changed.

    ``mode``: what the graph is, :attr:`Mode.EXPORT` (an exporter's output, the default) or
    :attr:`Mode.AFTER_THE_FACT` (nobody annotated it at export, so its names are only names). A graph that
    carries provenance from an earlier annotation (optimized or quantized since) is re-attributed from it,
    :attr:`Mode.AFTER_OPTIMIZER`, whichever mode is given. ``scope_names``: rename unscoped nodes after their
    module (see :class:`AttributeNodesPass`). ``where`` names the model in errors. ``fused_rules``: the
    ``fused_nodes`` rules of ``export.model_type`` where the caller has them
    (:func:`~optimum_hierarchy.rules.model_rules`); looked up here otherwise.

    Raises:
        InvalidModelFileError: the graph is not one onnx_ir can read (a tensor produced twice, an
            unknown data type, text that is not UTF-8).
        SchemaError: its stored provenance is malformed.
        ValueError: ``mode`` is :attr:`Mode.AFTER_OPTIMIZER` and the graph carries no provenance.
    """
    export = export if export is not None else ExportInfo()
    check_text(proto, where)
    provenance = decode_provenance(read_props(proto))
    try:
        model = ir.serde.deserialize_model(proto)
    except (RuntimeError, ValueError, TypeError) as e:  # onnx_ir's SerdeError is a RuntimeError
        cause: BaseException = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise InvalidModelFileError(f"{where}: not a valid ONNX graph ({cause}). Check it with onnx.checker.") from e
    if provenance is not None:
        mode = Mode.AFTER_OPTIMIZER
    elif mode is Mode.AFTER_OPTIMIZER:
        raise ValueError(f"{where}: Mode.AFTER_OPTIMIZER places nodes from a provenance, and this graph has none")
    attribute = AnnotateGraphPass(
        AttributeNodesPass(
            tree,
            export,
            mode=mode,
            provenance=provenance,
            fused_rules=fused_rules if fused_rules is not None else fused_node_rules(export.model_type),
            strict=strict,
        ),
        scope_names=scope_names,
    )
    result = attribute(model)
    if result.modified:
        _write_metadata(result.model, proto)
    return result.model.meta[SUMMARY_META_KEY], result.modified


_CREATED = {AttributionSource.FUSION.value, AttributionSource.RULE.value}


def _check_rules(path: Path, proto: onnx.ModelProto, rules: ArchitectureRules, strict: bool) -> None:
    weights = {initializer.name for initializer in proto.graph.initializer}
    nodes = (
        (read_props(node), node.op_type)
        for node, _ in iter_proto_nodes(proto.graph)
        if not _aliases_a_weight(node, weights)
    )
    check_block_consistency(str(path), nodes, rules, strict)


def _aliases_a_weight(node: onnx.NodeProto, weights: set[str]) -> bool:
    """An ``Identity`` of a stored weight: the exporter's way of storing two equal parameters once.

    Which parameters are equal is a property of the weights (a freshly initialized model's zero
    biases), not of the modules, so such nodes are left out of the repeated-block comparison.
    """
    return node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in weights


def check_block_consistency(
    where: str, nodes: Iterable[tuple[Mapping[str, str], str]], rules: ArchitectureRules, strict: bool
) -> None:
    """Run the rules' repeated-block check on (node metadata, op type) pairs: a warning, or with ``strict``
    an :class:`AttributionError`. Skipped for optimized graphs (nodes created by a fusion)."""
    pairs = []
    for props, op_type in nodes:
        record = decode_node(props, strict=False)
        if record.source in _CREATED:
            # Optimized: fusions treat the first or last block differently (a block's LayerNorm
            # fused with the previous block's residual Add), so blocks are compared only on exports.
            return
        if record.module is not None:
            pairs.append((record.module, op_type))
    problems = check_repeated_blocks(rules, pairs)
    if not problems:
        return
    message = f"{where}: repeated blocks of {rules.name!r} ({rules.source}) are not attributed alike: " + "; ".join(
        problems
    )
    if strict:
        raise AttributionError(message)
    logger.warning("%s", message)


def annotate_file(
    path: str | os.PathLike[str],
    tree: ModuleTree,
    export: ExportInfo | None = None,
    *,
    strict: bool = False,
    rules: ArchitectureRules | None = None,
    source: ModelFile | None = None,
    mode: Mode = Mode.EXPORT,
    scope_names: bool = False,
    fused_rules: Sequence[FusedNodeRule] | None = None,
) -> AttributionSummary:
    """Annotate the ONNX file at ``path`` in place and return its attribution summary.

    No weight is read: neither external data files nor the values of weights stored in the file,
    which are copied byte for byte (see :mod:`optimum_hierarchy.wire`). The file is rewritten
    atomically, and not at all when the annotation it already carries is the same. A file optimized
    or quantized since its last annotation is re-attributed from the provenance that annotation
    stored. With ``rules``, their consistency checks run on the result (a warning, or
    :class:`AttributionError` when ``strict``). ``source`` is the file as the caller already read it
    with :func:`~optimum_hierarchy.wire.read_model_file` (its proto is updated in place; the caller
    closes it). ``mode`` and ``fused_rules``: see :func:`annotate_proto`. For the bytes an exporter is
    about to write (no file yet), see :func:`write_annotated`.
    """
    with contextlib.ExitStack() as stack:
        opened = source if source is not None else stack.enter_context(read_model_file(path))
        return annotate_source(
            opened,
            path,
            tree,
            export,
            strict=strict,
            rules=rules,
            mode=mode,
            scope_names=scope_names,
            fused_rules=fused_rules,
        )


def annotate_source(
    source: ModelFile,
    path: str | os.PathLike[str],
    tree: ModuleTree,
    export: ExportInfo | None = None,
    *,
    strict: bool = False,
    rules: ArchitectureRules | None = None,
    mode: Mode = Mode.EXPORT,
    scope_names: bool = False,
    fused_rules: Sequence[FusedNodeRule] | None = None,
) -> AttributionSummary:
    """:func:`annotate_file` of a file the caller has read (``source``, from
    :func:`~optimum_hierarchy.wire.read_model_file`; its proto is updated in place, the caller closes it)."""
    path = Path(path)
    summary, modified = _annotate_read(
        source,
        path,
        tree,
        export,
        strict=strict,
        rules=rules,
        mode=mode,
        scope_names=scope_names,
        fused_rules=fused_rules,
    )
    if modified:
        _write(source, path, durable=True)
    logger.info("%s: %s", path, summary.describe())
    return summary


def write_annotated(
    model_bytes: bytes,
    path: str | os.PathLike[str],
    tree: ModuleTree,
    export: ExportInfo | None = None,
    *,
    strict: bool = False,
    rules: ArchitectureRules | None = None,
    fused_rules: Sequence[FusedNodeRule] | None = None,
) -> AttributionSummary:
    """Annotate ``model_bytes``, the serialized model an exporter is about to write to ``path``, and write it
    there: in any case (nothing is there yet, or an earlier export's file it replaces), atomically but without
    waiting for the disk, as the exporter itself would. The weights are copied, not parsed. Otherwise as
    :func:`annotate_file`, in :attr:`Mode.EXPORT`.
    """
    path = Path(path)
    with parse_model_bytes(model_bytes, path) as source:
        summary, _ = _annotate_read(
            source,
            path,
            tree,
            export,
            strict=strict,
            rules=rules,
            mode=Mode.EXPORT,
            scope_names=False,
            fused_rules=fused_rules,
        )
        _write(source, path, durable=False)
    logger.info("%s: %s", path, summary.describe())
    return summary


def _annotate_read(
    source: ModelFile,
    path: Path,
    tree: ModuleTree,
    export: ExportInfo | None,
    *,
    strict: bool,
    rules: ArchitectureRules | None,
    mode: Mode,
    scope_names: bool,
    fused_rules: Sequence[FusedNodeRule] | None,
) -> tuple[AttributionSummary, bool]:
    """:func:`annotate_proto` on ``source.proto`` and the rules' checks; whether it changed."""
    if source.size > PROTOBUF_LIMIT:
        raise InvalidModelFileError(
            f"{path}: {source.size / 2**30:.1f} GiB in one file, over protobuf's 2 GB limit: neither ONNX Runtime "
            "nor onnx can load it, so it is not annotated. Save it with its weights in external data "
            "(onnx.save_model(model, path, save_as_external_data=True)) and annotate that."
        )
    proto = source.proto
    summary, modified = annotate_proto(
        proto,
        tree,
        export,
        strict=strict,
        mode=mode,
        scope_names=scope_names,
        where=str(path),
        fused_rules=fused_rules,
    )
    if rules is not None:
        _check_rules(path, proto, rules, strict)
    return summary, modified


def _write(source: ModelFile, path: Path, *, durable: bool) -> None:
    try:
        atomic_write(path, functools.partial(write_model_file, source, source.proto), durable=durable)
    except OSError as e:
        raise InvalidModelFileError(f"{path}: cannot be written ({e}). Check the directory's permissions.") from e
