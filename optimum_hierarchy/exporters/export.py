"""Python API of the export: Optimum's export functions, with the module hierarchy written into every file."""

from __future__ import annotations

__all__ = [
    "check_model_source",
    "check_output_dir",
    "export_model_with_hierarchy",
    "export_with_hierarchy",
    "run_with_hierarchy",
]

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optimum_hierarchy.annotation.results import HierarchyExportResult
from optimum_hierarchy.atomic import directory_lock
from optimum_hierarchy.errors import HierarchyExportError, require_optimum_onnx
from optimum_hierarchy.exporters.session import hierarchy_export_session
from optimum_hierarchy.exporters.session_state import onnx_files_state

if TYPE_CHECKING:
    import torch


def check_model_source(model_name_or_path: str | os.PathLike[str]) -> None:
    """Fail early, with the path in the message, for a local model that is not a model directory.

    A name that does not exist locally and does not look like a path (``gpt2``, ``org/name``) is
    left to Optimum and the hub.
    """
    text = os.fspath(model_name_or_path)
    path = Path(text).expanduser()
    looks_local = path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1
    if path.exists():
        if not path.is_dir():
            raise HierarchyExportError(
                f"--model {text}: is a file; pass the directory of a saved model (save_pretrained) instead."
            )
        if not (path / "config.json").is_file():
            raise HierarchyExportError(
                f"--model {text}: the directory has no config.json, so it is not a saved transformers model. "
                "Save the model there with `model.save_pretrained(...)`."
            )
    elif looks_local:
        raise HierarchyExportError(f"--model {text}: no such directory.")


def check_output_dir(output: str | os.PathLike[str]) -> Path:
    """Fail early for an output directory that cannot be created or written."""
    path = Path(output).expanduser()
    if path.exists() and not path.is_dir():
        raise HierarchyExportError(f"output {path}: exists and is not a directory; pass a directory path.")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise HierarchyExportError(
            f"output {path}: cannot write into {existing} (permission denied); choose a writable directory."
        )
    return path


def _wrap_custom_configs(kwargs: dict[str, Any]) -> None:
    custom = kwargs.get("custom_onnx_configs")
    if custom:
        from optimum_hierarchy.exporters.onnx_config import as_hierarchy_config

        kwargs["custom_onnx_configs"] = {name: as_hierarchy_config(cfg) for name, cfg in custom.items()}


def export_with_hierarchy(
    model_name_or_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    strict: bool = False,
    dynamo: bool = False,
    **main_export_kwargs: Any,
) -> HierarchyExportResult:
    """``optimum.exporters.onnx.main_export`` with the module hierarchy written into every ONNX file.

    Takes every argument of ``main_export`` (``task``, ``opset``, ``monolith``, ``optimize``,
    ``custom_onnx_configs``, ...). With ``strict=True`` an unattributed node is an error.
    ``dynamo=True`` exports with torch's dynamo exporter (optimum-onnx's ``dynamo`` switch, see
    :mod:`optimum_hierarchy.exporters.optimum_dynamo`); the default is Optimum's own, TorchScript.
    On failure, no annotated or half-annotated model file is left behind.

    Example::

        result = export_with_hierarchy("path/to/vit", "out/", task="image-classification")
        print(result.attributed, "/", result.nodes)
    """
    require_optimum_onnx("export_with_hierarchy (Optimum's main_export)")
    from optimum.exporters.onnx import main_export

    check_model_source(model_name_or_path)
    _wrap_custom_configs(main_export_kwargs)
    return run_with_hierarchy(
        lambda out: main_export(os.fspath(model_name_or_path), out, **main_export_kwargs),
        output,
        strict=strict,
        dynamo=dynamo,
    )


def export_model_with_hierarchy(
    model: torch.nn.Module,
    output: str | os.PathLike[str],
    *,
    strict: bool = False,
    dynamo: bool = False,
    **onnx_export_from_model_kwargs: Any,
) -> HierarchyExportResult:
    """``optimum.exporters.onnx.onnx_export_from_model`` for an already loaded model, with hierarchy.

    Takes every argument of ``onnx_export_from_model`` (``task``, ``opset``, ``optimize``, ...);
    ``dynamo`` as for :func:`export_with_hierarchy`.
    """
    require_optimum_onnx("export_model_with_hierarchy (Optimum's onnx_export_from_model)")
    from optimum.exporters.onnx import onnx_export_from_model

    _wrap_custom_configs(onnx_export_from_model_kwargs)
    return run_with_hierarchy(
        lambda out: onnx_export_from_model(model, out, **onnx_export_from_model_kwargs),
        output,
        strict=strict,
        model=model,
        dynamo=dynamo,
    )


def run_with_hierarchy(
    export: Callable[[Path], object],
    output: str | os.PathLike[str],
    *,
    strict: bool = False,
    model: torch.nn.Module | None = None,
    dynamo: bool = False,
) -> HierarchyExportResult:
    """Run an Optimum export (``export(output_dir)``) in a hierarchy session and finish its files.

    This is what the Python API and ``optimum-cli export onnx --hierarchy [--dynamo]`` share.
    """
    require_optimum_onnx("An Optimum export session (run_with_hierarchy)")
    output = check_output_dir(output)
    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    try:
        with directory_lock(output):  # a second export (or an annotation) into it meanwhile fails at once
            before = onnx_files_state(output)
            with hierarchy_export_session(strict=strict, model=model, dynamo=dynamo) as session:
                export(output)
                return session.finalize(output, unchanged=before)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                output.rmdir()  # only if the failed export left it empty
        raise
