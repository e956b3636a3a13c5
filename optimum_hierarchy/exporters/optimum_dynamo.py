"""Optimum's ``export_pytorch`` with torch's dynamo exporter, and the hierarchy.

optimum-onnx 0.1.0 always runs the TorchScript exporter. Its main branch (PR 113, unreleased) adds
``dynamo=True`` / ``--dynamo``: the same steps as the TorchScript path (the ``OnnxConfig``'s dummy
inputs, ``values_override``, its ``ModelPatcher``, input and output names), with the config's
dynamic axes given to ``torch.onnx.export`` as ``dynamic_shapes``. :func:`export_pytorch_dynamo`
does that, and annotates the program before and after onnxscript's optimizer
(:mod:`optimum_hierarchy.exporters.dynamo`). Inside an export session with ``dynamo=True`` it
replaces ``optimum.exporters.onnx.convert.export_pytorch``, so the rest of Optimum's pipeline
(``--optimize``, post-processing, validation, ``config.json``) runs as usual. Like that pipeline,
it needs the ``onnx`` extra (optimum-onnx).
"""

from __future__ import annotations

__all__ = ["export_pytorch_dynamo"]

import inspect
import logging
from pathlib import Path
from typing import Any

from optimum_hierarchy.annotation.results import AnnotatedFile
from optimum_hierarchy.errors import HierarchyExportError
from optimum_hierarchy.exporters.dynamo import LOGITS_TO_KEEP, annotate_program, export_program_with_axes, save_program
from optimum_hierarchy.exporters.onnx_config import export_target
from optimum_hierarchy.exporters.session_state import current_session
from optimum_hierarchy.trees.sources import tree_of_model

logger = logging.getLogger(__name__)


def export_pytorch_dynamo(
    model: Any,
    config: Any,
    opset: int,
    output: Path,
    *,
    device: str = "cpu",
    input_shapes: dict[str, int] | None = None,
    no_dynamic_axes: bool = False,
    do_constant_folding: bool = True,
    model_kwargs: dict[str, Any] | None = None,
    **_: Any,
) -> tuple[list[str], list[str]]:
    """Export ``model`` to ``output`` with the dynamo exporter, as Optimum's ``export_pytorch`` (same arguments).

    ``do_constant_folding`` has no dynamo counterpart: onnxscript's optimizer folds constants.
    Returns the ordered input names and the output names, as Optimum's function does.
    """
    import torch
    from optimum.exporters.onnx.convert import check_dummy_inputs_are_allowed

    del do_constant_folding
    output = Path(output)
    model_kwargs = dict(model_kwargs or {})
    parameters = inspect.signature(model.forward).parameters
    for name in LOGITS_TO_KEEP:  # as Optimum does: not an input of the exported model
        if name in parameters:
            model_kwargs[name] = 0
    with torch.no_grad():
        model.config.return_dict = True
        model.eval()
        for key, value in (config.values_override or {}).items():
            setattr(model.config, key, value)
        dummy_inputs = config.generate_dummy_inputs(framework="pt", **(input_shapes or {}))
        target_device = torch.device(device)
        if target_device.type == "cuda" and torch.cuda.is_available():
            model.to(target_device)
            dummy_inputs = {
                k: v.to(target_device) if isinstance(v, torch.Tensor) else v for k, v in dummy_inputs.items()
            }
        dummy_inputs = config.rename_ambiguous_inputs(dummy_inputs)
        tree = tree_of_model(model).tree
        with config.patch_model_for_export(model, model_kwargs=model_kwargs):
            check_dummy_inputs_are_allowed(model, dummy_inputs)
            inputs = config.ordered_inputs(model)
            input_names = list(inputs)
            output_names = list(config.outputs)
            kwargs = {name: dummy_inputs[name] for name in input_names if name in dummy_inputs}
            kwargs.update((k, v) for k, v in dummy_inputs.items() if k not in kwargs)
            nested = [k for k, v in kwargs.items() if not isinstance(v, torch.Tensor)]
            if nested:
                raise HierarchyExportError(
                    f"{output.name}: the dynamo export takes tensor inputs only, and {', '.join(nested)} "
                    "is not one (past key values: a task ending in -with-past). Export the task without "
                    "-with-past with --dynamo, or this one without --dynamo (TorchScript)."
                )
            axes = {} if no_dynamic_axes else {name: dict(inputs.get(name, {})) for name in kwargs}
            program, static = export_program_with_axes(
                model, kwargs, axes, input_names=input_names, output_names=output_names, opset_version=opset
            )
            if static:
                logger.warning(
                    "%s: the model does not allow these axes to vary, so they are static in the export: %s",
                    output,
                    ", ".join(static),
                )
            target = export_target(model, config, tree, output)
            summary = annotate_program(program, target.tree, target.export, strict=target.strict)
    save_program(program, output)
    session = current_session()
    if session is not None:
        session.note_written(output)
        session.note_annotated(AnnotatedFile(path=output, root=target.root, summary=summary, rules=target.export.rules))
    logger.info("%s: exported with the dynamo exporter; %s", output, summary.describe())
    return input_names, output_names
