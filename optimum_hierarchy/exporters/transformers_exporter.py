"""Transformers' own ONNX exporter (``transformers.exporters``), with the module hierarchy.

:class:`HierarchyOnnxExporter` is a subclass of ``transformers.exporters.OnnxExporter``: ``export``,
``export_for_generation`` and ``save_pretrained`` work as in the parent, and every component file
comes back annotated. Module paths are paths of the whole model passed in: a LLaVA
``language_model`` component's nodes sit at ``model.language_model.layers.0.self_attn``, and each
file stores the whole model's module tree with that component's module as its root
(``ExportInfo.root``).

The parent's ``export_program`` runs these steps on one graph; the hierarchy is written between them:

1. ``torch.export`` and ``torch.onnx.export``: every node carries torch's own module record
   (``pkg.torch.onnx.name_scopes``). Before onnxscript's optimizer runs (``OnnxConfig.optimize``),
   every node is attributed from that record (source ``metadata``) and the graph's provenance is
   stored;
2. after the optimizer, after transformers' ONNX IR fixes, after ``ort_fusions`` (ONNX Runtime's
   ``GroupQueryAttention``, ``SkipSimplifiedLayerNormalization``, ...) and after a quantizer
   (``OnnxConfig.quantizer``), the graph is re-attributed from the provenance of the step before
   (:mod:`optimum_hierarchy.passes.reattribute`): kept nodes keep their module, and a node a step
   created sits at the lowest common ancestor of the modules of the nodes it replaced (source
   ``fusion``). So a ``GroupQueryAttention`` sits at ``model.layers.N.self_attn`` although it
   carries no metadata, and a ``SkipSimplifiedLayerNormalization`` that took a layer's residual add
   and the next norm sits at the layer that holds both.

Each step is reached through the name the parent calls it by (``ONNXProgram.optimize`` and three
functions of ``transformers.exporters.exporter_onnx``), wrapped for the duration of one
``export_program`` call under a lock (one hierarchy export at a time per process; an export another
thread runs meanwhile goes through the wrappers untouched); the parent's code and its output are
unchanged, which the tests check bit for bit.
"""

from __future__ import annotations

__all__ = ["HierarchyOnnxExporter", "component_root", "require_transformers_exporters"]

import contextlib
import dataclasses
import importlib
import importlib.util
import logging
import threading
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

import onnx_ir as ir

from optimum_hierarchy.annotation.export_info import model_export_info
from optimum_hierarchy.errors import HierarchyExportError, MissingExtraError
from optimum_hierarchy.exporters.dynamo import StagedAnnotation
from optimum_hierarchy.passes.attribute_nodes import SUMMARY_META_KEY
from optimum_hierarchy.schema import AttributionSummary, ModuleTree
from optimum_hierarchy.trees.export_record import component_programs
from optimum_hierarchy.trees.sources import tree_of_model

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

EXPORTERS_MODULE = "transformers.exporters.exporter_onnx"
HOOKED_STEPS = ("apply_onnx_ir_fixes", "fuse_for_onnxruntime", "quantize_converted_model")
"""The functions of :data:`EXPORTERS_MODULE` after which the graph is re-attributed (those present)."""

MIN_TRANSFORMERS = "5.23"
"""The first transformers release whose ``exporters`` has ``ort_fusions`` (5.20 has the exporter without them)."""

_LOCK = threading.RLock()


def require_transformers_exporters() -> Any:
    """``transformers.exporters.exporter_onnx``, or :class:`MissingExtraError` saying what to install."""
    import transformers

    if importlib.util.find_spec("transformers.exporters") is None:
        raise MissingExtraError(
            f"transformers {transformers.__version__} has no `transformers.exporters` (transformers' own ONNX "
            f'exporter, {MIN_TRANSFORMERS} and later): pip install "transformers>={MIN_TRANSFORMERS},<6" onnxscript'
        )
    try:
        return importlib.import_module(EXPORTERS_MODULE)
    except ImportError as e:
        raise MissingExtraError(
            f"transformers.exporters cannot load its ONNX exporter ({e}): pip install onnx onnxscript"
        ) from e


_EXPORTER_ONNX = require_transformers_exporters()


@contextlib.contextmanager
def _hooked_steps(staged: StagedAnnotation) -> Iterator[None]:
    """Wrap the parent's steps for the block: attribute before onnxscript's optimizer, re-attribute after each step.

    Only in the thread that entered the block: the wrappers are process-wide, and an export another thread
    runs meanwhile passes through them untouched.
    """
    from torch.onnx import ONNXProgram

    owner = threading.get_ident()
    original_optimize = ONNXProgram.optimize

    def optimize(program: ONNXProgram) -> None:
        if threading.get_ident() == owner:
            staged.first(program.model)
        original_optimize(program)
        if threading.get_ident() == owner:
            staged.again(program.model)

    def after(step: Callable[..., Any]) -> Callable[..., Any]:
        # apply_onnx_ir_fixes(onnx_program) and fuse_for_onnxruntime(model, ...) rewrite their first argument in
        # place; quantize_converted_model(program, ...) returns the quantized model
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != owner:
                return step(*args, **kwargs)
            given = _ir_model(args[0]) if args else None
            if given is not None:
                staged.first(given)  # no optimizer ran: the graph is still as torch wrote it
            result = step(*args, **kwargs)
            model = _ir_model(result) or given
            if model is not None:
                staged.again(model)
            return result

        return wrapped

    hooked = {name: getattr(_EXPORTER_ONNX, name) for name in HOOKED_STEPS if hasattr(_EXPORTER_ONNX, name)}
    with _LOCK:
        ONNXProgram.optimize = optimize  # type: ignore[method-assign,assignment]
        for name, step in hooked.items():
            setattr(_EXPORTER_ONNX, name, after(step))
        try:
            yield
        finally:
            ONNXProgram.optimize = original_optimize  # type: ignore[method-assign]
            for name, step in hooked.items():
                setattr(_EXPORTER_ONNX, name, step)


def _ir_model(value: Any) -> ir.Model | None:
    """The ``onnx_ir.Model`` a step took or returned (an ``ONNXProgram`` holds it as ``.model``)."""
    if isinstance(value, ir.Model):
        return value
    model = getattr(value, "model", None)
    return model if isinstance(model, ir.Model) else None


def component_root(whole: torch.nn.Module, submodel: torch.nn.Module) -> str | None:
    """Path, in ``whole``, of the module a component exports; ``None`` if it is not part of ``whole``.

    ``export_for_generation`` exports a shallow copy of the model for ``prefill`` and ``decode``
    (``copy.copy``: the same submodules) and the model's own submodules for a multimodal model's
    components; both are found by identity.
    """
    for path, module in whole.named_modules(remove_duplicate=False):
        if module is submodel or (type(module) is type(submodel) and module._modules is submodel._modules):
            return str(path)
    return None


class HierarchyOnnxExporter(_EXPORTER_ONNX.OnnxExporter):  # type: ignore[misc,name-defined]
    """``transformers.exporters.OnnxExporter`` whose components record the module hierarchy.

    ``export`` and ``export_for_generation`` take and return what the parent's do; each component's
    ``onnx_ir.Model`` carries, in its metadata, every node's module (a path of the whole model passed
    in), the whole model's module tree with the component's root, the attribution summary, the
    provenance and the module outputs that ``annotate``, ``error`` and the other tools read.
    ``strict=True`` makes an unattributed node an error (the export then fails).

    After a call, ``summaries`` maps each component of the result to its attribution summary.
    """

    def __init__(self, *, strict: bool = False) -> None:
        super().__init__()
        self.strict = strict
        self.summaries: dict[str, AttributionSummary] = {}
        self._whole: torch.nn.Module | None = None
        self._tree: ModuleTree | None = None

    @contextlib.contextmanager
    def _exporting(self, model: torch.nn.Module) -> Iterator[None]:
        self._whole, self._tree = model, tree_of_model(model).tree
        try:
            yield
        finally:
            self._whole = self._tree = None

    def export(self, model: Any, sample_inputs: MutableMapping[str, Any], config: Any) -> Any:
        with self._exporting(model):
            exported = super().export(model, sample_inputs, config)
        self.summaries = _summaries(exported)
        return exported

    def export_for_generation(
        self, model: Any, sample_inputs: MutableMapping[str, Any], config: Any, **kwargs: Any
    ) -> Any:
        with self._exporting(model):
            exported = super().export_for_generation(model, sample_inputs, config, **kwargs)
        self.summaries = _summaries(exported)
        return exported

    def export_program(self, model: Any, sample_inputs: MutableMapping[str, Any], config: Any) -> Any:
        whole = self._whole if self._whole is not None else model
        tree = self._tree if self._tree is not None else tree_of_model(whole).tree
        root = component_root(whole, model)
        if root is None:
            raise HierarchyExportError(
                f"{type(model).__name__} is not a module of the {type(whole).__name__} being exported, so its "
                "nodes' modules cannot be given as paths of the whole model. Export it on its own with "
                "HierarchyOnnxExporter().export(submodel, ...)."
            )
        export, _rules = model_export_info(whole)
        staged = StagedAnnotation(tree, dataclasses.replace(export, root=root), strict=self.strict)
        with _hooked_steps(staged):
            program, metadata = super().export_program(model, sample_inputs, config)
        if not staged.started:  # no hooked step ran (a transformers without them): attribute the result
            staged.first(program)
        if staged.summary is not None:
            logger.info("%s at %r: %s", type(model).__name__, root, staged.summary.describe())
        return program, metadata


def _summaries(exported: Any) -> dict[str, AttributionSummary]:
    found = {}
    for name, model in component_programs(exported).items():
        summary = model.meta.get(SUMMARY_META_KEY)
        if isinstance(summary, AttributionSummary):
            found[name] = summary
    return found
