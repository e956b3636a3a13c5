"""What an annotated file records about its export (``ExportInfo``), and the rules for its model type.

The one place both are built: every exporter (Optimum's pipeline, ``HierarchyPreservingExporter``,
``hierarchy export``) and ``annotate_hierarchy`` take them from :func:`make_export_info`, and pass
the rules on to the annotation so that their consistency checks run wherever they are recorded.
A file annotated again gets its rules from the record it carries (:func:`rules_of`).
"""

from __future__ import annotations

__all__ = ["make_export_info", "model_export_info", "model_type_of", "rules_of"]

from optimum_hierarchy.rules import ArchitectureRules, rules_for_model_type
from optimum_hierarchy.schema import ExportInfo
from optimum_hierarchy.trees.live_model import qualified_class_name


def make_export_info(
    root: str, model_type: str | None, model_class: str | None
) -> tuple[ExportInfo, ArchitectureRules | None]:
    """The ``ExportInfo`` of a file holding the module ``root`` of a ``model_class`` model, and the rules
    for ``model_type`` (``None``: the generic mechanism alone; the record then names no rules).

    ``model_class`` is the model's qualified class name
    (:func:`~optimum_hierarchy.trees.live_model.qualified_class_name`), ``None`` when unknown.
    """
    rules = rules_for_model_type(model_type)
    export = ExportInfo(
        root=root,
        model_type=model_type,
        model_class=model_class,
        rules=rules.name if rules is not None else None,
    )
    return export, rules


def model_export_info(model: object) -> tuple[ExportInfo, ArchitectureRules | None]:
    """:func:`make_export_info` for a file holding the whole ``model`` (its type and class read from it)."""
    return make_export_info("", model_type_of(model), qualified_class_name(model))


def rules_of(export: ExportInfo) -> ArchitectureRules | None:
    """The rules to annotate a file again with, given the export record it carries: those of its model type."""
    return rules_for_model_type(export.model_type)


def model_type_of(model: object) -> str | None:
    """The transformers ``model_type`` of a model (``model.config.model_type``), ``None`` for other modules."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return model_type if isinstance(model_type, str) else None
