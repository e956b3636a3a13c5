"""Hierarchy-aware ``OnnxConfig`` subclasses: capture the module tree and annotate the file right after export.

Any Optimum ``OnnxConfig`` class gets its subclass from :func:`hierarchy_onnx_config`; the named ones
(``BertHierarchyOnnxConfig``, ...) are that subclass under a public name. Within an export session,
:func:`hierarchy_config_constructors` makes ``TasksManager`` hand out these subclasses.
"""

from __future__ import annotations

__all__ = [
    "BertHierarchyOnnxConfig",
    "ExportTarget",
    "GPT2HierarchyOnnxConfig",
    "HierarchyModelPatcher",
    "HierarchyOnnxConfigMixin",
    "ViTHierarchyOnnxConfig",
    "as_hierarchy_config",
    "export_target",
    "hierarchy_config_constructors",
    "hierarchy_onnx_config",
]

import contextlib
import dataclasses
import functools
import importlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from optimum_hierarchy.errors import require_optimum_onnx

require_optimum_onnx("The hierarchy OnnxConfig classes (optimum_hierarchy.exporters.onnx_config)")

from optimum.exporters.onnx.model_configs import BertOnnxConfig, GPT2OnnxConfig, ViTOnnxConfig  # noqa: E402
from optimum.exporters.tasks import TasksManager  # noqa: E402

from optimum_hierarchy.annotation.export_info import make_export_info  # noqa: E402
from optimum_hierarchy.annotation.file import annotate_file, write_annotated  # noqa: E402
from optimum_hierarchy.annotation.results import AnnotatedFile  # noqa: E402
from optimum_hierarchy.exporters.session_state import ExportSession, current_session  # noqa: E402
from optimum_hierarchy.rules import ArchitectureRules  # noqa: E402
from optimum_hierarchy.schema import ExportInfo, ModuleTree  # noqa: E402
from optimum_hierarchy.trees.live_model import find_module_path, qualified_class_name  # noqa: E402
from optimum_hierarchy.trees.sources import tree_of_model  # noqa: E402

if TYPE_CHECKING:
    import torch
    from optimum.exporters.onnx.base import OnnxConfig

logger = logging.getLogger(__name__)

# The TorchScript exporter's entry point that `torch.onnx.export(..., dynamo=False)` imports at call
# time, and the function it writes the serialized model with.
_TORCHSCRIPT_EXPORT_MODULE = "torch.onnx._internal.torchscript_exporter.utils"
_TORCHSCRIPT_WRITE_MODULE = "torch.onnx._internal.torchscript_exporter.onnx_proto_utils"


@contextlib.contextmanager
def _patched(module_name: str, attribute: str, make: Callable[[Any], Any]) -> Iterator[bool]:
    """Replace ``module.attribute`` by ``make(original)`` for the block; yields whether it could."""
    try:
        module = importlib.import_module(module_name)
        original = getattr(module, attribute)
    except (ImportError, AttributeError):
        yield False
        return
    setattr(module, attribute, make(original))
    try:
        yield True
    finally:
        setattr(module, attribute, original)


class HierarchyModelPatcher:
    """Wraps an Optimum ``ModelPatcher``; annotates the ONNX file the export writes.

    The module tree is captured on entry, before the wrapped patcher changes anything. When an
    export session knows the full model (``export_with_hierarchy``, ``--hierarchy``), a submodel
    such as an encoder is located in it so that paths are those of the full model.

    The annotation runs on the serialized model the TorchScript exporter is about to write, so the
    file is written once, already annotated, and its weights are copied, never parsed (see
    :mod:`optimum_hierarchy.wire`). Where this torch version offers no such hook, the file is
    annotated in place right after the export instead.
    """

    def __init__(self, inner: Any, config: HierarchyOnnxConfigMixin, model: torch.nn.Module) -> None:
        self._inner = inner
        self._config = config
        self._model = model
        self._stack: contextlib.ExitStack | None = None
        self._written: list[Path] = []
        self._annotated: set[Path] = set()

    def __enter__(self) -> HierarchyModelPatcher:
        with contextlib.ExitStack() as stack:
            self._written, self._annotated = [], set()
            self._tree = tree_of_model(self._model).tree
            stack.enter_context(self._inner)
            recorded = stack.enter_context(_patched(_TORCHSCRIPT_EXPORT_MODULE, "export", self._recording_export))
            stack.enter_context(_patched(_TORCHSCRIPT_WRITE_MODULE, "_export_file", self._annotating_write))
            if not recorded:
                logger.warning(
                    "This torch version has no %s.export: files will be annotated after Optimum's pipeline "
                    "(export_with_hierarchy / --hierarchy) rather than right after the TorchScript export.",
                    _TORCHSCRIPT_EXPORT_MODULE,
                )
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        assert self._stack is not None
        suppressed = bool(self._stack.__exit__(exc_type, exc, tb))
        self._stack = None
        if exc_type is None:
            for path in self._written:
                if path not in self._annotated:
                    self._annotate(path)
        return suppressed

    def _recording_export(self, original: Any) -> Any:
        @functools.wraps(original)
        def export(model: Any, args: Any, f: Any, *rest: Any, **kwargs: Any) -> Any:
            result = original(model, args, f, *rest, **kwargs)
            if isinstance(f, (str, os.PathLike)):
                self._written.append(Path(f))
            return result

        return export

    def _annotating_write(self, original: Any) -> Any:
        @functools.wraps(original)
        def export_file(model_bytes: bytes, f: Any, export_map: Any) -> Any:
            if export_map or not isinstance(f, (str, os.PathLike)) or not isinstance(model_bytes, bytes):
                return original(model_bytes, f, export_map)  # annotated in place after the export
            path = Path(f)
            self._annotate(path, model_bytes)
            self._annotated.add(path)
            return None

        return export_file

    def _annotate(self, path: Path, model_bytes: bytes | None = None) -> None:
        """Annotate ``path`` in place or, given the bytes the exporter is about to write there, write them annotated."""
        session = current_session()
        target = export_target(self._model, self._config, self._tree, path)
        if model_bytes is None:
            if session is not None:
                session.note_written(path)  # the exporter wrote it: removed if the export fails
            summary = annotate_file(path, target.tree, target.export, strict=target.strict, rules=target.rules)
        else:
            summary = write_annotated(
                model_bytes, path, target.tree, target.export, strict=target.strict, rules=target.rules
            )
            if session is not None:
                # Only now is the file there this export's: a failure before the rename leaves what was
                # at ``path`` (an earlier export's file) as it was, and the session must not remove it.
                session.note_written(path)
        if session is not None:
            session.note_annotated(
                AnnotatedFile(path=path, root=target.root, summary=summary, rules=target.export.rules)
            )


@dataclasses.dataclass(frozen=True)
class ExportTarget:
    """Where the file an export writes sits in the full model, and how to annotate it."""

    tree: ModuleTree
    root: str
    export: ExportInfo
    rules: ArchitectureRules | None
    strict: bool


def export_target(model: torch.nn.Module, config: Any, tree: ModuleTree, path: Path) -> ExportTarget:
    """The tree, root and export record for the file ``path`` that ``model`` (of tree ``tree``) is exported to.

    When an export session knows the full model and ``model`` is a submodule of it (a seq2seq encoder),
    the file gets the full model's tree and paths; ``config`` is the export's ``OnnxConfig``.
    """
    session = current_session()
    root, owner = "", model
    root_model = session.root_model if session is not None else None
    if session is not None and root_model is not None and root_model is not model:
        prefix = find_module_path(root_model, model)
        if prefix is not None:
            tree, root, owner = session.root_tree(), prefix, root_model
        else:
            logger.warning(
                "%s: the exported %s is not a submodule of the model being exported; paths are relative to it.",
                path,
                type(model).__name__,
            )
    elif root_model is None and _is_submodel_export(config):
        logger.warning(
            "%s: exported alone, outside an export session; module paths are relative to %s, not to "
            "the full model. Use optimum_hierarchy.export_with_hierarchy(...) for full-model paths.",
            path,
            type(model).__name__,
        )
    model_type = config.hierarchy_model_type() if isinstance(config, HierarchyOnnxConfigMixin) else None
    export, rules = make_export_info(root, model_type, qualified_class_name(owner))
    if session is not None:
        strict = session.strict
    else:
        strict = config.HIERARCHY_STRICT if isinstance(config, HierarchyOnnxConfigMixin) else False
    return ExportTarget(tree=tree, root=root, export=export, rules=rules, strict=strict)


def _is_submodel_export(config: Any) -> bool:
    return isinstance(config, HierarchyOnnxConfigMixin) and config.is_submodel_export()


class HierarchyOnnxConfigMixin:
    """Mixed in before an Optimum ``OnnxConfig``: its exports carry the module hierarchy.

    Works for any architecture: ``hierarchy_onnx_config(SomeOnnxConfig)`` builds the subclass.
    """

    HIERARCHY_STRICT: bool = False
    """Raise instead of leaving unattributed nodes when no export session says otherwise."""

    def patch_model_for_export(self, model: Any, model_kwargs: dict[str, Any] | None = None) -> Any:
        inner = super().patch_model_for_export(model, model_kwargs=model_kwargs)  # type: ignore[misc]
        return HierarchyModelPatcher(inner, self, model)

    def hierarchy_model_type(self) -> str | None:
        config = getattr(self, "_config", None)
        model_type = getattr(config, "export_model_type", None) or getattr(config, "model_type", None)
        return model_type if isinstance(model_type, str) else None

    def is_submodel_export(self) -> bool:
        """Whether Optimum exports a submodule (a seq2seq encoder) rather than the whole model."""
        behavior = getattr(self, "_behavior", None)
        return getattr(behavior, "value", None) == "encoder"


@functools.cache
def _subclass(base: Any) -> type:
    stem = base.__name__.removesuffix("OnnxConfig")
    doc = f"Optimum's ``{base.__name__}``, with the module hierarchy written into the export."
    return type(
        f"{stem}HierarchyOnnxConfig", (HierarchyOnnxConfigMixin, base), {"__module__": __name__, "__doc__": doc}
    )


def hierarchy_onnx_config(base: type[OnnxConfig]) -> type[OnnxConfig]:
    """The hierarchy-aware subclass of an Optimum ``OnnxConfig`` class: one per class, named
    ``<Name>HierarchyOnnxConfig`` after ``<Name>OnnxConfig``."""
    if issubclass(base, HierarchyOnnxConfigMixin):
        return base
    return _subclass(base)  # type: ignore[arg-type]


# Named for users of Optimum's own ``main_export(custom_onnx_configs=...)``; the same classes as
# ``hierarchy_onnx_config`` gives (and picklable: their names are these).
ViTHierarchyOnnxConfig = hierarchy_onnx_config(ViTOnnxConfig)
BertHierarchyOnnxConfig = hierarchy_onnx_config(BertOnnxConfig)
GPT2HierarchyOnnxConfig = hierarchy_onnx_config(GPT2OnnxConfig)


def as_hierarchy_config(config: OnnxConfig) -> OnnxConfig:
    """A copy of an ``OnnxConfig`` instance whose exports carry the hierarchy (itself if already so)."""
    if isinstance(config, HierarchyOnnxConfigMixin):
        return config
    # A shallow copy built as the subclass: assigning ``__class__`` is refused ("object layout
    # differs") for a user's own subclass of an Optimum config.
    clone: OnnxConfig = object.__new__(hierarchy_onnx_config(type(config)))
    clone.__dict__.update(vars(config))
    return clone


@contextlib.contextmanager
def hierarchy_config_constructors(session: ExportSession) -> Iterator[None]:
    """For the block, ``TasksManager.get_exporter_config_constructor`` builds hierarchy-aware ONNX configs.

    Optimum asks it for the config of the model it is about to export (and derives the encoder and
    decoder configs from that one with ``with_behavior``); the wrap returns the hierarchy-aware
    subclass of what it would have returned, and gives ``session`` the full model, which lets
    submodel exports (seq2seq encoders) keep full-model paths. Undone on exit.
    """
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

    TasksManager.get_exporter_config_constructor = staticmethod(get_exporter_config_constructor)
    try:
        yield
    finally:
        TasksManager.get_exporter_config_constructor = staticmethod(original)
