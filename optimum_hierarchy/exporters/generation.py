"""Greedy generation through the components of a transformers export, to check it against PyTorch's ``generate``.

``transformers.exporters`` gives each exported component a runner (ONNX Runtime for ONNX) that takes
the forward arguments the component was traced with and returns the model's own output class
(``.logits``, ``.cache``). :func:`generate_with_components` runs PyTorch's own ``model.generate``
with the model's forwards replaced by those runners: the first call of the model's ``forward`` by
``prefill`` (or, for a multimodal export, the ``language_model`` and ``lm_head`` components inside
that call), every later call by ``decode``. The generation loop, the cache bookkeeping and the
stopping rules stay PyTorch's, so the tokens differ from ``generate``'s only where the exported
graphs compute something else. Parts that were not exported (a Whisper encoder, a LLaVA vision
tower, the token merge) run in PyTorch, as they do when the export is used.
"""

from __future__ import annotations

__all__ = ["GenerationCheck", "check_generation", "generate_with_components"]

import contextlib
import dataclasses
import functools
from collections.abc import Iterator, Mapping
from typing import Any

from optimum_hierarchy.errors import HierarchyExportError
from optimum_hierarchy.exporters.pytorch import replaced_forward

PREFILL, DECODE = "prefill", "decode"


@dataclasses.dataclass(frozen=True)
class GenerationCheck:
    """Greedy tokens from PyTorch's ``generate`` and from the exported components, on the same inputs."""

    reference: tuple[tuple[int, ...], ...]
    """Per batch row, what ``generate`` returned after the prompt (a decoder-only model's ``input_ids``; an
    encoder-decoder's output as its ``generate`` returns it, which may start with its decoder prompt)."""
    exported: tuple[tuple[int, ...], ...]
    new_tokens: int = 0
    """The ``max_new_tokens`` (and ``min_new_tokens``) asked of both."""

    @property
    def ok(self) -> bool:
        return self.reference == self.exported

    def describe(self) -> str:
        n = len(self.reference[0]) if self.reference else 0
        if self.ok:
            return (
                f"greedy generation through the exported components equals PyTorch's generate "
                f"({self.new_tokens} new tokens asked, {n} tokens compared)"
            )
        return (
            f"greedy generation differs from PyTorch's generate: PyTorch {list(map(list, self.reference))}, "
            f"exported components {list(map(list, self.exported))}"
        )


def _runner_call(runner: Any, kwargs: Mapping[str, Any]) -> Any:
    traced = runner.metadata.kwargs
    return runner(**{k: v for k, v in kwargs.items() if k in traced and v is not None})


@contextlib.contextmanager
def _components_as_forward(model: Any, runners: Mapping[str, Any]) -> Iterator[None]:
    """``model``'s forwards replaced by the runners, as described in the module docstring."""
    if DECODE not in runners:
        raise HierarchyExportError(f"the export has no {DECODE!r} component (components: {sorted(runners)})")
    calls = {"n": 0}
    original = model.forward
    inner: dict[str, Any] = {}
    if PREFILL not in runners:  # a multimodal export: the prefill's parts are components of their own
        for name in runners:
            if name == DECODE:
                continue
            sub = _submodule_of_component(model, name)
            if sub is None:
                raise HierarchyExportError(f"component {name!r}: no module of {type(model).__name__} is called that")
            inner[name] = sub

    @functools.wraps(original)
    def forward(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if args:
            raise HierarchyExportError("generate passed positional arguments to forward; expected keywords only")
        if calls["n"] > 1:
            return _runner_call(runners[DECODE], kwargs)
        if PREFILL in runners:
            return _runner_call(runners[PREFILL], kwargs)
        with contextlib.ExitStack() as stack:
            for name, sub in inner.items():
                stack.enter_context(replaced_forward(sub, _keyword_runner(sub, runners[name])))
            return original(**kwargs)

    with replaced_forward(model, forward):
        yield


def _keyword_runner(module: Any, runner: Any) -> Any:
    import inspect

    signature = inspect.signature(module.forward)

    def forward(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        arguments = dict(bound.arguments)
        for name, parameter in signature.parameters.items():
            if parameter.kind == inspect.Parameter.VAR_KEYWORD:
                arguments.update(arguments.pop(name, {}))
        return _runner_call(runner, arguments)

    return forward


def _submodule_of_component(model: Any, name: str) -> Any:
    """The module ``export_for_generation`` exported as component ``name`` (an attribute of the model or its base)."""
    if name == "language_model":
        decoder = model.get_decoder()
        if decoder is not None and decoder is not model:
            return decoder
    if name.endswith("_encoder"):
        encoder = model.get_encoder(modality=name.removesuffix("_encoder"))
        if encoder is not None and encoder is not model:
            return encoder
    for root in (model, getattr(model, "base_model", None)):
        sub = getattr(root, name, None) if root is not None else None
        if sub is not None:
            return sub
    return None


def generate_with_components(
    model: Any, exported: Any, inputs: Mapping[str, Any], max_new_tokens: int = 5
) -> tuple[tuple[int, ...], ...]:
    """Greedy new tokens of ``model.generate(**inputs)`` with its forwards run by ``exported``'s components."""
    import copy

    import torch

    with torch.no_grad(), _components_as_forward(model, exported.runners):
        out = model.generate(**copy.deepcopy(dict(inputs)), **_greedy(max_new_tokens))
    return _new_tokens(model, out, inputs)


def check_generation(model: Any, exported: Any, inputs: Mapping[str, Any], max_new_tokens: int = 5) -> GenerationCheck:
    """PyTorch's greedy ``generate`` and :func:`generate_with_components` on the same inputs."""
    import copy

    import torch

    with torch.no_grad():
        reference = model.generate(**copy.deepcopy(dict(inputs)), **_greedy(max_new_tokens))
    return GenerationCheck(
        reference=_new_tokens(model, reference, inputs),
        exported=generate_with_components(model, exported, inputs, max_new_tokens),
        new_tokens=max_new_tokens,
    )


def _greedy(max_new_tokens: int) -> dict[str, Any]:
    return {"max_new_tokens": max_new_tokens, "min_new_tokens": max_new_tokens, "do_sample": False, "num_beams": 1}


def _new_tokens(model: Any, output: Any, inputs: Mapping[str, Any]) -> tuple[tuple[int, ...], ...]:
    sequences = output if not hasattr(output, "sequences") else output.sequences
    # a decoder-only model's generate returns the prompt first; an encoder-decoder's, its own choice (compared whole)
    prompt = None if getattr(model.config, "is_encoder_decoder", False) else inputs.get("input_ids")
    start = int(prompt.shape[1]) if prompt is not None else 0
    return tuple(tuple(int(t) for t in row[start:]) for row in sequences.tolist())
