"""int8 by module through Optimum's ORTQuantizer (the ``onnx`` extra).

The module globs are resolved to the node names of the exact file by
:mod:`optimum_hierarchy.tools.selection` (which nodes an exclusion or inclusion covers, fused nodes
included, is documented there) and given to ONNX Runtime as ``nodes_to_exclude`` /
``nodes_to_quantize``; the same lists go to the quantizer of every ``If`` / ``Loop`` body.

``optimum-cli onnxruntime quantize`` builds one ``QuantizationConfig`` and quantizes every ``*.onnx``
file of a directory with it, while node names differ from file to file: within
:func:`quantizing_by_module`, ``ORTQuantizer.quantize`` gives each file its own node lists.
"""

from __future__ import annotations

__all__ = [
    "ModuleQuantizationResult",
    "ModuleQuantizer",
    "ModuleSelection",
    "directory_selections",
    "nodes_for_modules",
    "quantize_by_module",
    "quantizing_by_module",
    "with_module_selection",
]

import contextlib
import copy
import dataclasses
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import onnx

from optimum_hierarchy.errors import HierarchyError, require_optimum_onnx

require_optimum_onnx("Quantization by module through Optimum's ORTQuantizer (optimum_hierarchy.tools.quantize)")

from optimum.onnxruntime.configuration import QuantizationConfig  # noqa: E402
from optimum.onnxruntime.quantization import ORTQuantizer  # noqa: E402

from optimum_hierarchy.annotation.hierarchy import restore_if_annotated  # noqa: E402
from optimum_hierarchy.annotation.results import AnnotatedFile  # noqa: E402
from optimum_hierarchy.read import read_hierarchy  # noqa: E402
from optimum_hierarchy.tools.selection import (  # noqa: E402
    Globs,
    ModuleSelection,
    closest_modules,
    nodes_for_modules,
)
from optimum_hierarchy.walk import iter_proto_nodes  # noqa: E402
from optimum_hierarchy.wire import read_model_file  # noqa: E402

logger = logging.getLogger(__name__)

# Taken when this module is imported, before quantizing_by_module patches ORTQuantizer.quantize to
# come here: calling it cannot loop back.
_ORT_QUANTIZE = ORTQuantizer.quantize
_ONNX_DOMAINS = ("", "ai.onnx")


@dataclasses.dataclass(frozen=True)
class ModuleQuantizationResult:
    """What :func:`quantize_by_module` wrote."""

    save_dir: Path
    model: Path
    """The quantized file."""
    selection: ModuleSelection | None
    annotated: AnnotatedFile | None
    """Its re-attribution (``None`` when not restored or when the input carried no hierarchy)."""
    types_inferred: bool
    """Whether tensor types were inferred first (graphs with ONNX Runtime contrib operators)."""


def with_module_selection(config: QuantizationConfig, selection: ModuleSelection) -> QuantizationConfig:
    """A copy of ``config`` whose ``nodes_to_exclude`` / ``nodes_to_quantize`` apply ``selection``.

    What the config already lists is kept: ``nodes_to_exclude`` is the union; with
    ``include_modules``, ``nodes_to_quantize`` is the intersection with the config's own list when it
    has one (both restrict), and names dropped by the intersection are excluded too (an empty list
    means "everything" to ONNX Runtime). ``config`` itself is not changed.
    """
    exclude = list(dict.fromkeys([*config.nodes_to_exclude, *selection.nodes_to_exclude]))
    quantize = list(config.nodes_to_quantize)
    if selection.restricts:
        allowed = set(selection.nodes_to_quantize)
        quantize = [n for n in quantize if n in allowed] if quantize else list(selection.nodes_to_quantize)
        kept = set(quantize)
        exclude += [n for n in selection.nodes_to_quantize if n not in kept and n not in exclude]
    result = copy.deepcopy(config)
    result.nodes_to_exclude = exclude
    result.nodes_to_quantize = quantize
    return result


# --- quantization ------------------------------------------------------------------------------------


def _needs_types(path: Path) -> bool:
    """ONNX Runtime contrib operators (an optimized graph): ONNX shape inference cannot type what follows them."""
    with read_model_file(path) as source:
        proto = source.proto
    return any(node.domain not in _ONNX_DOMAINS for node, _ in iter_proto_nodes(proto.graph))


def _typed_copy(source: Path, directory: Path) -> Path | None:
    """``source`` with every tensor typed by ONNX Runtime's symbolic shape inference, or ``None`` if it fails."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(source))
    try:
        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception as e:  # the tool raises bare Exception; the quantizer then runs on the file as it is
        logger.warning("%s: symbolic shape inference failed (%s); quantizing the file as it is", source, e)
        return None
    target = directory / source.name
    onnx.save(inferred, str(target), save_as_external_data=True, location=f"{source.name}.data")
    return target


def quantize_by_module(
    quantizer: ORTQuantizer,
    quantization_config: QuantizationConfig,
    save_dir: str | os.PathLike[str],
    *,
    file_suffix: str | None = "quantized",
    calibration_tensors_range: Mapping[str, tuple[float, float]] | None = None,
    use_external_data_format: bool = False,
    preprocessor: Any = None,
    exclude_modules: Globs = (),
    include_modules: Globs = (),
    selection: ModuleSelection | None = None,
    infer_types: bool | None = None,
    restore: bool = True,
) -> ModuleQuantizationResult:
    """``quantizer.quantize(...)`` with modules excluded or included, then the output re-attributed.

    ``selection`` (from :func:`nodes_for_modules` on the quantizer's file) replaces the globs.
    ``infer_types``: type every tensor first with ONNX Runtime's symbolic shape inference, which the
    quantizer needs after contrib operators (``Attention``, ``SkipLayerNormalization``); by default
    only when the graph has such operators. ``restore``: re-attribute the output file
    (``annotate_hierarchy``) so that it keeps its hierarchy. A ``save_dir`` that cannot be created or
    written raises :class:`HierarchyError` before anything is quantized.
    """
    source = Path(quantizer.onnx_model_path)
    if selection is not None and (exclude_modules or include_modules):
        raise HierarchyError("pass either module globs or a selection, not both.")
    if selection is None and (exclude_modules or include_modules):
        selection = nodes_for_modules(source, exclude_modules=exclude_modules, include_modules=include_modules)
    if selection is not None and selection.model is not None and selection.model.resolve() != source.resolve():
        raise HierarchyError(
            f"the selection was made for {selection.model}, not {source}: node names belong to one file. "
            f"Call nodes_for_modules({str(source)!r}, ...)."
        )
    config = with_module_selection(quantization_config, selection) if selection is not None else quantization_config
    if infer_types is None:
        infer_types = _needs_types(source)
    save_dir = _writable_directory(Path(save_dir))
    typed = False
    with contextlib.ExitStack() as stack:
        target = quantizer
        if infer_types:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".typed-", dir=save_dir)))
            typed_path = _typed_copy(source, scratch)
            if typed_path is not None:
                target = copy.copy(quantizer)  # same config and calibrator, the typed file
                target.onnx_model_path = typed_path
                typed = True
        _ORT_QUANTIZE(
            target,
            config,
            save_dir,
            file_suffix=file_suffix,
            calibration_tensors_range=calibration_tensors_range,
            use_external_data_format=use_external_data_format,
            preprocessor=preprocessor,
        )
    if typed:
        from optimum.utils.save_utils import maybe_save_preprocessors

        maybe_save_preprocessors(source.parent, save_dir)  # Optimum looked beside the typed copy
    output = save_dir / f"{source.stem}{f'_{file_suffix}' if file_suffix else ''}.onnx"
    annotated = restore_if_annotated(output) if restore else None
    if annotated is not None:
        logger.info("%s: %s", output, annotated.summary.describe())
    return ModuleQuantizationResult(
        save_dir=save_dir, model=output, selection=selection, annotated=annotated, types_inferred=typed
    )


def _writable_directory(save_dir: Path) -> Path:
    """``save_dir``, created if needed, once a file could be created in it; else a :class:`HierarchyError`."""
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=save_dir):
            pass
    except OSError as e:
        raise HierarchyError(
            f"output directory {save_dir}: cannot be written ({e.strerror or e}); check its permissions or give "
            "another directory."
        ) from e
    return save_dir


class ModuleQuantizer(ORTQuantizer):  # type: ignore[misc]  # optimum is untyped
    """``ORTQuantizer`` whose ``quantize`` also takes ``exclude_modules`` / ``include_modules``.

    The output keeps its hierarchy (it is re-attributed), and graphs optimized by ONNX Runtime are
    typed first so that the quantizer accepts them (see :func:`quantize_by_module`).
    """

    def quantize(  # noqa: PLR0917  # ORTQuantizer.quantize's positional parameters, kept
        self,
        quantization_config: QuantizationConfig,
        save_dir: str | os.PathLike[str],
        file_suffix: str | None = "quantized",
        calibration_tensors_range: Mapping[str, tuple[float, float]] | None = None,
        use_external_data_format: bool = False,
        preprocessor: Any = None,
        *,
        exclude_modules: Globs = (),
        include_modules: Globs = (),
        infer_types: bool | None = None,
    ) -> Path:
        return quantize_by_module(
            self,
            quantization_config,
            save_dir,
            file_suffix=file_suffix,
            calibration_tensors_range=calibration_tensors_range,
            use_external_data_format=use_external_data_format,
            preprocessor=preprocessor,
            exclude_modules=exclude_modules,
            include_modules=include_modules,
            infer_types=infer_types,
        ).save_dir


# --- a directory, as optimum-cli onnxruntime quantize quantizes it -------------------------------------------


def _globs(globs: Globs) -> tuple[str, ...]:
    return (globs,) if isinstance(globs, str) else tuple(globs)


def directory_selections(
    directory: str | os.PathLike[str], *, exclude_modules: Globs = (), include_modules: Globs = ()
) -> dict[Path, ModuleSelection]:
    """The selection of each ``*.onnx`` file of ``directory`` (the files the CLI quantizes), by resolved path.

    A glob has to match a module in one of the files, not in each (a decoder and its encoder hold
    different modules); one that matches in none raises :class:`~optimum_hierarchy.errors.HierarchyError`
    naming the closest module paths of the files.
    """
    exclude, include = _globs(exclude_modules), _globs(include_modules)
    files = sorted(Path(directory).glob("*.onnx"))
    selections = {
        f.resolve(): nodes_for_modules(f, exclude_modules=exclude, include_modules=include, missing_ok=True)
        for f in files
    }
    for glob in (*exclude, *include):
        if selections and not any(s.matched[glob] for s in selections.values()):
            names = ", ".join(f.name for f in files)
            paths = {p for f in files for p in read_hierarchy(f).tree}
            raise HierarchyError(
                f"module glob {glob!r} matches no module of {names} in {directory} ('*' is one path "
                f"segment, '**' any number).{closest_modules(glob, sorted(paths))} List the modules with "
                f"`optimum-cli hierarchy tree {files[0]}`."
            )
    return selections


@contextlib.contextmanager
def quantizing_by_module(
    directory: str | os.PathLike[str],
    *,
    exclude_modules: Globs = (),
    include_modules: Globs = (),
    restore: bool = True,
) -> Iterator[list[ModuleQuantizationResult]]:
    """Within the block, ``ORTQuantizer.quantize`` quantizes by module; yields the results as they come.

    The files of ``directory`` are resolved first (:func:`directory_selections`), so a glob that
    matches nothing raises before any file is written; a file quantized in the block that is not
    one of them is resolved when it comes. Each call goes to :func:`quantize_by_module` with its
    file's selection (``restore``: re-attribute each output there). ``ORTQuantizer.quantize`` is
    restored on exit.
    """
    exclude, include = _globs(exclude_modules), _globs(include_modules)
    selections = directory_selections(directory, exclude_modules=exclude, include_modules=include)
    results: list[ModuleQuantizationResult] = []

    def quantize(  # noqa: PLR0917  # the signature of ORTQuantizer.quantize
        self: ORTQuantizer,
        quantization_config: QuantizationConfig,
        save_dir: str | os.PathLike[str],
        file_suffix: str | None = "quantized",
        calibration_tensors_range: Mapping[str, tuple[float, float]] | None = None,
        use_external_data_format: bool = False,
        preprocessor: Any = None,
    ) -> Path:
        selection = selections.get(Path(self.onnx_model_path).resolve())
        if selection is None:
            selection = nodes_for_modules(self.onnx_model_path, exclude_modules=exclude, include_modules=include)
        result = quantize_by_module(
            self,
            quantization_config,
            save_dir,
            file_suffix=file_suffix,
            calibration_tensors_range=calibration_tensors_range,
            use_external_data_format=use_external_data_format,
            preprocessor=preprocessor,
            selection=selection,
            restore=restore,
        )
        results.append(result)
        return result.save_dir

    saved = ORTQuantizer.__dict__["quantize"]
    ORTQuantizer.quantize = quantize
    try:
        yield results
    finally:
        ORTQuantizer.quantize = saved
