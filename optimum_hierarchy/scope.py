"""Resolution of TorchScript node-name scopes (``/encoder/layer.0/attention/self/query/MatMul``) to module paths."""

from __future__ import annotations

__all__ = ["ScopeResolver", "call_suffix_base", "producer_name_of_output", "scope_segments"]

import re

from optimum_hierarchy.schema import ModuleTree

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


class ScopeResolver:
    """Turns TorchScript scopes into module paths of a :class:`ModuleTree`.

    The exported module sits at ``root`` in the tree (``""`` unless a submodule such as an encoder
    was exported alone); scopes in its node names are relative to it. Each segment is resolved
    against the module tree, which handles the known quirks of the TorchScript exporter:

    * a segment is a child name relative to the enclosing scope (``layer.0`` under ``encoder``) or
      a full path from the exported module when a container level repeats
      (``/layer1/layer1.0/conv1`` -> ``layer1.0.conv1``);
    * a module called more than once in the same scope gets ``_N`` suffixes (``act_1``); the
      suffix is dropped only when the suffixed name is not itself a module.

    A scope with a segment that matches no module resolves to ``None``: nothing is guessed.
    """

    def __init__(self, tree: ModuleTree, root: str = "") -> None:
        if root not in tree:
            raise KeyError(f"export root {root!r} is not a module of the tree")
        self._tree = tree
        self._root = root
        self._cache: dict[tuple[str, ...], str | None] = {}

    def resolve(self, node_name: str) -> str | None:
        segments = scope_segments(node_name)
        if segments is None:
            return None
        key = tuple(segments)
        if key not in self._cache:
            self._cache[key] = self._resolve_segments(key)
        return self._cache[key]

    def _join(self, base: str, name: str) -> str:
        return f"{base}.{name}" if base else name

    def _resolve_segments(self, segments: tuple[str, ...]) -> str | None:
        current = self._root
        for segment in segments:
            step = self._step(current, segment)
            if step is None:
                base = call_suffix_base(segment)
                if base is not None:
                    step = self._step(current, base)
            if step is None:
                return None
            current = step
        return current

    def _step(self, current: str, segment: str) -> str | None:
        for candidate in (self._join(current, segment), self._join(self._root, segment)):
            if candidate in self._tree:
                return candidate
        return None
