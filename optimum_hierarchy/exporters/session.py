"""An export session: makes every config Optimum builds hierarchy-aware, and finishes the files afterwards."""

from __future__ import annotations

__all__ = [
    "AnnotatedFile",
    "ExportSession",
    "HierarchyExportResult",
    "current_session",
    "file_state",
    "hierarchy_export_session",
    "make_export_info",
    "onnx_files_state",
]

import contextlib
import contextvars
import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optimum_hierarchy.annotate import annotate_onnx_file
from optimum_hierarchy.capture.module_tree import capture_module_tree, qualified_class_name
from optimum_hierarchy.errors import HierarchyExportError, MissingHierarchyError
from optimum_hierarchy.rules import ArchitectureRules, rules_for_model_type
from optimum_hierarchy.schema import AttributionSummary, ExportInfo, ModuleTree, decode_model_metadata
from optimum_hierarchy.wire import ModelFile, read_model_file

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_SESSION: contextvars.ContextVar[ExportSession | None] = contextvars.ContextVar(
    "optimum_hierarchy_export_session", default=None
)


def current_session() -> ExportSession | None:
    return _SESSION.get()


@dataclasses.dataclass(frozen=True)
class AnnotatedFile:
    path: Path
    root: str
    """Path in the full model of the module this file holds (``""``: the whole model)."""
    summary: AttributionSummary
    rules: str | None


@dataclasses.dataclass(frozen=True)
class HierarchyExportResult:
    """Where an export with hierarchy wrote its files, and how their nodes were attributed."""

    output: Path
    files: tuple[AnnotatedFile, ...]

    @property
    def nodes(self) -> int:
        return sum(f.summary.nodes for f in self.files)

    @property
    def attributed(self) -> int:
        return sum(f.summary.attributed for f in self.files)

    @property
    def by_source(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for f in self.files:
            for source, n in f.summary.by_source.items():
                totals[source] = totals.get(source, 0) + n
        return dict(sorted(totals.items()))


@dataclasses.dataclass
class ExportSession:
    """State of one export with hierarchy. Entered with :func:`hierarchy_export_session`."""

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
            self._tree = capture_module_tree(self.root_model)
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

    def _finalize_file(self, path: Path, source: ModelFile) -> AnnotatedFile:
        try:
            meta = decode_model_metadata({p.key: p.value for p in source.proto.metadata_props}, source=str(path))
            tree, export = meta.tree, meta.export
            rules = rules_for_model_type(export.model_type)
        except MissingHierarchyError:
            if self.root_model is None:
                raise HierarchyExportError(
                    f"{path}: carries no hierarchy and the session never saw the model it came from"
                ) from None
            model_type = getattr(getattr(self.root_model, "config", None), "model_type", None)
            tree = self.root_tree()
            export, rules = make_export_info("", model_type, self.root_model)
        summary = annotate_onnx_file(path, tree, export, strict=self.strict, rules=rules, source=source)
        return AnnotatedFile(path=path, root=export.root, summary=summary, rules=export.rules)

    def discard_written(self) -> None:
        """Remove the model files this session wrote (after a failure), so none is left half-done."""
        for path in self.written:
            for candidate in (path, path.with_name(path.name + "_data")):
                with contextlib.suppress(FileNotFoundError):
                    candidate.unlink()
                    logger.warning("Removed %s: the export with hierarchy failed.", candidate)


def make_export_info(root: str, model_type: str | None, model: object) -> tuple[ExportInfo, ArchitectureRules | None]:
    """What an annotated file records about its export, and the rules for its model type."""
    rules = rules_for_model_type(model_type)
    export = ExportInfo(
        root=root,
        model_type=model_type,
        model_class=qualified_class_name(model),
        rules=rules.name if rules is not None else None,
    )
    return export, rules


def file_state(path: Path) -> tuple[int, int]:
    """(mtime, size) of a file: enough to see whether an export step rewrote it."""
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def onnx_files_state(output: Path) -> dict[Path, tuple[int, int]]:
    """:func:`file_state` of every ONNX file under ``output``."""
    if not output.is_dir():
        return {}
    return {p: file_state(p) for p in output.rglob("*.onnx")}


@contextlib.contextmanager
def hierarchy_export_session(
    *, strict: bool = False, model: Any = None, dynamo: bool = False
) -> Iterator[ExportSession]:
    """Within this context, every ONNX config Optimum builds is hierarchy-aware.

    Optimum asks ``TasksManager.get_exporter_config_constructor`` for the config of the model it is
    about to export; the session wraps that call (and undoes the wrap on exit) so that the config
    class is replaced by its hierarchy-aware subclass and the full model is remembered, which lets
    submodel exports (seq2seq encoders) keep full-model paths. With ``dynamo=True``, Optimum's
    ``export_pytorch`` is replaced for the session by
    :func:`~optimum_hierarchy.exporters.optimum_dynamo.export_pytorch_dynamo` (torch's dynamo
    exporter). On an exception, the model files the session wrote are removed.
    """
    from optimum.exporters.tasks import TasksManager

    from optimum_hierarchy.exporters.onnx_config import hierarchy_onnx_config

    session = ExportSession(strict=strict)
    if model is not None:
        session.set_root_model(model)
    original: Callable[..., Any] = TasksManager.get_exporter_config_constructor

    @functools.wraps(original)
    def get_exporter_config_constructor(*args: Any, **kwargs: Any) -> Any:
        constructor = original(*args, **kwargs)
        if kwargs.get("exporter", args[0] if args else None) != "onnx":
            return constructor
        session.set_root_model(kwargs.get("model"))
        if isinstance(constructor, functools.partial) and isinstance(constructor.func, type):
            subclass: Any = hierarchy_onnx_config(constructor.func)
            return functools.partial(subclass, *constructor.args, **constructor.keywords)
        if isinstance(constructor, type):
            return hierarchy_onnx_config(constructor)
        logger.warning("Unexpected ONNX config constructor %r: exported files are annotated afterwards.", constructor)
        return constructor

    token = _SESSION.set(session)
    TasksManager.get_exporter_config_constructor = staticmethod(get_exporter_config_constructor)
    try:
        with contextlib.ExitStack() as stack:
            if dynamo:
                stack.enter_context(_dynamo_export_pytorch())
            stack.enter_context(_merge_decoders_with_hierarchy(session))
            yield session
    except BaseException:
        session.discard_written()
        raise
    finally:
        TasksManager.get_exporter_config_constructor = staticmethod(original)
        _SESSION.reset(token)


@contextlib.contextmanager
def _dynamo_export_pytorch() -> Iterator[None]:
    """Optimum's ``export_pytorch`` replaced by the dynamo export for the block (``export`` calls it by name)."""
    from optimum.exporters.onnx import convert

    from optimum_hierarchy.exporters.dynamo import require_onnxscript
    from optimum_hierarchy.exporters.optimum_dynamo import export_pytorch_dynamo

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
    import importlib

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
                _annotate_now(session, Path(part))
        result = original(decoder, decoder_with_past, *args, **kwargs)
        save_path = kwargs.get("save_path", args[0] if args else None)
        if isinstance(save_path, (str, os.PathLike)) and Path(save_path).is_file():
            _annotate_now(session, Path(save_path), from_nodes=True)
        return result

    module.merge_decoders = merge_decoders
    try:
        yield
    finally:
        module.merge_decoders = original


def _annotate_now(session: ExportSession, path: Path, *, from_nodes: bool = False) -> None:
    """Re-attribute a file of the export now; ``from_nodes``: from the attribution its nodes carry."""
    from optimum_hierarchy.provenance import encode_provenance, provenance_from_node_metadata
    from optimum_hierarchy.schema import PROVENANCE_KEY

    with read_model_file(path) as source:
        if from_nodes:
            props = source.proto.metadata_props
            kept = [(p.key, p.value) for p in props if p.key != PROVENANCE_KEY]
            del props[:]
            for key, value in kept:
                props.add(key=key, value=value)
            props.add(key=PROVENANCE_KEY, value=encode_provenance(provenance_from_node_metadata(source.proto)))
        session.note_annotated(session._finalize_file(path, source))
