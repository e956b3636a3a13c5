"""Module globs turned into the node names of one file: what quantizers (int8, int4) and converters exclude or keep.

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

__all__ = ["Globs", "ModuleSelection", "nodes_for_modules"]

import collections
import copy
import dataclasses
import difflib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import onnx

from optimum_hierarchy.annotation.file import annotate_proto
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.modules import ancestors
from optimum_hierarchy.read import NodeAttribution
from optimum_hierarchy.retriever import HierarchyRetriever
from optimum_hierarchy.schema import decode_model_metadata, is_annotated, read_props
from optimum_hierarchy.walk import iter_proto_nodes
from optimum_hierarchy.wire import read_model_file

logger = logging.getLogger(__name__)

# Names ONNX Runtime gives the nodes it makes of a Gemm before a dynamic quantization.
_GEMM_DERIVED_SUFFIXES = ("_MatMul", "_Transpose")
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
    meta = decode_model_metadata(read_props(proto), source=source)
    stale = sum(1 for node, _ in iter_proto_nodes(proto.graph) if not is_annotated(read_props(node)))
    if stale:
        # Optimized or quantized since its last annotation: node metadata is gone from (some) nodes,
        # the provenance in the model metadata is not.
        logger.info("%s: %d nodes carry no attribution; re-attributing in memory from the provenance", source, stale)
        if path is None:
            proto = copy.deepcopy(proto)
        annotate_proto(proto, meta.tree, meta.export)
    return proto, path


def closest_modules(glob: str, paths: Iterable[str]) -> str:
    """A sentence naming the (up to 3) module paths closest to ``glob``, or ``""`` when none is close."""
    close = difflib.get_close_matches(glob, [p for p in paths if p], n=3, cutoff=0.6)
    return f" Closest module paths: {', '.join(close)}." if close else ""


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
            f"{closest_modules(glob, retriever.tree)} List the modules with `optimum-cli hierarchy tree {where}`."
        )
    excluded = {p for glob in exclude for p in matched[glob]}
    included = {p for glob in include for p in matched[glob]}

    def inside(module: str | None, roots: set[str]) -> bool:
        return module is not None and not roots.isdisjoint(ancestors(module))

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
