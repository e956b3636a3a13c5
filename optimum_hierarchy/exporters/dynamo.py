"""Export with torch's dynamo exporter and the module hierarchy.

``torch.onnx.export(..., dynamo=True)`` writes each node's module path into its metadata
(:mod:`optimum_hierarchy.evidence.dynamo_metadata`), then by default runs onnxscript's optimizer,
whose rewriter gives a fused node the metadata of the first node it matched. So the export here
runs in three steps on the exporter's ``ONNXProgram``, in memory:

1. export with ``optimize=False`` and attribute every node from its own metadata (source
   ``metadata``); this stores the graph's provenance;
2. run onnxscript's optimizer (``ONNXProgram.optimize()``, what ``optimize=True`` runs), unless
   the caller turned it off;
3. attribute the optimized graph again from that provenance: kept nodes keep their module, fused
   nodes get the lowest common ancestor of the nodes they replaced (source ``fusion``), as after
   ONNX Runtime's optimizer.

The file is then written once, atomically (weights over protobuf's 2 GB limit go to
``<name>_data``, as torch does).
"""

from __future__ import annotations

__all__ = [
    "LOGITS_TO_KEEP",
    "StagedAnnotation",
    "annotate_program",
    "dynamo_is_default",
    "export_program",
    "export_program_with_axes",
    "name_dynamic_axes",
    "require_onnxscript",
    "save_program",
    "transformers_translation_table",
]

import importlib
import importlib.util
import inspect
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx_ir as ir

from optimum_hierarchy.atomic import atomic_write, write_through_temporary
from optimum_hierarchy.errors import HierarchyExportError
from optimum_hierarchy.passes.annotate_graph import AnnotateGraphPass
from optimum_hierarchy.passes.attribute_nodes import SUMMARY_META_KEY, AttributeNodesPass, Mode
from optimum_hierarchy.provenance import Provenance, decode_provenance
from optimum_hierarchy.rules import fused_node_rules
from optimum_hierarchy.schema import AttributionSummary, ExportInfo, ModuleTree, read_props
from optimum_hierarchy.walk import iter_ir_sites
from optimum_hierarchy.wire import PROTOBUF_LIMIT

if TYPE_CHECKING:
    import onnx
    import torch
    from torch.onnx import ONNXProgram


logger = logging.getLogger(__name__)

_TRANSFORMERS_ONNX = "transformers.exporters.exporter_onnx"

LOGITS_TO_KEEP = ("logits_to_keep", "num_logits_to_keep")
"""``forward`` arguments that are not inputs of an exported model: given 0, as Optimum does (all logits)."""


def dynamo_is_default() -> bool:
    """What ``torch.onnx.export`` does when ``dynamo`` is not given (``True`` since torch 2.9)."""
    import torch

    parameter = inspect.signature(torch.onnx.export).parameters.get("dynamo")
    return bool(parameter.default) if parameter is not None else False


def require_onnxscript() -> None:
    """Torch's dynamo exporter needs onnxscript; say so before torch fails deep inside."""
    if importlib.util.find_spec("onnxscript") is None:
        raise HierarchyExportError(
            "torch's dynamo exporter needs the onnxscript package, which is not installed: pip install onnxscript"
        )


def transformers_translation_table() -> dict[Any, Any]:
    """transformers' own ONNX translations of the ops torchlib lacks or gets wrong, for ``custom_translation_table``.

    transformers' exporter (``transformers.exporters.exporter_onnx``, in the transformers 5 releases
    that have ``transformers.exporters``) passes them to ``torch.onnx.export``: among them the
    ``grouped_mm`` its mixture-of-experts layers run (Mixtral's default experts), which torch's own
    table cannot translate. The table is a private name of that module, so it is read guarded: empty
    where the module or the name is missing (transformers 4).
    """
    if importlib.util.find_spec("transformers.exporters") is None:
        return {}
    try:
        module = importlib.import_module(_TRANSFORMERS_ONNX)
    except ImportError as e:
        logger.warning("%s cannot be imported (%s): exported without its translations", _TRANSFORMERS_ONNX, e)
        return {}
    table = getattr(module, "_ONNX_TRANSLATION_TABLE", None)
    return dict(table) if isinstance(table, dict) else {}


def export_program(model: torch.nn.Module, args: tuple[Any, ...], **export_kwargs: Any) -> ONNXProgram:
    """``torch.onnx.export(model, args, dynamo=True, optimize=False, **export_kwargs)``, in eval mode, no grad.

    Raises :class:`HierarchyExportError` for arguments that only the TorchScript exporter takes.
    """
    import torch

    require_onnxscript()
    for name in ("f", "dynamo", "optimize"):
        export_kwargs.pop(name, None)
    torchscript_only = sorted(set(export_kwargs) & {"dynamic_axes", "operator_export_type", "training"})
    if torchscript_only:
        raise HierarchyExportError(
            f"{', '.join(torchscript_only)}: TorchScript exporter arguments; with dynamo=True use dynamic_shapes "
            "(e.g. {'input_ids': {0: 'batch_size', 1: 'sequence_length'}}) instead."
        )
    export_kwargs.pop("do_constant_folding", None)  # the dynamo exporter folds constants in its optimizer
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            program = torch.onnx.export(model, args, dynamo=True, optimize=False, **export_kwargs)
    finally:
        model.train(was_training)
    if program is None:  # pragma: no cover - torch returns the program for dynamo=True
        raise HierarchyExportError("torch.onnx.export(dynamo=True) returned no ONNXProgram")
    return program


def export_program_with_axes(
    model: torch.nn.Module,
    kwargs: Mapping[str, Any],
    axes: Mapping[str, Mapping[int, str]],
    **export_kwargs: Any,
) -> tuple[ONNXProgram, list[str]]:
    """:func:`export_program` of ``model(**kwargs)`` with the named input axes dynamic; the program, and the
    axes the model made static (see :func:`name_dynamic_axes`).

    Each axis is given as ``torch.export.Dim.AUTO``, not by its name: an axis called dynamic may be
    static in the model (a ViT's image size), which torch.export refuses for a named dimension
    (``Dim.DYNAMIC``). The graph's symbols are named after the axes afterwards.
    """
    import torch

    dynamic_shapes = (
        {name: dict.fromkeys(wanted, torch.export.Dim.AUTO) for name, wanted in axes.items()} if axes else None
    )
    program = export_program(model, (), kwargs=dict(kwargs), dynamic_shapes=dynamic_shapes, **export_kwargs)
    return program, name_dynamic_axes(program, axes)


class StagedAnnotation:
    """The attribution of one graph through the steps that rewrite it after export.

    :meth:`first` attributes the graph as the exporter wrote it, from each node's own module record
    (once); :meth:`again`, after a step rewrote it (onnxscript's optimizer, transformers' IR fixes,
    ONNX Runtime fusions, a quantizer), re-attributes it from the provenance the previous attribution
    stored, kept here as it was before the step so that a step dropping model metadata loses nothing.
    """

    def __init__(self, tree: ModuleTree, export: ExportInfo, *, strict: bool = False) -> None:
        self.tree = tree
        self.export = export
        self.strict = strict
        self.fused_rules = fused_node_rules(export.model_type)
        self.provenance: Provenance | None = None
        self.summary: AttributionSummary | None = None

    @property
    def started(self) -> bool:
        return self.summary is not None

    def first(self, model: ir.Model) -> None:
        """Attribute the graph as exported (nothing if it was attributed already)."""
        if not self.started:
            self._run(model)

    def again(self, model: ir.Model) -> None:
        """Re-attribute after a step; the first look if none came before."""
        self._run(model)

    def _run(self, model: ir.Model) -> None:
        mode = Mode.EXPORT if self.provenance is None else Mode.AFTER_OPTIMIZER
        attribute = AttributeNodesPass(
            self.tree,
            self.export,
            mode=mode,
            provenance=self.provenance,
            fused_rules=self.fused_rules,
            strict=self.strict,
        )
        AnnotateGraphPass(attribute)(model)
        self.summary = model.meta[SUMMARY_META_KEY]
        self.provenance = decode_provenance(read_props(model))


def annotate_program(
    program: ONNXProgram,
    tree: ModuleTree,
    export: ExportInfo,
    *,
    strict: bool = False,
    optimize: bool = True,
) -> AttributionSummary:
    """Attribute the unoptimized program, optimize it (if asked) and re-attribute it; returns the summary.

    The rules' repeated-block check (:func:`~optimum_hierarchy.rules.check_repeated_blocks`) is not
    run: it guards the resolution of TorchScript scopes, while here each node's module is the
    exporter's own record, and ``torch.export`` legitimately shares shape computations between blocks.
    """
    staged = StagedAnnotation(tree, export, strict=strict)
    staged.first(program.model)
    if optimize:
        program.optimize()
        staged.again(program.model)
    if staged.summary is None:  # pragma: no cover - first() always leaves one
        raise AssertionError("the attribution pass left no summary")
    return staged.summary


def name_dynamic_axes(program: ONNXProgram, axes: Mapping[str, Mapping[int, str]]) -> list[str]:
    """Give the graph's symbolic dimensions the names ``axes`` asks for (``{"input_ids": {0: "batch_size"}}``).

    Inputs exported with ``torch.export.Dim.AUTO`` get symbols of torch's choosing (``s35``); each one
    found on a named input axis is renamed throughout the graph. Returns the requested axes that
    the export made static (``pixel_values[2]`` when the model only accepts one image size).
    """
    inputs = {v.name: v for v in program.model.graph.inputs}
    renames: dict[str, str] = {}
    static = []
    for name, wanted in axes.items():
        value = inputs.get(name)
        if value is None or value.shape is None:
            continue
        for axis, axis_name in wanted.items():
            dim = value.shape[axis] if axis < len(value.shape) else None
            if isinstance(dim, ir.SymbolicDim) and dim.value is not None:
                renames.setdefault(dim.value, axis_name)
            else:
                static.append(f"{name}[{axis}] ({axis_name})")
    if renames:
        for value in _all_values(program.model.graph):
            shape = value.shape
            if shape is not None and any(isinstance(d, ir.SymbolicDim) and d.value in renames for d in shape):
                value.shape = ir.Shape(
                    [
                        ir.SymbolicDim(renames[d.value]) if isinstance(d, ir.SymbolicDim) and d.value in renames else d
                        for d in shape
                    ]
                )
    return static


def _all_values(graph: ir.Graph) -> Iterator[ir.Value]:
    yield from graph.inputs
    for site in iter_ir_sites(graph):
        yield from site.node.outputs


def save_program(program: ONNXProgram, path: str | os.PathLike[str]) -> onnx.ModelProto | None:
    """Write the program's model to ``path`` atomically: nothing is left there if this fails.

    Returns the ``ModelProto`` written, or ``None`` for a model whose weights exceed protobuf's 2 GB
    limit, which is written with them in ``<name>_data``.
    """
    path = Path(path)
    model = program.model
    weights = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    try:
        if weights < PROTOBUF_LIMIT // 2:
            proto = ir.serde.serialize_model(model)
            atomic_write(path, proto.SerializeToString(), durable=False)
            return proto
        write_through_temporary(path, lambda tmp: ir.save(model, tmp, external_data=f"{path.name}_data"))
        return None
    except OSError as e:
        raise HierarchyExportError(f"{path}: cannot be written ({e}).") from e
