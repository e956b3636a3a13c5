"""Lazy re-exports for the package's ``__init__`` files: a name is imported from its module on first use.

An ``__init__`` that imported its submodules would load torch and optimum on ``import
optimum_hierarchy`` and would put every submodule that imports a sibling in an import cycle with it
(``tests/test_imports.py`` fails on one). So each ``__init__`` maps its public names to the modules
that define them and sets ``__getattr__ = lazy_getattr(__name__, _LAZY)``. This module imports
nothing from the package.
"""

from __future__ import annotations

__all__ = ["lazy_getattr"]

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``names`` maps each name to the module defining it.

    The value is cached on the package, so the import runs once per name; an unknown name raises
    the ``AttributeError`` Python's own lookup would.
    """

    def module_getattr(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return module_getattr
