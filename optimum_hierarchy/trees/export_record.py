"""The module tree and root of a dynamo-exported file, from the export's own evidence (transformers' exporter too).

``ExportedModel.save_pretrained`` writes ``<component>.onnx`` files, the model's ``config.json`` and an
``export.json`` naming each component's file and the class of the module it exported
(``architecture``: ``LlamaForCausalLM`` for ``prefill``, ``LlamaModel`` for a LLaVA's
``language_model``, ``Linear`` for its ``lm_head``). Every node carries torch's record of its call
stack, relative to that module: ``pkg.torch.onnx.name_scopes`` (paths) and
``pkg.torch.onnx.class_hierarchy`` (their classes, the exported module's first).

:func:`tree_for_exported_component` builds the tree of a whole model for each class the evidence names
(the exported class the nodes record, the config's ``architectures``, then each component's
``architecture`` in ``export.json``), on PyTorch's ``meta`` device, and keeps the first in which exactly
one module can be the file's root: a module of the exported class under which every path the nodes
record exists, with the class they record. Where several modules qualify (a ``Linear`` ``lm_head``
whose nodes record no deeper path), the one the component is named after is taken, else none: the
root is never guessed against the nodes' metadata. The same serves a plain ``torch.onnx.export`` file
beside its ``config.json`` (no ``export.json``): a config saved from ``ResNetConfig`` names no
architecture, and the ``ResNetModel`` its model type gives has none of the
``ResNetForImageClassification`` paths the nodes record.
"""

from __future__ import annotations

__all__ = [
    "MANIFEST",
    "component_programs",
    "exported_component_entry",
    "from_export_record",
    "manifest_components",
    "tree_for_exported_component",
]

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.evidence.dynamo_metadata import scope_classes
from optimum_hierarchy.modules import ModuleTree, join_path
from optimum_hierarchy.trees.base import FileEvidence, FoundTree
from optimum_hierarchy.trees.live_model import capture_module_tree, qualified_class_name

logger = logging.getLogger(__name__)

MANIFEST = "export.json"
"""The manifest transformers' ``ExportedModel.save_pretrained`` writes beside the component files."""


def manifest_components(directory: Path) -> dict[str, Mapping[str, Any]]:
    """``{component name: its entry}`` of the ``export.json`` in ``directory`` (each entry has ``file``).

    Raises :class:`~optimum_hierarchy.errors.HierarchyError` for a manifest that is missing or cannot be read.
    """
    manifest_path = directory / MANIFEST
    try:
        components = json.loads(manifest_path.read_text(encoding="utf-8"))["components"]
        entries = {str(name): entry for name, entry in components.items()}
        if not all(isinstance(entry, dict) and isinstance(entry.get("file"), str) for entry in entries.values()):
            raise ValueError("a component without a file name")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise HierarchyError(f"{manifest_path}: cannot be read as transformers' export manifest ({e}).") from e
    return entries


def component_programs(exported: Any) -> dict[str, Any]:
    """``{component name: its program}`` of transformers' ``ExportedModel`` (an ``onnx_ir.Model`` for ONNX)."""
    return {name: component.program for name, component in exported.components.items()}


def exported_component_entry(path: Path) -> tuple[str, Mapping[str, Any], dict[str, Mapping[str, Any]]] | None:
    """``(component name, its entry, every component's entry)`` if ``path`` is a component file of an
    ``export.json`` beside it; ``None`` otherwise (or for a manifest that cannot be read: logged)."""
    if not (path.parent / MANIFEST).is_file():
        return None
    try:
        components = manifest_components(path.parent)
    except HierarchyError as e:
        logger.warning("%s; not used.", e)
        return None
    for name, entry in components.items():
        if entry["file"] == path.name:
            return name, entry, components
    return None


def _recorded_scopes(nodes_metadata: Iterable[Mapping[str, str]]) -> tuple[str | None, dict[str, set[str]]]:
    """The exported module's class, and each relative path the nodes record with the classes recorded for it."""
    root_classes: set[str] = set()
    scopes: dict[str, set[str]] = {}
    for metadata in nodes_metadata:
        try:
            found = scope_classes(metadata)
        except ValueError:
            continue
        if found is None:
            continue
        paths, classes = found
        if classes is None or not paths or paths[0] != "":
            continue
        root_classes.add(classes[0])
        for p, c in zip(paths[1:], classes[1:], strict=True):
            scopes.setdefault(p, set()).add(c)
    root_class = next(iter(root_classes)) if len(root_classes) == 1 else None
    return root_class, scopes


def _roots(tree: ModuleTree, root_class: str, scopes: Mapping[str, set[str]]) -> list[str]:
    found = []
    for candidate in tree:
        if tree[candidate].class_name != root_class:
            continue
        ok = True
        for relative, classes in scopes.items():
            full = tree.canonical(join_path(candidate, relative))
            if full is None or {tree[full].class_name} != classes:
                ok = False
                break
        if ok:
            found.append(candidate)
    return found


def from_export_record(evidence: FileEvidence) -> FoundTree | None:
    """The tree and root the nodes' own records and the export's files agree on; ``None`` for other files."""
    return (
        tree_for_exported_component(evidence.path, evidence.config, evidence.nodes_metadata)
        if evidence.dynamo
        else None
    )


def tree_for_exported_component(
    path: Path, config_path: Path | None, nodes_metadata: Sequence[Mapping[str, str]]
) -> FoundTree | None:
    """The whole model's tree and this file's root (see the module docstring); ``None`` when no class fits
    or no config is at hand."""
    import torch
    import transformers

    found = exported_component_entry(path)
    component, components = (found[0], found[2]) if found is not None else (None, {})
    root_class, scopes = _recorded_scopes(nodes_metadata)
    if root_class is None:
        logger.warning("%s: its nodes record no single exported module class; the export record is not used.", path)
        return None
    config_file = config_path if config_path is not None else path.parent / "config.json"
    if not config_file.is_file():
        return None
    try:
        config = transformers.AutoConfig.from_pretrained(str(config_file.parent), trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        logger.warning("%s: cannot be read as a transformers config (%s).", config_file, e)
        return None
    names = [root_class.rsplit(".", 1)[-1]]
    names += [n for n in getattr(config, "architectures", None) or [] if n not in names]
    for other in components.values():
        name = (other.get("metadata") or {}).get("architecture")
        if isinstance(name, str) and name not in names:
            names.append(name)
    for name in names:
        cls = getattr(transformers, name, None)
        config_class = getattr(cls, "config_class", None)
        if not isinstance(cls, type) or not isinstance(config_class, type) or not isinstance(config, config_class):
            continue  # a component's class that is not built from this config (LlamaModel under a LLaVA)
        try:
            with torch.device("meta"):
                model = cls(config)
        except Exception as e:  # a class whose constructor refuses this config: not the model
            logger.debug("%s: %s(config) failed: %s", path, name, e)
            continue
        tree = capture_module_tree(model)
        roots = _roots(tree, root_class, scopes)
        if len(roots) > 1 and component is not None:
            roots = [r for r in roots if r.rsplit(".", 1)[-1] == component] or roots
        if len(roots) == 1:
            return FoundTree(
                tree=tree,
                root=roots[0],
                model_type=getattr(config, "model_type", None),
                model_class=qualified_class_name(model),
                origin=(
                    f"{config_file.name} and the nodes' records ({name}"
                    + (f", {MANIFEST} component {component!r}" if component is not None else "")
                    + f" at {roots[0] or 'the root'!r})"
                ),
            )
        if len(roots) > 1:
            logger.warning(
                "%s: component %r could be any of %s in %s; its module root is not guessed.",
                path,
                component,
                ", ".join(roots[:5]),
                name,
            )
    logger.info("%s: no class the export names fits the nodes' own module records (%s).", path, root_class)
    return None
