"""The sweep's definitions, independent of the package: TorchScript scopes resolved with torch's own naming
rule against the PyTorch model's module objects, and calls counted from the scopes.

torch's TorchScript exporter names a module's scope after the module's first name in
``named_modules()`` of the exported module, cut to its *unqualified* form: from its last
non-numeric atom on (``encoder.layer.0`` -> ``layer.0``, ``layer1.0`` -> ``layer1.0``,
``resnet.encoder.stages.0.layers.0.layer.0`` -> ``layer.0``; torch.onnx's
``_unqualified_variable_name``), and nests the scopes of the modules as they call each other; a
module called again in the same scope gets ``_N``. So a node's scope segments are resolved here by
walking module objects: each segment is the one module object, among those the current module
contains (or, for a shared module called from elsewhere, anywhere in the exported module), whose
unqualified first name is the segment. A segment that matches several objects is ambiguous and the
node is not checked (``None``), never guessed.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable
from typing import Any

import onnx

_CALL = re.compile(r"^(.+)_(\d+)$")


def unqualified(path: str) -> str:
    atoms = path.split(".")
    for i in range(len(atoms) - 1, -1, -1):
        if not atoms[i].isnumeric():
            return ".".join(atoms[i:])
    return path


class TorchScriptScopes:
    """Resolves node-name scopes of a TorchScript export of ``exported`` to module objects.

    A scope segment under the module at path ``current`` names the module whose first path is
    ``A.segment`` for ``A`` = ``current`` or one of its ancestors (the segment is that path from its
    last non-numeric atom). Several such modules: ambiguous, ``None``.
    """

    def __init__(self, exported: Any) -> None:
        self.exported = exported
        self._module: dict[str, Any] = {}
        self._path: dict[int, str] = {}
        for path, module in exported.named_modules():
            self._module[path] = module
            self._path.setdefault(id(module), path)
        self._cache: dict[tuple[str, ...], Any] = {}

    def _step(self, current: str, segment: str) -> str | None:
        """Below the current module object, the closest module whose first path is unqualified to the segment;
        else a module at ``A.segment`` for an ancestor path ``A`` (a shared module called from elsewhere)."""
        for name in (segment, *([m.group(1)] if (m := _CALL.match(segment)) else [])):
            below = []
            for relative, module in self._module[current].named_modules(remove_duplicate=False):
                first = self._path[id(module)]
                if relative and unqualified(first) == name:
                    below.append((relative.count("."), first))
            if below:
                depth = min(d for d, _ in below)
                closest = {first for d, first in below if d == depth}
                return closest.pop() if len(closest) == 1 else None
            parts = current.split(".") if current else []
            around = {p for n in range(len(parts)) if (p := ".".join([*parts[:n], name])) in self._module}
            if around:
                return around.pop() if len(around) == 1 else None
        return None

    def module_of(self, node_name: str) -> Any:
        """The module object whose call the node belongs to; the exported module for ``/Op``; None: no scope."""
        if not node_name.startswith("/"):
            return None
        segments = tuple(node_name.split("/")[1:-1])
        if any(not s for s in segments):
            return None
        if segments not in self._cache:
            current: str | None = ""
            for segment in segments:
                current = self._step(current, segment)
                if current is None:
                    break
            self._cache[segments] = None if current is None else self._module[current]
        return self._cache[segments]


def paths_of(model: Any) -> dict[int, frozenset[str]]:
    """Every path of each module object in ``model`` (several for a shared module)."""
    paths: dict[int, set[str]] = collections.defaultdict(set)
    for path, module in model.named_modules(remove_duplicate=False):
        paths[id(module)].add(path)
    return {k: frozenset(v) for k, v in paths.items()}


def module_meta(node: onnx.NodeProto) -> str | None:
    for p in node.metadata_props:
        if p.key == "pkg.optimum_hierarchy.module":
            return p.value
    return None


def all_nodes(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attr.g)
            for g in attr.graphs:
                yield from all_nodes(g)


def strip_metadata(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without any metadata_props (model, graph, nodes): the computation only."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.metadata_props[:]
    stack = [copy.graph]
    while stack:
        graph = stack.pop()
        del graph.metadata_props[:]
        for node in graph.node:
            del node.metadata_props[:]
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                stack.extend(attr.graphs)
    return copy
