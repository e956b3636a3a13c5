"""A self-contained interactive HTML view of an annotated model (no network needed to view it).

One file: the data as JSON inside a ``<script type="application/json">`` element, the style and the
script inline (the package files ``view/page.html``, ``view/page.css``, ``view/page.js``). What it
shows: a collapsible module tree with each module's class, node count and parameter count; a search
box over node names and op types; the nodes of the selected module (its subtree, or its own nodes only)
with op type, module and input/output tensors. Clicking a node opens its details: domain, attributes
(short values; tensors and graphs summarized), how it was attributed (and why not, for an unattributed
node) and, for a fused node, the modules of the nodes it replaced. A module with no nodes of its own
left after fusion names the fused nodes its work went to. The page draws only the rows on screen, so a
model of 20,000 nodes opens and answers the search box at once.

Optional results add columns to the tree, read by the tools that write them: a profile
(:func:`~optimum_hierarchy.tools.profile.read_profile`, the time per run of each module's subtree) and an
error report (:func:`~optimum_hierarchy.tools.error.read_error_report`, local and accumulated relative L2
error, and a picture of the error per layer). A file with weights in more than one precision (int4,
int8, fp16 by module) gets a picture of the precision of each module. Every string from the model or a
result file is untrusted: the JSON has no ``<`` left, and the script inserts text with ``textContent`` only.
"""

from __future__ import annotations

__all__ = ["render_html", "write_html"]

import contextlib
import os
from pathlib import Path

import onnx

from optimum_hierarchy.atomic import atomic_write
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.retriever import HierarchyRetriever
from optimum_hierarchy.tools.error import ErrorReport, read_error_report
from optimum_hierarchy.tools.profile import ModuleProfile, read_profile
from optimum_hierarchy.tools.result_file import ResultSource
from optimum_hierarchy.view.data import view_data
from optimum_hierarchy.view.page import Picture, assemble_page
from optimum_hierarchy.wire import read_model_file

ProfileSource = ResultSource | ModuleProfile
"""A ``hierarchy profile --json`` file, its parsed JSON, or the profile itself."""
ErrorSource = ResultSource | ErrorReport
"""A ``hierarchy error --json`` file, its parsed JSON, or the report itself."""


def _profile(source: ProfileSource) -> tuple[str, ModuleProfile]:
    if isinstance(source, ModuleProfile):
        return f"the profile of {source.model.name}", source
    return _name(source, "a profile result"), read_profile(source)


def _error(source: ErrorSource) -> tuple[str, ErrorReport]:
    if isinstance(source, ErrorReport):
        return f"the error of {source.candidate.name}", source
    return _name(source, "an error result"), read_error_report(source)


def _name(source: ResultSource, what: str) -> str:
    return f"the data given as {what}" if not isinstance(source, str | os.PathLike) else str(Path(source))


def _pictures(retriever: HierarchyRetriever, graph: onnx.ModelProto | None, error: ErrorReport | None) -> list[Picture]:
    """The error per layer when there is an error report; the precision map when the file mixes precisions
    (read from ``graph``, the retriever's file as already read)."""
    from optimum_hierarchy import plots
    from optimum_hierarchy.tools.precision import module_precisions

    pictures = []
    if error is not None:
        caption = f"Error per layer, local and accumulated: {error.candidate.name} against {error.reference.name}"
        pictures.append(Picture("error-by-layer", caption, plots.error_by_layer(error)))
    path = retriever.hierarchy.path
    precisions = module_precisions(graph, where=str(path)) if path is not None and graph is not None else {}
    if len(set(precisions.values())) > 1 or set(precisions.values()) - {"fp32"}:
        name = Path(path).name if path is not None else "the model"
        pictures.append(
            Picture("precision-map", f"Precision of each module of {name}", plots.precision_map(precisions))
        )
    return pictures


def render_html(
    retriever: HierarchyRetriever,
    title: str,
    *,
    graph: onnx.ModelProto | None = None,
    profile: ProfileSource | None = None,
    error: ErrorSource | None = None,
) -> str:
    """The page, as text.

    ``graph``: the ``ModelProto`` the retriever was built from, for the nodes' domains and attributes; by
    default the retriever's file is read again (without its weights), and a retriever built from a proto
    without it shows none. ``profile`` / ``error``: a file ``optimum-cli hierarchy profile --json`` /
    ``hierarchy error --json`` wrote, its parsed JSON, or the ``ModuleProfile`` / ``ErrorReport`` itself,
    for this model; a file that is not one, or is of another model, raises :class:`HierarchyError` naming it.
    """
    profile_read = _profile(profile) if profile is not None else None
    error_read = _error(error) if error is not None else None
    path = retriever.hierarchy.path
    with contextlib.ExitStack() as stack:
        if graph is None and path is not None:  # read once (without weights) for the details and the pictures
            graph = stack.enter_context(read_model_file(path)).proto
        data = view_data(retriever, graph, profile_read, error_read, where=str(path) if path is not None else "graph")
        pictures = _pictures(retriever, graph, error_read[1] if error_read is not None else None)
    return assemble_page(title, data, pictures)


def write_html(
    retriever: HierarchyRetriever,
    output: str | os.PathLike[str],
    title: str,
    *,
    graph: onnx.ModelProto | None = None,
    profile: ProfileSource | None = None,
    error: ErrorSource | None = None,
) -> Path:
    """Write the view (see :func:`render_html`) to ``output`` atomically: a temporary file, then a rename.

    Nothing is written when a result file is refused.
    """
    output = Path(output)
    page = render_html(retriever, title, graph=graph, profile=profile, error=error)
    try:
        atomic_write(output, page.encode("utf-8"))
    except OSError as e:
        raise HierarchyError(
            f"{output}: cannot be written ({e.strerror or e}). Check the directory's permissions and free space."
        ) from e
    return output
