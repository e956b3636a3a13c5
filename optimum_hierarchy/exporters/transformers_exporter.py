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

__all__ = ["HierarchyOnnxExporter", "component_root", "exporter_components", "require_transformers_exporters"]

import contextlib
import dataclasses
import importlib
import importlib.util
import logging
import threading
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

import onnx_ir as ir

from optimum_hierarchy.capture.module_tree import capture_module_tree
from optimum_hierarchy.errors import HierarchyExportError, MissingExtraError
from optimum_hierarchy.exporters.export_info import model_export_info
from optimum_hierarchy.passes.attribute_nodes import SUMMARY_META_KEY, AttributeNodesPass
from optimum_hierarchy.provenance import decode_provenance
from optimum_hierarchy.rules import fused_node_rules
from optimum_hierarchy.schema import AttributionSummary, ExportInfo, ModuleTree, read_props

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


class _StagedAnnotation:
    """The attribution of one component's graph, step by step through the parent's ``export_program``."""

    def __init__(self, tree: ModuleTree, export: ExportInfo, strict: bool) -> None:
        self.tree = tree
        self.export = export
        self.strict = strict
        self.fused_rules = fused_node_rules(export.model_type)
        self.started = False
        self.summary: AttributionSummary | None = None

    def first(self, model: ir.Model) -> None:
        """Attribute the graph as torch wrote it, from its own module records (once)."""
        if self.started:
            return
        self.started = True
        self._run(model, provenance=False)

    def again(self, model: ir.Model) -> None:
        """Re-attribute after a step rewrote the graph, from the provenance the last attribution stored."""
        if not self.started:  # a step ran before any hook saw the fresh graph: this is the first look
            self.first(model)
            return
        self._run(model, provenance=True)

    def _run(self, model: ir.Model, *, provenance: bool) -> None:
        stored = decode_provenance(read_props(model)) if provenance else None
        AttributeNodesPass(self.tree, self.export, strict=self.strict, provenance=stored, fused_rules=self.fused_rules)(
            model
        )
        self.summary = model.meta[SUMMARY_META_KEY]

    @contextlib.contextmanager
    def hooks(self) -> Iterator[None]:
        """Wrap the parent's steps: attribute before onnxscript's optimizer, re-attribute after each step."""
        from torch.onnx import ONNXProgram

        module = require_transformers_exporters()
        original_optimize = ONNXProgram.optimize

        owner = threading.get_ident()  # the hooks are process-wide: other threads' exports pass through untouched

        def optimize(program: ONNXProgram) -> None:
            if threading.get_ident() != owner:
                original_optimize(program)
                return
            self.first(program.model)
            original_optimize(program)
            self.again(program.model)

        def after(step: Callable[..., Any], model_of: Callable[[Any, tuple[Any, ...]], Any]) -> Callable[..., Any]:
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                if threading.get_ident() != owner:
                    return step(*args, **kwargs)
                before = model_of(None, args)
                if before is not None:
                    self.first(before)  # no optimizer ran: the graph is still as torch wrote it
                result = step(*args, **kwargs)
                model = model_of(result, args)
                if model is not None:
                    self.again(model)
                return result

            return wrapped

        hooked = {name: getattr(module, name) for name in HOOKED_STEPS if hasattr(module, name)}
        replacements = {
            # apply_onnx_ir_fixes(onnx_program): in place
            "apply_onnx_ir_fixes": lambda step: after(step, lambda _r, a: _ir_model(a[0]) if a else None),
            # fuse_for_onnxruntime(model, ort_fusions): in place
            "fuse_for_onnxruntime": lambda step: after(step, lambda _r, a: _ir_model(a[0]) if a else None),
            # quantize_converted_model(program, sample_inputs, config) -> the quantized model
            "quantize_converted_model": lambda step: after(
                step, lambda r, a: _ir_model(r) if r is not None else (_ir_model(a[0]) if a else None)
            ),
        }
        with _LOCK:
            ONNXProgram.optimize = optimize  # type: ignore[method-assign,assignment]
            for name, step in hooked.items():
                setattr(module, name, replacements[name](step))
            try:
                yield
            finally:
                ONNXProgram.optimize = original_optimize  # type: ignore[method-assign]
                for name, step in hooked.items():
                    setattr(module, name, step)


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


_EXPORTER_ONNX = require_transformers_exporters()


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
        self._whole, self._tree = model, capture_module_tree(model)
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
        tree = self._tree if self._tree is not None else capture_module_tree(whole)
        root = component_root(whole, model)
        if root is None:
            raise HierarchyExportError(
                f"{type(model).__name__} is not a module of the {type(whole).__name__} being exported, so its "
                "nodes' modules cannot be given as paths of the whole model. Export it on its own with "
                "HierarchyOnnxExporter().export(submodel, ...)."
            )
        export, _rules = model_export_info(whole)
        staged = _StagedAnnotation(tree, dataclasses.replace(export, root=root), self.strict)
        with staged.hooks():
            program, metadata = super().export_program(model, sample_inputs, config)
        if not staged.started:  # no hooked step ran (a transformers without them): attribute the result
            staged.first(program)
        if staged.summary is not None:
            logger.info("%s at %r: %s", type(model).__name__, root, staged.summary.describe())
        return program, metadata


def _summaries(exported: Any) -> dict[str, AttributionSummary]:
    found = {}
    for name, model in exporter_components(exported).items():
        summary = model.meta.get(SUMMARY_META_KEY)
        if isinstance(summary, AttributionSummary):
            found[name] = summary
    return found


def exporter_components(exported: Any) -> dict[str, ir.Model]:
    """``{component name: onnx_ir.Model}`` of an ``ExportedModel`` of the ONNX format."""
    return {name: component.program for name, component in exported.components.items()}
