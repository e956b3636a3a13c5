"""Export of any ``nn.Module`` with ``torch.onnx.export`` and the hierarchy, as one exporter object."""

from __future__ import annotations

__all__ = ["HierarchyPreservingExporter", "replaced_forward"]

import contextlib
import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optimum_hierarchy.annotation.export_info import model_export_info
from optimum_hierarchy.annotation.file import annotate_file, load_model_proto
from optimum_hierarchy.atomic import write_through_temporary
from optimum_hierarchy.errors import HierarchyExportError
from optimum_hierarchy.exporters.dynamo import (
    annotate_program,
    dynamo_is_default,
    export_program,
    save_program,
)
from optimum_hierarchy.rules import ArchitectureRules
from optimum_hierarchy.schema import AttributionSummary, ExportInfo, ModuleTree
from optimum_hierarchy.trees.sources import tree_of_model

if TYPE_CHECKING:
    import onnx
    import torch


class HierarchyPreservingExporter:
    """Exports an ``nn.Module`` (a Transformers model or any other) with the module hierarchy.

    Example::

        exporter = HierarchyPreservingExporter()
        onnx_model, hierarchy = exporter.export_with_hierarchy(model, dummy_input, "model.onnx")
        hierarchy["encoder.layer.0"].class_name
    """

    def __init__(self, *, strict: bool = False, opset_version: int | None = None) -> None:
        """``opset_version``: ``None`` is each exporter's own default for the dynamo exporter (opset 18 or
        newer, as torch chooses) and opset 18 for the TorchScript exporter."""
        self.strict = strict
        self.opset_version = opset_version
        self.last_summary: AttributionSummary | None = None

    def export_with_hierarchy(
        self,
        model: torch.nn.Module,
        dummy_input: Any,
        path: str | os.PathLike[str],
        **export_kwargs: Any,
    ) -> tuple[onnx.ModelProto, ModuleTree]:
        """Export ``model`` to ``path`` and annotate it; returns the annotated model and the module tree.

        ``dummy_input`` is what ``torch.onnx.export`` takes as ``args`` (a tensor or a tuple); other
        keyword arguments go to ``torch.onnx.export`` (``kwargs``, ``dynamic_shapes``, ``input_names``,
        ...). ``dynamo`` picks the exporter as ``torch.onnx.export`` does, with the same default
        (the dynamo exporter since torch 2.9): its nodes are attributed from the module paths it
        records (source ``metadata``), and with ``optimize`` (default ``True``) onnxscript's optimizer
        runs after that, its fused nodes placed at the lowest common ancestor of what they replaced
        (see :mod:`optimum_hierarchy.exporters.dynamo`). With ``dynamo=False`` the TorchScript
        exporter runs and its node-name scopes are the evidence (source ``scope``). ``path`` is
        written atomically: on any failure no file is left there.

        The export records the architecture rules of the model's type (``rules`` of the export
        metadata), and with the TorchScript exporter their repeated-block check runs, as in Optimum's
        pipeline: a warning, or with ``strict`` an :class:`~optimum_hierarchy.errors.AttributionError`
        (nothing written).
        """
        path = Path(path)
        if path.is_dir():
            raise HierarchyExportError(f"{path}: is a directory; pass the path of the .onnx file to write.")
        if not path.parent.is_dir():
            raise HierarchyExportError(f"{path}: the directory {path.parent} does not exist.")
        args = dummy_input if isinstance(dummy_input, tuple) else (dummy_input,)
        dynamo = export_kwargs.pop("dynamo", None)
        if dynamo is None:
            dynamo = dynamo_is_default()
        opset = self.opset_version if self.opset_version is not None else (None if dynamo else 18)
        if opset is not None:
            export_kwargs.setdefault("opset_version", opset)
        tree = tree_of_model(model).tree
        export, rules = model_export_info(model)
        if dynamo:
            self.last_summary, written = self._export_dynamo(
                model, args, path, tree=tree, export=export, export_kwargs=export_kwargs
            )
        else:
            if "optimize" in export_kwargs:
                raise HierarchyExportError("optimize: a dynamo exporter argument; the TorchScript exporter has none.")
            self.last_summary = self._export_torchscript(
                model, args, path, tree=tree, export=export, rules=rules, export_kwargs=export_kwargs
            )
            written = None
        return (written if written is not None else load_model_proto(path)), tree

    def _export_dynamo(
        self,
        model: torch.nn.Module,
        args: tuple[Any, ...],
        path: Path,
        *,
        tree: ModuleTree,
        export: ExportInfo,
        export_kwargs: dict[str, Any],
    ) -> tuple[AttributionSummary, onnx.ModelProto | None]:
        """The summary, and the proto written (``None`` when its weights went to external data)."""
        optimize = bool(export_kwargs.pop("optimize", True))
        program = export_program(model, args, **export_kwargs)
        summary = annotate_program(program, tree, export, strict=self.strict, optimize=optimize)
        return summary, save_program(program, path)

    def _export_torchscript(
        self,
        model: torch.nn.Module,
        args: tuple[Any, ...],
        path: Path,
        *,
        tree: ModuleTree,
        export: ExportInfo,
        rules: ArchitectureRules | None,
        export_kwargs: dict[str, Any],
    ) -> AttributionSummary:
        import torch

        summaries: list[AttributionSummary] = []

        def write(tmp: Path) -> None:
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad(), _without_default_padding(model, args, export_kwargs):
                    torch.onnx.export(model, args, str(tmp), dynamo=False, **export_kwargs)
            finally:
                model.train(was_training)
            summaries.append(annotate_file(tmp, tree, export, strict=self.strict, rules=rules))

        write_through_temporary(path, write)
        summary = summaries[0]
        return summary


@contextlib.contextmanager
def _without_default_padding(model: Any, args: tuple[Any, ...], export_kwargs: dict[str, Any]) -> Iterator[None]:
    """Let ``model.forward`` receive the arguments given, not the TorchScript exporter's padding.

    The TorchScript exporter fills every parameter of ``forward`` after the given ones with its
    default, positionally. Transformers 5 wraps ``forward`` in decorators that pass ``use_cache``
    and others by keyword, so the padded call fails ("got multiple values for argument"). The
    forward set here has the same signature (so the exporter maps a trailing dict of keyword
    inputs as before) and calls the original with only the arguments that differ from their
    defaults, by keyword: the same call as without the padding. Without ``input_names`` in
    ``export_kwargs``, the graph inputs are named after the parameters they bind to, as the
    exporter names them from the original ``forward``.
    """
    import torch

    original = model.forward
    signature = inspect.signature(original)
    parameters = signature.parameters
    positional = [p for p in parameters.values() if p.kind is inspect.Parameter.VAR_POSITIONAL]
    if positional:  # forward(*args): nothing is padded by keyword; leave it alone
        yield
        return

    def forward(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        named: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            parameter = parameters[name]
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                named.update(value)
            elif parameter.default is inspect.Parameter.empty or value is not parameter.default:
                named[name] = value
        return original(**named)

    forward.__signature__ = signature  # type: ignore[attr-defined]
    if "input_names" not in export_kwargs:
        given = dict(args[-1]) if args and isinstance(args[-1], dict) else {}
        flat = args[:-1] if given else args
        names = [p.name for p in parameters.values()][: len(flat)]
        names += [name for name in parameters if name in given and name not in names]
        values = [*flat, *(given[n] for n in names[len(flat) :])]
        if len(names) == len(values) and all(isinstance(v, torch.Tensor) for v in values):
            export_kwargs["input_names"] = names
    with replaced_forward(model, forward):
        yield


@contextlib.contextmanager
def replaced_forward(model: Any, forward: Any) -> Iterator[None]:
    """``model.forward`` is ``forward`` for the block (an instance attribute, as Optimum's ModelPatcher sets it)."""
    had = "forward" in model.__dict__
    saved = model.__dict__.get("forward")
    model.forward = forward
    try:
        yield
    finally:
        if had:
            model.forward = saved
        else:
            del model.forward
