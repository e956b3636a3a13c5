"""Queries over an annotated model: modules, their nodes, statistics, and differences between two models.

``HierarchyRetriever`` is built once from a path, an ``onnx.ModelProto``, an ONNX Runtime session or an
``ORTModel`` (weights in external data are never read); it indexes the module tree and the nodes so
that each query costs what its answer costs, not a scan of the graph. Results are frozen dataclasses
or lists in a fixed order: modules in the tree's depth-first order, nodes in graph order.
"""

from __future__ import annotations

__all__ = ["HierarchyRetriever", "ModuleDiff", "ModuleStats"]

import collections
import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from optimum_hierarchy.modules import ModuleInfo, ModuleTree, ancestor_at, ancestors, segments
from optimum_hierarchy.read import ModelHierarchy, NodeAttribution, read_hierarchy


@dataclasses.dataclass(frozen=True)
class ModuleStats:
    """Counts for one module: ``own`` is what is attributed to it, ``subtree`` adds its descendants."""

    path: str
    class_name: str
    own_nodes: int
    subtree_nodes: int
    own_op_types: Mapping[str, int]
    subtree_op_types: Mapping[str, int]
    own_parameters: int
    subtree_parameters: int
    own_parameter_bytes: int
    subtree_parameter_bytes: int
    """Bytes from the dtypes recorded at export; a tensor of unknown dtype counts 0."""


@dataclasses.dataclass(frozen=True)
class ModuleDiff:
    """One module in two models (e.g. before and after optimization): its subtree's node counts by op type."""

    path: str
    nodes_before: int
    nodes_after: int
    op_types_before: Mapping[str, int]
    op_types_after: Mapping[str, int]

    @property
    def changed(self) -> bool:
        return self.op_types_before != self.op_types_after


def _counts(nodes: Iterable[NodeAttribution]) -> dict[str, int]:
    return dict(sorted(collections.Counter(n.op_type for n in nodes).items()))


def _glob_match(segments: list[str], patterns: list[str]) -> bool:
    """Module glob over path segments: ``*`` (and ``?``, ``[...]``) within one segment, ``**`` any number."""
    if not patterns:
        return not segments
    if patterns[0] == "**":
        return any(_glob_match(segments[k:], patterns[1:]) for k in range(len(segments) + 1))
    return bool(segments) and fnmatch.fnmatchcase(segments[0], patterns[0]) and _glob_match(segments[1:], patterns[1:])


class HierarchyRetriever:
    """Ask an annotated model where its nodes come from.

    ``source`` is a path, an ``onnx.ModelProto``, an ``onnxruntime.InferenceSession``, an ``ORTModel``
    or a :class:`~optimum_hierarchy.read.ModelHierarchy`. A file without hierarchy metadata raises
    :class:`~optimum_hierarchy.errors.MissingHierarchyError` (its message gives the command that adds
    it); metadata of an unknown schema version raises :class:`~optimum_hierarchy.errors.SchemaError`.
    """

    def __init__(self, source: Any) -> None:
        self.hierarchy: ModelHierarchy = source if isinstance(source, ModelHierarchy) else read_hierarchy(source)
        tree = self.hierarchy.tree
        # Depth-first order, whatever order the stored tree lists modules in.
        self._order: list[str] = []
        self._end: dict[str, int] = {}
        stack: list[tuple[str, bool]] = [("", False)]
        while stack:
            path, done = stack.pop()
            if done:
                self._end[path] = len(self._order)
                continue
            self._order.append(path)
            stack.append((path, True))
            stack.extend((child, False) for child in reversed(tree.children(path)))
        self._position = {path: i for i, path in enumerate(self._order)}
        self._own: dict[str, list[int]] = collections.defaultdict(list)
        self._touching: dict[str, list[int]] = collections.defaultdict(list)
        self._by_name: dict[str, list[int]] = collections.defaultdict(list)
        for i, node in enumerate(self.hierarchy.nodes):
            self._by_name[node.name].append(i)
            if node.module is not None:
                self._own[node.module].append(i)
                for module in node.sources:
                    if module != node.module:
                        self._touching[module].append(i)
        self._by_depth: dict[int, list[str]] = collections.defaultdict(list)
        self._by_class: dict[str, list[str]] = collections.defaultdict(list)
        for path in self._order:
            info = tree[path]
            self._by_depth[info.depth].append(path)
            self._by_class[info.class_name].append(path)
            self._by_class[info.class_name.rpartition(".")[2]].append(path)

    # --- queries by module (a depth, its nodes, nodes grouped by module, a subtree), then by node ------

    @property
    def tree(self) -> ModuleTree:
        return self.hierarchy.tree

    @property
    def nodes(self) -> tuple[NodeAttribution, ...]:
        return self.hierarchy.nodes

    def get_modules_by_depth(self, depth: int) -> list[ModuleInfo]:
        """Modules at ``depth`` (the root is depth 0, its children depth 1), in tree order."""
        return [self.tree[p] for p in self._by_depth.get(depth, [])]

    def get_nodes_by_module(self, path: str, *, subtree: bool = False, spanning: bool = False) -> list[NodeAttribution]:
        """Nodes attributed to module ``path`` (with ``subtree``, to it or below it), in graph order.

        ``spanning=True`` adds the fused nodes attributed above it (to a common ancestor) that replaced
        some of its nodes, e.g. a ``SkipLayerNormalization`` spanning two layers.
        """
        paths = self._subtree_paths(path) if subtree else [self._check(path)]
        found = [i for p in paths for i in self._own.get(p, ())]
        if spanning:
            found += [i for p in paths for i in self._touching.get(p, ())]
        return [self.nodes[i] for i in sorted(set(found))]

    def group_operations_by_hierarchy(self, depth: int | None = None) -> dict[str, list[NodeAttribution]]:
        """Module -> its nodes, each attributed node in exactly one group, keys in tree order.

        Without ``depth``, each node is in the group of its own module. With ``depth``, nodes of deeper
        modules are grouped under their ancestor at that depth (nodes of shallower modules stay with
        their own). Unattributed nodes are in no group (see ``hierarchy.metadata.summary``).
        """
        groups: dict[str, list[int]] = collections.defaultdict(list)
        for path in self._order:
            if path in self._own:
                key = path if depth is None else ancestor_at(path, depth)
                groups[key].extend(self._own[path])
        ordered = sorted(groups, key=self._position.__getitem__)
        return {key: [self.nodes[i] for i in sorted(groups[key])] for key in ordered}

    def get_module_subtree(self, path: str) -> list[ModuleInfo]:
        """Module ``path`` and all its descendants, depth first."""
        return [self.tree[p] for p in self._subtree_paths(path)]

    # --- what users reach for next ----------------------------------------------------------------

    def get_node(self, name: str) -> NodeAttribution:
        """The node called ``name`` (the first one, if subgraphs reuse the name); ``KeyError`` if none."""
        found = self._by_name.get(name)
        if not found:
            raise KeyError(f"no node named {name!r}")
        return self.nodes[found[0]]

    def get_module_of_node(self, name: str) -> ModuleInfo | None:
        """The module a node is attributed to; ``None`` for an unattributed node."""
        module = self.get_node(name).module
        return None if module is None else self.tree[module]

    def get_node_path(self, name: str) -> list[str]:
        """Module paths from the node's module up to the root (``""``); empty for an unattributed node."""
        module = self.get_node(name).module
        if module is None:
            return []
        return list(reversed(ancestors(module)))

    def get_source_modules(self, name: str) -> tuple[str, ...]:
        """Modules of the export-time nodes a fused node replaced (its own module for any other node)."""
        node = self.get_node(name)
        if node.sources:
            return node.sources
        return () if node.module is None else (node.module,)

    def get_modules_by_class(self, class_name: str) -> list[ModuleInfo]:
        """Modules of a class, by qualified (``torch.nn.modules.linear.Linear``) or bare (``Linear``) name."""
        return [self.tree[p] for p in dict.fromkeys(self._by_class.get(class_name, []))]

    def find_modules(self, pattern: str) -> list[ModuleInfo]:
        """Modules whose path matches a glob: ``*`` is one path segment, ``**`` any number of them."""
        patterns = segments(pattern)
        return [self.tree[p] for p in self._order if _glob_match(segments(p), patterns)]

    def get_module_stats(self, path: str) -> ModuleStats:
        paths = self._subtree_paths(path)
        own = [self.nodes[i] for i in self._own.get(path, ())]
        below = [self.nodes[i] for p in paths for i in self._own.get(p, ())]
        info = self.tree[path]
        return ModuleStats(
            path=path,
            class_name=info.class_name,
            own_nodes=len(own),
            subtree_nodes=len(below),
            own_op_types=_counts(own),
            subtree_op_types=_counts(below),
            own_parameters=info.parameter_count,
            subtree_parameters=sum(self.tree[p].parameter_count for p in paths),
            own_parameter_bytes=info.parameter_bytes,
            subtree_parameter_bytes=sum(self.tree[p].parameter_bytes for p in paths),
        )

    def op_type_counts(self) -> dict[str, int]:
        """Node count by op type over the whole model."""
        return _counts(self.nodes)

    def diff(self, other: HierarchyRetriever) -> list[ModuleDiff]:
        """Per module of either model (this model's tree order first), subtree node counts in both."""
        paths = list(self._order) + [p for p in other._order if p not in self._position]
        out = []
        for path in paths:
            before = self._subtree_nodes(path) if path in self._position else []
            after = other._subtree_nodes(path) if path in other._position else []
            out.append(ModuleDiff(path, len(before), len(after), _counts(before), _counts(after)))
        return out

    # --- internals ---------------------------------------------------------------------------------

    def _check(self, path: str) -> str:
        if path not in self._position:
            raise KeyError(f"{path!r} is not a module of this model")
        return path

    def _subtree_paths(self, path: str) -> list[str]:
        start = self._position[self._check(path)]
        return self._order[start : self._end[path]]

    def _subtree_nodes(self, path: str) -> list[NodeAttribution]:
        return [self.nodes[i] for i in sorted(i for p in self._subtree_paths(path) for i in self._own.get(p, ()))]
