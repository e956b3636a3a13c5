"""The module tree of a live ``nn.Module``: what is recorded from PyTorch at export (the tree source
:func:`from_live_model`), and the capture it is made with (:func:`capture_module_tree`)."""

from __future__ import annotations

__all__ = ["capture_module_tree", "find_module_path", "from_live_model", "qualified_class_name"]

from typing import TYPE_CHECKING

from optimum_hierarchy.schema import ModuleInfo, ModuleTree, ParameterInfo
from optimum_hierarchy.trees.base import FoundTree, LiveModel

if TYPE_CHECKING:
    import torch


def qualified_class_name(obj: object) -> str:
    """``module.QualifiedName`` of the object's class, as module trees and export metadata record it."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def from_live_model(evidence: LiveModel) -> FoundTree:
    """The tree of the model being exported: its own modules, rooted at the model itself; always one."""
    model = evidence.model
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return FoundTree(
        tree=capture_module_tree(model),
        origin="the live model",
        root="",
        model_type=model_type if isinstance(model_type, str) else None,
        model_class=qualified_class_name(model),
    )


def capture_module_tree(model: torch.nn.Module) -> ModuleTree:
    """Record every entry of ``model.named_modules()``: path, class, and own parameters and buffers.

    A tensor reachable under several names (tied weights) is recorded under each owner, with
    ``tied_to`` naming its first occurrence so counts are not doubled. A module reachable under
    several paths (a shared module: T5's ``shared`` is also ``encoder.embed_tokens``) is one entry,
    at its first path, with the others as its ``aliases`` (their descendants too).
    """
    aliases: dict[int, list[str]] = {}
    first_path: dict[int, str] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        if first_path.setdefault(id(module), path) != path:
            aliases.setdefault(id(module), []).append(path)
    first_name: dict[int, str] = {}
    modules = []
    for path, module in model.named_modules():
        own: dict[str, list[ParameterInfo]] = {"parameters": [], "buffers": []}
        for kind, items in (
            ("parameters", module.named_parameters(recurse=False)),
            ("buffers", module.named_buffers(recurse=False)),
        ):
            for name, tensor in items:
                if tensor is None:
                    continue
                full = f"{path}.{name}" if path else name
                tied_to = first_name.setdefault(id(tensor), full)
                own[kind].append(
                    ParameterInfo(
                        name=name,
                        shape=tuple(tensor.shape),
                        tied_to=None if tied_to == full else tied_to,
                        dtype=str(tensor.dtype).removeprefix("torch."),
                    )
                )
        modules.append(
            ModuleInfo(
                path=path,
                class_name=qualified_class_name(module),
                parameters=tuple(own["parameters"]),
                buffers=tuple(own["buffers"]),
                aliases=tuple(aliases.get(id(module), ())),
            )
        )
    return ModuleTree(modules)


def find_module_path(root: torch.nn.Module, module: torch.nn.Module) -> str | None:
    """Path of ``module`` inside ``root`` (``""`` when they are the same object), ``None`` if absent."""
    for path, candidate in root.named_modules():
        if candidate is module:
            return str(path)
    return None
