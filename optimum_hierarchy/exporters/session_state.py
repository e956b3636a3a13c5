"""The state of one export with hierarchy (``ExportSession``), and the session active in this context.

What the export session and the code it patches into Optimum (the ``OnnxConfig`` subclasses, the
dynamo ``export_pytorch``) share: they read the active session with :func:`current_session`, and
:func:`~optimum_hierarchy.exporters.session.hierarchy_export_session` makes one active. This module
imports neither side.
"""

from __future__ import annotations

__all__ = ["ExportSession", "active_session", "current_session", "file_state", "onnx_files_state"]

import contextlib
import contextvars
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optimum_hierarchy.annotation.export_info import model_export_info, rules_of
from optimum_hierarchy.annotation.file import annotate_file
from optimum_hierarchy.annotation.results import AnnotatedFile, HierarchyExportResult
from optimum_hierarchy.errors import HierarchyExportError, MissingHierarchyError
from optimum_hierarchy.provenance import encode_provenance, provenance_from_node_metadata
from optimum_hierarchy.schema import PROVENANCE_KEY, ModuleTree, decode_model_metadata, read_props, set_prop
from optimum_hierarchy.trees.sources import tree_of_model
from optimum_hierarchy.wire import ModelFile, read_model_file

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_SESSION: contextvars.ContextVar[ExportSession | None] = contextvars.ContextVar(
    "optimum_hierarchy_export_session", default=None
)


def current_session() -> ExportSession | None:
    """The export session active in this context, if any."""
    return _SESSION.get()


@contextlib.contextmanager
def active_session(session: ExportSession) -> Iterator[ExportSession]:
    """``session`` is :func:`current_session` for the block (then the one before it again)."""
    token = _SESSION.set(session)
    try:
        yield session
    finally:
        _SESSION.reset(token)


@dataclasses.dataclass
class ExportSession:
    """State of one export with hierarchy, made by
    :func:`~optimum_hierarchy.exporters.session.hierarchy_export_session`."""

    strict: bool = False
    root_model: torch.nn.Module | None = None
    written: list[Path] = dataclasses.field(default_factory=list)
    annotated: dict[Path, tuple[tuple[int, int], AnnotatedFile]] = dataclasses.field(default_factory=dict)
    """Files annotated right after export, with their (mtime, size) then."""
    _tree: ModuleTree | None = None

    def root_tree(self) -> ModuleTree:
        if self.root_model is None:
            raise HierarchyExportError("the export session has no model yet")
        if self._tree is None:
            self._tree = tree_of_model(self.root_model).tree
        return self._tree

    def set_root_model(self, model: Any) -> None:
        import torch

        if isinstance(model, torch.nn.Module) and self.root_model is None:
            self.root_model = model

    def note_written(self, path: Path) -> None:
        if path not in self.written:
            self.written.append(path)

    def note_annotated(self, record: AnnotatedFile) -> None:
        self.annotated[record.path] = (file_state(record.path), record)

    def finalize(
        self, output: str | Path, unchanged: Mapping[Path, tuple[int, int]] | None = None
    ) -> HierarchyExportResult:
        """Annotate (again) the ONNX files the export left under ``output`` after Optimum's pipeline.

        ``unchanged`` maps files that existed before the export to their (mtime, size) then; those
        still the same were not written by this export and are left alone.

        Optimization drops node metadata and post-processing can create files (merged decoders);
        the model-level metadata written right after export survives both and says which tree and
        root each file belongs to. A file without it is attributed against the session's model.
        """
        output = Path(output)
        files = []
        unchanged = unchanged or {}
        for path in sorted(output.rglob("*.onnx")):
            state = file_state(path)
            if path not in self.written and unchanged.get(path) == state:
                continue
            if path in self.annotated and self.annotated[path][0] == state:
                # Untouched since it was annotated right after export: nothing to redo.
                files.append(self.annotated[path][1])
                continue
            with read_model_file(path) as source:
                files.append(self._finalize_file(path, source))
        if not files:
            raise HierarchyExportError(f"{output}: the export wrote no .onnx file")
        for record in files:
            if record.rules is None:
                logger.info(
                    "%s: no architecture rules for this model type; the generic attribution was used.", record.path
                )
        return HierarchyExportResult(output=output, files=tuple(files))

    def reannotate(self, path: Path, *, from_nodes: bool = False) -> None:
        """Re-attribute a file of the export now; ``from_nodes``: from the attribution its nodes carry
        (their provenance replaces the stored one)."""
        with read_model_file(path) as source:
            if from_nodes:
                provenance = encode_provenance(provenance_from_node_metadata(source.proto))
                set_prop(source.proto.metadata_props, PROVENANCE_KEY, provenance)
            self.note_annotated(self._finalize_file(path, source))

    def _finalize_file(self, path: Path, source: ModelFile) -> AnnotatedFile:
        try:
            meta = decode_model_metadata(read_props(source.proto), source=str(path))
            tree, export = meta.tree, meta.export
            rules = rules_of(export)
        except MissingHierarchyError:
            if self.root_model is None:
                raise HierarchyExportError(
                    f"{path}: carries no hierarchy and the session never saw the model it came from"
                ) from None
            tree = self.root_tree()
            export, rules = model_export_info(self.root_model)
        summary = annotate_file(path, tree, export, strict=self.strict, rules=rules, source=source)
        return AnnotatedFile(path=path, root=export.root, summary=summary, rules=export.rules)

    def discard_written(self) -> None:
        """Remove the model files this session wrote (after a failure), so none is left half-done."""
        for path in self.written:
            for candidate in (path, path.with_name(path.name + "_data")):
                with contextlib.suppress(FileNotFoundError):
                    candidate.unlink()
                    logger.warning("Removed %s: the export with hierarchy failed.", candidate)


def file_state(path: Path) -> tuple[int, int]:
    """(mtime, size) of a file: enough to see whether an export step rewrote it."""
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def onnx_files_state(output: Path) -> dict[Path, tuple[int, int]]:
    """:func:`file_state` of every ONNX file under ``output``."""
    if not output.is_dir():
        return {}
    return {p: file_state(p) for p in output.rglob("*.onnx")}
