"""The module tree of the model a ``config.json`` describes, built on PyTorch's ``meta`` device."""

from __future__ import annotations

__all__ = ["from_config", "tree_from_config"]

import os
from pathlib import Path

from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.modules import ModuleTree
from optimum_hierarchy.trees.base import FileEvidence, FoundTree
from optimum_hierarchy.trees.live_model import capture_module_tree, qualified_class_name


def from_config(evidence: FileEvidence) -> FoundTree | None:
    """The tree of the file's ``config.json`` (the root is then found from the file's names)."""
    if evidence.config is None:
        return None
    tree, model_type, model_class = tree_from_config(evidence.config)
    return FoundTree(tree=tree, origin=str(evidence.config), model_type=model_type, model_class=model_class)


def tree_from_config(config: str | os.PathLike[str]) -> tuple[ModuleTree, str | None, str | None]:
    """The module tree of the model a ``config.json`` describes, built on the ``meta`` device (no weights).

    Returns the tree, the config's ``model_type`` and the class instantiated (the first of the
    config's ``architectures`` that transformers has, else the ``AutoModel`` class). Remote code is
    never run.
    """
    import torch
    import transformers

    config_path = Path(config)
    try:
        cfg = transformers.AutoConfig.from_pretrained(str(config_path.parent), trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        raise HierarchyError(f"{config_path}: cannot be read as a transformers config ({e}).") from e
    classes = [getattr(transformers, name, None) for name in (getattr(cfg, "architectures", None) or [])]
    cls = next((c for c in classes if isinstance(c, type)), None)
    with torch.device("meta"):
        model = cls(cfg) if cls is not None else transformers.AutoModel.from_config(cfg)  # type: ignore[no-untyped-call]
    return capture_module_tree(model), getattr(cfg, "model_type", None), qualified_class_name(model)
