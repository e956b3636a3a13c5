"""An export session: makes every config Optimum builds hierarchy-aware, and finishes the files afterwards.

The session's state (:class:`ExportSession`) lives one floor down, in
:mod:`~optimum_hierarchy.exporters.session_state`, which the code patched into Optimum imports.
"""

from __future__ import annotations

__all__ = ["hierarchy_export_session"]

import contextlib
import functools
import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optimum_hierarchy.exporters.dynamo import require_onnxscript
from optimum_hierarchy.exporters.session_state import ExportSession, active_session


@contextlib.contextmanager
def hierarchy_export_session(
    *, strict: bool = False, model: Any = None, dynamo: bool = False
) -> Iterator[ExportSession]:
    """Within this context, every ONNX config Optimum builds is hierarchy-aware.

    Optimum asks ``TasksManager.get_exporter_config_constructor`` for the config of the model it is
    about to export; the session wraps that call (and undoes the wrap on exit) so that the config
    class is replaced by its hierarchy-aware subclass and the full model is remembered, which lets
    submodel exports (seq2seq encoders) keep full-model paths (see
    :func:`~optimum_hierarchy.exporters.onnx_config.hierarchy_config_constructors`). With
    ``dynamo=True``, Optimum's ``export_pytorch`` is replaced for the session by
    :func:`~optimum_hierarchy.exporters.optimum_dynamo.export_pytorch_dynamo` (torch's dynamo
    exporter). On an exception, the model files the session wrote are removed.
    """
    # optimum-onnx (the `onnx` extra): imported when a session starts, not with this module.
    from optimum_hierarchy.exporters.onnx_config import hierarchy_config_constructors

    session = ExportSession(strict=strict)
    if model is not None:
        session.set_root_model(model)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(active_session(session))
            stack.enter_context(hierarchy_config_constructors(session))
            if dynamo:
                stack.enter_context(_dynamo_export_pytorch())
            stack.enter_context(_merge_decoders_with_hierarchy(session))
            yield session
    except BaseException:
        session.discard_written()
        raise


@contextlib.contextmanager
def _dynamo_export_pytorch() -> Iterator[None]:
    """Optimum's ``export_pytorch`` replaced by the dynamo export for the block (``export`` calls it by name)."""
    from optimum.exporters.onnx import convert

    from optimum_hierarchy.exporters.optimum_dynamo import export_pytorch_dynamo  # optimum-onnx

    require_onnxscript()
    original = convert.export_pytorch
    convert.export_pytorch = export_pytorch_dynamo
    try:
        yield
    finally:
        convert.export_pytorch = original


@contextlib.contextmanager
def _merge_decoders_with_hierarchy(session: ExportSession) -> Iterator[None]:
    """Optimum's ``merge_decoders`` with the hierarchy carried into the merged file.

    Optimum merges ``decoder_model.onnx`` and ``decoder_with_past_model.onnx`` into the two ``If``
    branches of ``decoder_model_merged.onnx`` after ``--optimize``. Each decoder is first
    re-attributed from its own provenance (its fused nodes placed from what they replaced), so the
    merged branches copy nodes that carry their modules; the merged file then gets the provenance
    of exactly those nodes, and its annotation keeps them where they are. Without this, the
    merged file only had the provenance of one unoptimized decoder, which describes neither branch.
    """
    try:
        module: Any = importlib.import_module("optimum.onnx")
        original = module.merge_decoders
    except (ImportError, AttributeError):
        yield
        return

    @functools.wraps(original)
    def merge_decoders(decoder: Any, decoder_with_past: Any, *args: Any, **kwargs: Any) -> Any:
        for part in (decoder, decoder_with_past):
            if isinstance(part, (str, os.PathLike)) and Path(part).is_file():
                session.reannotate(Path(part))
        result = original(decoder, decoder_with_past, *args, **kwargs)
        save_path = kwargs.get("save_path", args[0] if args else None)
        if isinstance(save_path, (str, os.PathLike)) and Path(save_path).is_file():
            session.reannotate(Path(save_path), from_nodes=True)
        return result

    module.merge_decoders = merge_decoders
    try:
        yield
    finally:
        module.merge_decoders = original
