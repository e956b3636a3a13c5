"""The module tree, one source per kind of evidence: the live model, a config, dynamo metadata, names, an export record.

``base.py`` holds the one interface (``TreeSource``: evidence -> ``FoundTree`` or ``None``) and the evidence: a
live model (``LiveModel``) or a file (``FileEvidence``); ``sources.py`` the two ways in, ``tree_of_model`` at
export and ``tree_of_file``, with the order in which a file nobody annotated is given its tree. Names are
re-exported lazily (see :mod:`optimum_hierarchy.lazy`).
"""

from __future__ import annotations

from optimum_hierarchy.lazy import lazy_getattr

_LAZY = {
    "FileEvidence": "optimum_hierarchy.trees.base",
    "FoundTree": "optimum_hierarchy.trees.base",
    "LiveModel": "optimum_hierarchy.trees.base",
    "TreeSource": "optimum_hierarchy.trees.base",
    "capture_module_tree": "optimum_hierarchy.trees.live_model",
    "tree_from_config": "optimum_hierarchy.trees.config",
    "tree_from_dynamo": "optimum_hierarchy.trees.dynamo_metadata",
    "tree_from_names": "optimum_hierarchy.trees.names",
    "tree_of_file": "optimum_hierarchy.trees.sources",
    "tree_of_model": "optimum_hierarchy.trees.sources",
}

__all__ = [
    "FileEvidence",
    "FoundTree",
    "LiveModel",
    "TreeSource",
    "capture_module_tree",
    "tree_from_config",
    "tree_from_dynamo",
    "tree_from_names",
    "tree_of_file",
    "tree_of_model",
]

__getattr__ = lazy_getattr(__name__, _LAZY)
