"""Reading back what a tool wrote with ``--json``: the file as bounded JSON, and each field checked.

One :class:`ResultFormat` per kind of result (a profile, an error report) names it in messages and says
which command writes it; its readers (``read_profile``, ``read_error_report``) live beside the dataclasses
they rebuild. A result file is untrusted input: every field is checked, and a file that is not one is a
:class:`~optimum_hierarchy.errors.HierarchyError` naming the file, the field and the command to run.
"""

from __future__ import annotations

__all__ = ["ResultFormat", "ResultSource"]

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optimum_hierarchy.errors import HierarchyError, SchemaError
from optimum_hierarchy.schema import loads_json

ResultSource = str | os.PathLike[str] | Mapping[str, Any]
"""A result file, or its parsed JSON."""


@dataclasses.dataclass(frozen=True)
class ResultFormat:
    """A kind of result file: ``what`` it is (``"a profile result"``) and the ``command`` that writes it."""

    what: str
    command: str

    def refuse(self, name: str, problem: str) -> HierarchyError:
        return HierarchyError(f"{name}: not {self.what} ({problem}). Write it with `{self.command}`.")

    def load(self, source: ResultSource) -> tuple[str, Mapping[str, Any]]:
        """(what to call the source in messages, its JSON object)."""
        if isinstance(source, Mapping):
            return f"the data given as {self.what}", source
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise self.refuse(str(path), "not UTF-8 text") from e
        except OSError as e:
            raise HierarchyError(
                f"{path}: cannot be read ({e.strerror or e}). Check the path and its permissions."
            ) from e
        try:
            data = loads_json(text, str(path))
        except SchemaError as e:
            raise HierarchyError(f"{e}. {self.what.capitalize()} is the JSON `{self.command}` writes.") from e
        if not isinstance(data, Mapping):
            raise self.refuse(str(path), "a JSON object is expected")
        return str(path), data

    def rows(self, name: str, data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
        """``data["modules"]``: objects, each naming its module under ``key``."""
        rows = data.get("modules")
        if not isinstance(rows, list) or not all(isinstance(r, Mapping) and isinstance(r.get(key), str) for r in rows):
            raise self.refuse(name, f"expected a 'modules' list of objects, each with its module path under {key!r}")
        return rows

    def objects(self, name: str, data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
        """``data[key]``, a list of objects."""
        items = data.get(key)
        if not isinstance(items, list) or not all(isinstance(item, Mapping) for item in items):
            raise self.refuse(name, f"expected {key!r}, a list of objects")
        return items

    def get(self, name: str, data: Mapping[str, Any], key: str, kind: str, where: str = "") -> Any:
        """``data[key]`` if it is of ``kind``: ``count`` (an integer >= 0), ``number`` (NaN and infinities
        too), ``share`` (finite), ``text``, ``optional text``, ``texts`` (a list of strings) or ``shapes``
        (an object of integer lists); a list may be a tuple (``to_dict()`` before JSON)."""
        value = data.get(key)
        if not _is(kind, value):
            place = f"{where}: " if where else ""
            raise self.refuse(name, f"{place}{key!r} must be {_KINDS[kind]}")
        return value


_KINDS = {
    "count": "an integer >= 0",
    "number": "a number",
    "share": "a finite number",
    "text": "a string",
    "optional text": "a string or null",
    "texts": "a list of strings",
    "shapes": "an object of integer lists",
}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is(kind: str, value: object) -> bool:
    if kind == "count":
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if kind == "number":
        return _number(value)
    if kind == "share":
        return _number(value) and math.isfinite(float(value))  # type: ignore[arg-type]
    if kind == "text":
        return isinstance(value, str)
    if kind == "optional text":
        return value is None or isinstance(value, str)
    if kind == "texts":
        return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    if kind == "shapes":
        return isinstance(value, Mapping) and all(
            isinstance(v, list | tuple) and all(isinstance(d, int) and not isinstance(d, bool) for d in v)
            for v in value.values()
        )
    raise ValueError(kind)
