"""Resolution of TorchScript node-name scopes (``/encoder/layer.0/attention/self/query/MatMul``) to module paths."""

from __future__ import annotations

__all__ = [
    "ScopeResolver",
    "ScopeSpeller",
    "call_suffix_base",
    "producer_name_of_output",
    "scope_segments",
    "unqualified_name",
]

import re
from collections.abc import Sequence

from optimum_hierarchy.modules import ModuleTree, join_path, relative_to, segments, within

_CALL_SUFFIX = re.compile(r"^(?P<base>.+)_(?P<n>\d+)$")
_OUTPUT_NAME = re.compile(r"^(/.+)_output_\d+$")


def producer_name_of_output(tensor_name: str) -> str | None:
    """The scoped node name in a TorchScript output tensor name (``/a/b/MatMul_output_0`` -> ``/a/b/MatMul``).

    ONNX Runtime's fused nodes keep the output tensor names of the subgraph they replaced, so this
    is where a fused node's scope survives. ``None`` for a name of another form.
    """
    match = _OUTPUT_NAME.match(tensor_name)
    return match.group(1) if match else None


def call_suffix_base(segment: str) -> str | None:
    """``act_1`` -> ``act`` (the exporter's suffix for a module called again); ``None`` without a suffix."""
    match = _CALL_SUFFIX.match(segment)
    return match.group("base") if match else None


def scope_segments(node_name: str) -> list[str] | None:
    """Scope segments of a TorchScript node name, ``None`` for a name that carries no scope.

    ``/encoder/layer.0/query/MatMul`` -> ``["encoder", "layer.0", "query"]``; ``/Shape`` -> ``[]``
    (a root-module op); ``Constant_12`` or ``onnx::Add_3`` -> ``None``.
    """
    if not node_name.startswith("/"):
        return None
    parts = node_name.split("/")
    # parts[0] is "" (leading slash); the last part is the op's own name.
    segments = parts[1:-1]
    if not parts[-1] or any(not s for s in segments):
        return None
    return segments


def unqualified_name(path: str) -> str:
    """The name the TorchScript exporter gives a module's scope: its path from the last non-numeric atom on.

    ``encoder.layer.0`` -> ``layer.0``, ``layer1.0`` -> ``layer1.0``, ``conv.parametrizations.weight`` ->
    ``weight`` (torch.onnx's ``_unqualified_variable_name``, applied to the module's first path in
    ``named_modules()`` of the exported module).
    """
    atoms = path.split(".")
    for i in range(len(atoms) - 1, -1, -1):
        if not atoms[i].isnumeric():
            return ".".join(atoms[i:])
    return path


class ScopeResolver:
    """Turns TorchScript scopes into module paths of a :class:`ModuleTree`.

    The exported module sits at ``root`` in the tree (``""`` unless a submodule such as an encoder
    was exported alone); scopes in its node names are relative to it. The TorchScript exporter
    names each called module's scope by :func:`unqualified_name` of its path, and nests the scopes
    as modules call each other; a module called more than once in the same scope gets ``_N``
    suffixes (``act_1``; the suffix is dropped only when the suffixed name matches no module). So a
    segment under the module at ``current`` names:

    * the module below ``current`` whose path has that unqualified name, the closest one
      (``layer.0`` under ``encoder`` -> ``encoder.layer.0``; ``layer.0`` under the called container
      ``...layers.0.layer`` -> ``...layers.0.layer.0``; ``weight`` under a weight-normed ``conv`` ->
      ``conv.parametrizations.weight``), through the aliases of shared modules too;
    * else, a shared module called from elsewhere: the module at ``A.segment`` for ``A`` an ancestor
      of ``current`` (``shared`` under ``model.decoder`` -> ``model.shared``);
    * else, spellings other tools write: ``current.segment`` (one segment per level,
      ``/encoder/layer/0/``) or ``root.segment`` (a full path from the exported module).

    Two closest candidates, or none, resolve to ``None``: nothing is guessed. The result is the
    module's own path (an alias resolves to the module it names).
    """

    def __init__(self, tree: ModuleTree, root: str = "") -> None:
        if root not in tree:
            raise KeyError(f"export root {root!r} is not a module of the tree")
        self._tree = tree
        self._root = root
        self._by_name: dict[str, list[str]] = {}
        for path in (*tree, *tree.aliases):
            if path:
                self._by_name.setdefault(unqualified_name(path), []).append(path)
        self._cache: dict[tuple[str, ...], str | None] = {}

    @property
    def tree(self) -> ModuleTree:
        return self._tree

    @property
    def root(self) -> str:
        return self._root

    def resolve(self, node_name: str) -> str | None:
        segments = scope_segments(node_name)
        if segments is None:
            return None
        return self.resolve_segments(segments)

    def resolve_segments(self, segments: Sequence[str]) -> str | None:
        """The module the scope ``segments`` (``["encoder", "layer.0"]``) name; ``[]`` is the exported module."""
        key = tuple(segments)
        if key not in self._cache:
            self._cache[key] = self._resolve_segments(key)
        return self._cache[key]

    def _resolve_segments(self, segments: tuple[str, ...]) -> str | None:
        current = self._root
        for segment in segments:
            step = self._step(current, segment)
            if step is None:
                return None
            current = step
        return self._tree.canonical(current)

    def _below(self, current: str, name: str) -> tuple[int, list[str]]:
        """The closest modules below ``current`` with this unqualified name, and their depth below it."""
        below = [c for c in self._by_name.get(name, ()) if within(c, current) and c != current]
        if not below:
            return -1, []
        depth = min(c.count(".") for c in below)
        return depth, [c for c in below if c.count(".") == depth]

    def _step(self, current: str, segment: str) -> str | None:
        base = call_suffix_base(segment)
        depth, closest = self._below(current, segment)
        if base is not None:  # `act_1`: the second call of `act`, unless a module closer is named act_1
            base_depth, base_closest = self._below(current, base)
            if base_closest and (not closest or base_depth < depth):
                closest = base_closest
        if closest:
            return closest[0] if len(closest) == 1 else None
        parts = segments(current)
        names = (segment, base) if base is not None else (segment,)
        for name in names:
            around = {
                path for n in range(len(parts)) if (path := ".".join([*parts[:n], name])) in self._by_name.get(name, ())
            }
            if around:
                return around.pop() if len(around) == 1 else None
        # Spellings torch does not write but other tools do (`--scope-names` of older versions wrote
        # `/encoder/layer/0/`; a full path from the exported module): one segment per level, or from the root.
        for name in names:
            for candidate in (f"{current}.{name}" if current else name, f"{self._root}.{name}" if self._root else name):
                if self._tree.canonical(candidate) is not None:
                    return candidate
        return None


class ScopeSpeller:
    """A module's TorchScript scope, spelled the way the file's exporter spelled it.

    Evidence is what the file shows (:meth:`observe_name`, :meth:`observe_call_stack`): every
    scoped node name spells, level by level, the scopes of the modules its segments resolve to
    (``/encoder/layer.0/attention/self/MatMul`` spells ``encoder`` as ``encoder``, ``encoder.layer.0``
    as ``encoder/layer.0``, and so on), and so does the node name in a TorchScript output tensor name
    (:func:`producer_name_of_output`; ONNX Runtime's fused nodes keep those); a dynamo node's call
    stack (its ``pkg.torch.onnx.name_scopes``) spells each module on it as torch's TorchScript
    exporter would have. :meth:`spell` returns the
    spelling seen most often (the first seen on a tie). A module with none, such as one whose every
    node an optimizer fused, takes the spelling of its closest spelled ancestor followed by torch's
    rule for the levels below it (:func:`unqualified_name`: a numeric atom joins the one before,
    ``layer.0``); a spelling that does not resolve back to the module is replaced by one segment per
    level, which :class:`ScopeResolver` also reads.
    """

    def __init__(self, resolver: ScopeResolver) -> None:
        self._resolver = resolver
        self._seen: dict[str, dict[tuple[str, ...], int]] = {}

    def observe_name(self, node_name: str) -> None:
        segments = scope_segments(node_name) or []
        for k in range(1, len(segments) + 1):
            spelling = tuple(segments[:k])
            module = self._resolver.resolve_segments(spelling)
            if module is not None:
                self._count(module, spelling)

    def observe_call_stack(self, modules: Sequence[str]) -> None:
        """``modules``: the paths of the modules on a call stack, outermost first, relative to the exported module."""
        spelling: tuple[str, ...] = ()
        for relative in modules:
            if not relative:
                continue
            module = self._resolver.tree.canonical(self._full(relative))
            if module is None:
                return
            spelling = (*spelling, unqualified_name(self._relative(module)))
            self._count(module, spelling)

    def spell(self, module: str) -> tuple[str, ...]:
        """The scope segments of ``module`` (``()`` for the exported module)."""
        seen = self._most_seen(module)
        if seen is not None:
            return seen
        spelling = self._from_tree(module)
        if self._resolver.resolve_segments(spelling) == module:
            return spelling
        relative = self._relative(module)
        per_level = tuple(segments(relative))
        return per_level if self._resolver.resolve_segments(per_level) == module else spelling

    def _count(self, module: str, spelling: tuple[str, ...]) -> None:
        seen = self._seen.setdefault(module, {})
        seen[spelling] = seen.get(spelling, 0) + 1

    def _most_seen(self, module: str) -> tuple[str, ...] | None:
        seen = self._seen.get(module)
        # max() keeps the first of equals, and a dict its insertion order: the first seen wins a tie.
        return max(seen, key=seen.__getitem__) if seen else None

    def _full(self, relative: str) -> str:
        root = self._resolver.root
        return join_path(root, relative) if relative else root

    def _relative(self, module: str) -> str:
        relative = relative_to(module, self._resolver.root)
        return module if relative is None else relative

    def _from_tree(self, module: str) -> tuple[str, ...]:
        relative = self._relative(module)
        atoms = segments(relative)
        # Start from the closest ancestor spelled in the file that ends a segment (the next atom is not numeric).
        start = 0
        spelling: tuple[str, ...] = ()
        for j in range(len(atoms), 0, -1):
            seen = None if j < len(atoms) and atoms[j].isnumeric() else self._most_seen(self._full(".".join(atoms[:j])))
            if seen is not None:
                start, spelling = j, seen
                break
        for k in range(start, len(atoms)):
            if k + 1 == len(atoms) or not atoms[k + 1].isnumeric():
                spelling = (*spelling, unqualified_name(".".join(atoms[: k + 1])))
        return spelling
