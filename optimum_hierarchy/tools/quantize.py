"""Quantize by module: module globs turned into ONNX Runtime's ``nodes_to_exclude`` / ``nodes_to_quantize``.

ONNX Runtime's quantizer (and Optimum's ``QuantizationConfig``) selects nodes by ONNX node name only,
and names differ from file to file (an optimized graph has ``Attention_0`` where the export had
``.../query/MatMul``). Here the names are read from the hierarchy stored in the exact file being
quantized:

* ``exclude_modules``: every node attributed inside a matched module's subtree stays float, and so
  does every fused node attributed above it that replaced part of it (its ``sources`` reach into the
  subtree: an ``Attention`` that replaced an excluded ``query`` Linear keeps the whole attention
  float). Float wins.
* ``include_modules``: only nodes attributed inside a matched module's subtree may be quantized;
  fused nodes attributed above it are not, and neither are unattributed nodes.
* Both: the included nodes minus the excluded ones.

Globs are module paths as ``optimum-cli hierarchy tree FILE`` prints them, ``*`` one path segment,
``**`` any number of them. Names ONNX Runtime derives while quantizing are covered (a dynamic
quantization turns ``Gemm`` ``X`` into ``MatMul`` ``X_MatMul``, which is the name it then checks).
The same lists are passed to the quantizer of every ``If`` / ``Loop`` body, so subgraph nodes are
selected by the same names. A name borne by nodes on both sides (a subgraph reusing a name, unnamed
nodes) stays float and is reported in :attr:`ModuleSelection.conflicts`.
"""

from __future__ import annotations

__all__ = [
    "ModuleQuantizationResult",
    "ModuleQuantizer",
    "ModuleSelection",
    "nodes_for_modules",
    "quantize_by_module",
    "with_module_selection",
]

import collections
import contextlib
import copy
import dataclasses
import difflib
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from optimum_hierarchy.errors import HierarchyError, require_optimum_onnx

require_optimum_onnx("Quantization by module through Optimum's ORTQuantizer (optimum_hierarchy.tools.quantize)")

from optimum.onnxruntime.configuration import QuantizationConfig  # noqa: E402
from optimum.onnxruntime.quantization import ORTQuantizer  # noqa: E402

from optimum_hierarchy.annotate import annotate_onnx_model  # noqa: E402
from optimum_hierarchy.exporters.session import AnnotatedFile  # noqa: E402
from optimum_hierarchy.read import NodeAttribution  # noqa: E402
from optimum_hierarchy.restore import restore_if_annotated  # noqa: E402
from optimum_hierarchy.retriever import HierarchyRetriever  # noqa: E402
from optimum_hierarchy.schema import NODE_MODULE_KEY, NODE_REASON_KEY, decode_model_metadata  # noqa: E402
from optimum_hierarchy.walk import iter_proto_nodes  # noqa: E402
from optimum_hierarchy.wire import read_model_file  # noqa: E402

logger = logging.getLogger(__name__)

# Taken when this module is imported, before the CLI (quantize_flag) patches ORTQuantizer.quantize
# to come here: calling it cannot loop back.
_ORT_QUANTIZE = ORTQuantizer.quantize
# Names ONNX Runtime gives the nodes it makes of a Gemm before a dynamic quantization.
_GEMM_DERIVED_SUFFIXES = ("_MatMul", "_Transpose")
_ONNX_DOMAINS = ("", "ai.onnx")

Globs = str | Iterable[str]


@dataclasses.dataclass(frozen=True)
class ModuleSelection:
    """Module globs resolved to node names for one exact ONNX file."""

    model: Path | None
    """The file the names are for (``None`` when a ``ModelProto`` was given)."""
    exclude_modules: tuple[str, ...]
    include_modules: tuple[str, ...]
    matched: Mapping[str, tuple[str, ...]]
    """Each glob -> the modules it matched, in tree order."""
    nodes_to_exclude: tuple[str, ...]
    """Names of every node that must stay float (with ``include_modules``: every node not selected)."""
    nodes_to_quantize: tuple[str, ...]
    """With ``include_modules``: the names that may be quantized; empty otherwise (no restriction)."""
    float_nodes: int
    """Nodes kept float by the selection (graph nodes, not names)."""
    quantizable_nodes: int
    """Nodes left to the quantizer (which still quantizes only its operator types)."""
    conflicts: tuple[str, ...] = ()
    """Names borne both by nodes to keep float and nodes to quantize; they stay float."""

    @property
    def restricts(self) -> bool:
        """Whether only the selected nodes may be quantized (``include_modules`` was given)."""
        return bool(self.include_modules)

    def describe(self) -> str:
        parts = [f"exclude {g} ({_modules(self.matched[g])})" for g in self.exclude_modules]
        parts += [f"include {g} ({_modules(self.matched[g])})" for g in self.include_modules]
        text = f"{'; '.join(parts) or 'no module globs'}: {self.float_nodes} nodes kept float, "
        text += f"{self.quantizable_nodes} left to the quantizer"
        if self.conflicts:
            text += f"; {len(self.conflicts)} names shared across the boundary kept float"
        return text


def _modules(paths: Sequence[str]) -> str:
    return f"{len(paths)} module{'s' if len(paths) != 1 else ''}"


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


# --- selection ---------------------------------------------------------------------------------------


def _as_globs(globs: Globs, what: str) -> tuple[str, ...]:
    items = (globs,) if isinstance(globs, str) else tuple(globs)
    for glob in items:
        if not isinstance(glob, str) or not glob.strip():
            raise HierarchyError(f"{what}: {glob!r} is not a module glob; pass module paths such as 'encoder.layer.*'.")
    return tuple(dict.fromkeys(g.strip() for g in items))


def _load_attributed(model: str | os.PathLike[str] | onnx.ModelProto) -> tuple[onnx.ModelProto, Path | None]:
    """The model with its nodes attributed; stale node metadata is re-attributed in memory."""
    if isinstance(model, onnx.ModelProto):
        path, proto = None, model
    else:
        path = Path(model)
        with read_model_file(path) as opened:  # names and metadata only: no weight values
            proto = opened.proto
    source = str(path) if path is not None else "model"
    # Raises MissingHierarchyError, whose message gives the annotate command.
    meta = decode_model_metadata({p.key: p.value for p in proto.metadata_props}, source=source)
    stale = sum(
        1
        for node, _ in iter_proto_nodes(proto.graph)
        if not {p.key for p in node.metadata_props} & {NODE_MODULE_KEY, NODE_REASON_KEY}
    )
    if stale:
        # Optimized or quantized since its last annotation: node metadata is gone from (some) nodes,
        # the provenance in the model metadata is not.
        logger.info("%s: %d nodes carry no attribution; re-attributing in memory from the provenance", source, stale)
        if path is None:
            proto = copy.deepcopy(proto)
        annotate_onnx_model(proto, meta.tree, meta.export)
    return proto, path


def _closest(glob: str, paths: Iterable[str]) -> str:
    close = difflib.get_close_matches(glob, [p for p in paths if p], n=3, cutoff=0.6)
    return f" Closest module paths: {', '.join(close)}." if close else ""


def _ancestors(path: str) -> tuple[str, ...]:
    parts = path.split(".") if path else []
    return ("", *(".".join(parts[:k]) for k in range(1, len(parts) + 1)))


def _names(node: NodeAttribution) -> tuple[str, ...]:
    if node.op_type == "Gemm" and node.name:
        return (node.name, *(node.name + s for s in _GEMM_DERIVED_SUFFIXES))
    return (node.name,)


def nodes_for_modules(
    model: str | os.PathLike[str] | onnx.ModelProto,
    *,
    exclude_modules: Globs = (),
    include_modules: Globs = (),
    missing_ok: bool = False,
) -> ModuleSelection:
    """Resolve module globs to the node names of ``model`` to exclude from / restrict quantization to.

    ``model`` is the exact file to be quantized (or its ``ModelProto``): node names are per file.
    A glob that matches no module raises :class:`~optimum_hierarchy.errors.HierarchyError`, unless
    ``missing_ok`` (for a set of files, where each glob has to match in one of them). A file without
    hierarchy metadata raises :class:`~optimum_hierarchy.errors.MissingHierarchyError` (annotate it
    with ``optimum-cli hierarchy annotate FILE``); one optimized or quantized since it was annotated
    is re-attributed in memory first.
    """
    exclude = _as_globs(exclude_modules, "exclude_modules")
    include = _as_globs(include_modules, "include_modules")
    proto, path = _load_attributed(model)
    retriever = HierarchyRetriever(proto)
    where = str(path) if path is not None else "the model"

    matched = {glob: tuple(m.path for m in retriever.find_modules(glob)) for glob in (*exclude, *include)}
    missing = [glob for glob, paths in matched.items() if not paths]
    if missing and not missing_ok:
        glob = missing[0]
        raise HierarchyError(
            f"module glob {glob!r} matches no module of {where} ('*' is one path segment, '**' any number)."
            f"{_closest(glob, retriever.tree)} List the modules with `optimum-cli hierarchy tree {where}`."
        )
    excluded = {p for glob in exclude for p in matched[glob]}
    included = {p for glob in include for p in matched[glob]}

    def inside(module: str | None, roots: set[str]) -> bool:
        return module is not None and not roots.isdisjoint(_ancestors(module))

    flags: dict[str, list[bool]] = collections.defaultdict(list)  # name -> may each node bearing it be quantized
    float_nodes = 0
    for node in retriever.nodes:
        touches_excluded = inside(node.module, excluded) or any(inside(s, excluded) for s in node.sources)
        eligible = not touches_excluded and (not include or inside(node.module, included))
        float_nodes += not eligible
        for name in _names(node):
            flags[name].append(eligible)
    to_quantize = tuple(name for name, f in flags.items() if all(f))
    to_exclude = tuple(name for name, f in flags.items() if not all(f))
    conflicts = tuple(name for name, f in flags.items() if any(f) and not all(f))
    if conflicts:
        logger.warning(
            "%s: %d node names are borne by nodes inside and outside the selection (subgraphs reusing names, "
            "unnamed nodes); they are kept float: %s",
            where,
            len(conflicts),
            ", ".join(repr(c) for c in conflicts[:5]),
        )
    selection = ModuleSelection(
        model=path,
        exclude_modules=exclude,
        include_modules=include,
        matched=matched,
        nodes_to_exclude=to_exclude,
        nodes_to_quantize=to_quantize if include else (),
        float_nodes=float_nodes,
        quantizable_nodes=len(retriever.nodes) - float_nodes,
        conflicts=conflicts,
    )
    logger.info("%s: %s", where, selection.describe())
    return selection


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
    (``restore_hierarchy``) so that it keeps its hierarchy.
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
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
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
