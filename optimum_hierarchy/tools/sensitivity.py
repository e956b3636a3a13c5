"""Which modules can be quantized: the error at the model's outputs when only one module is in int4.

:func:`module_sensitivity` ranks candidate modules of an annotated file: each ``nn.Linear`` (every module
a quantized ``MatMul`` is attributed to) by default, or each repeated block (``granularity="block"``:
``model.layers.3``, ``encoder.layer.1``). For each candidate, the model with only that module's
weights in int4 is run on the same inputs as the float model, and the outputs are compared
(``rel_l2``, ``cosine``, ``max_abs``; for an output named ``logits`` also ``kl``, the mean KL
divergence of the softmax, and ``top1``, the share of positions whose argmax agrees).

The method, and what it costs. ONNX Runtime's ``MatMulNBits`` quantization of one weight does not
depend on any other weight, so the model with only module ``m`` in int4 is the float model with ``m``'s
nodes replaced by the nodes the quantizer writes for ``m`` when it quantizes everything. So the file is
quantized once (:func:`~optimum_hierarchy.tools.int4.quantize_int4`, every candidate), the float
weights are written once as external data, and each candidate's model is the float graph with that
module's nodes swapped for its quantized ones (the same ``MatMulNBits`` node and weights), run once.
Cost: one quantization, one float run, and per candidate one ONNX Runtime session and one run; no
per-candidate quantization and no copy of the float weights. The result equals quantizing each
module alone (the tests check it against exactly that, file by file).
"""

from __future__ import annotations

__all__ = ["GRANULARITIES", "METRICS", "ModuleSensitivity", "SensitivityReport", "module_sensitivity"]

import dataclasses
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.modules import within
from optimum_hierarchy.schema import decode_model_metadata, decode_node, read_props
from optimum_hierarchy.tools.error import Metrics
from optimum_hierarchy.tools.inputs import generate_inputs
from optimum_hierarchy.tools.runtime import make_session, ort_errors

METRICS = ("rel_l2", "cosine", "max_abs", "kl", "top1")
"""What the ranking is by: ``kl`` and ``top1`` need an output named ``logits``."""
GRANULARITIES = ("linear", "block")
_BLOCK = re.compile(r"^(.*\.)?\d+$")


@dataclasses.dataclass(frozen=True)
class ModuleSensitivity:
    """The outputs' error with only ``module`` in int4."""

    module: str
    class_name: str
    nodes: tuple[str, ...]
    """The quantized nodes swapped in for the module's float ones."""
    weights: int
    """Float weight elements the module's int4 nodes replace (what quantizing it saves, in elements)."""
    metrics: dict[str, float]
    error: float
    """The ranked metric as an error (higher is worse): ``1 - cosine`` and ``1 - top1`` for those two."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SensitivityReport:
    model: Path
    precision: str
    granularity: str
    metric: str
    block_size: int
    inputs: dict[str, list[int]]
    modules: tuple[ModuleSensitivity, ...]
    """Most sensitive first."""
    all_quantized: dict[str, float]
    """The metrics with every candidate in int4 at once."""
    skipped: dict[str, str]
    """Candidates not measured, with the reason."""

    def to_json(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            "precision": self.precision,
            "granularity": self.granularity,
            "metric": self.metric,
            "block_size": self.block_size,
            "inputs": self.inputs,
            "method": "one quantization; per module, the float graph with that module's nodes swapped for its "
            "int4 nodes, one run",
            "modules": [m.to_json() for m in self.modules],
            "all_quantized": self.all_quantized,
            "skipped": self.skipped,
        }


def module_sensitivity(
    model: str | os.PathLike[str],
    *,
    precision: str = "int4",
    granularity: str = "linear",
    metric: str = "rel_l2",
    block_size: int = 128,
    symmetric: bool = True,
    feeds: Mapping[str, np.ndarray] | None = None,
    shapes: Mapping[str, int] | None = None,
    seed: int = 0,
) -> SensitivityReport:
    """Rank the modules of the annotated file ``model`` by the output error of quantizing each alone.

    See the module docstring for the method. ``feeds`` default to generated inputs
    (:func:`~optimum_hierarchy.tools.inputs.generate_inputs` with ``shapes`` and ``seed``).

    Raises:
        HierarchyError: bad arguments, a file without hierarchy, no candidate, or ONNX Runtime failing.
    """
    from optimum_hierarchy.tools.int4 import quantize_int4

    if precision != "int4":
        raise HierarchyError(f"precision {precision!r}: sensitivity measures int4 (MatMulNBits) for now.")
    if granularity not in GRANULARITIES:
        raise HierarchyError(f"--granularity {granularity}: one of {', '.join(GRANULARITIES)}.")
    if metric not in METRICS:
        raise HierarchyError(f"--metric {metric}: one of {', '.join(METRICS)}.")
    source = Path(model)
    if not source.is_file():
        raise HierarchyError(f"{source}: no such ONNX file.")
    float_proto = onnx.load(str(source))  # with the weights: written once as external data below
    meta = decode_model_metadata(read_props(float_proto), source=str(source))
    if feeds is None:
        feeds = generate_inputs(float_proto, shapes=shapes, seed=seed, source=source)
    with tempfile.TemporaryDirectory(prefix="optimum_hierarchy_sensitivity_") as tmp:
        work = Path(tmp)
        quantized_path = work / "int4.onnx"
        quantize_int4(source, quantized_path, block_size=block_size, symmetric=symmetric)
        quantized = onnx.load(str(quantized_path))
        onnx.save(
            float_proto,
            str(work / "float.onnx"),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="float.onnx.data",
            size_threshold=1024,  # small tensors stay inline: shape inference reads them (Unsqueeze axes)
        )
        light = onnx.load(str(work / "float.onnx"), load_external_data=False)
        swap = _Swap(light, quantized)
        candidates = swap.candidates(granularity)
        if not candidates:
            raise HierarchyError(f"{source}: no module has a MatMul weight ONNX Runtime quantizes to int4.")
        outputs = [o.name for o in light.graph.output]
        if metric in ("kl", "top1") and "logits" not in outputs:
            raise HierarchyError(f"--metric {metric}: needs an output named logits; {source} has {', '.join(outputs)}.")
        reference = _run(light, work, feeds, outputs)
        rows, skipped = [], {}
        for module in candidates:
            edited = swap.with_module(module, subtree=granularity == "block")
            if isinstance(edited, str):
                skipped[module] = edited
                continue
            proto, nodes, weights = edited
            values = _run(proto, work, feeds, outputs)
            measured = _metrics(outputs, reference, values)
            info = meta.tree.get(module)
            rows.append(
                ModuleSensitivity(
                    module=module,
                    class_name=info.class_name if info is not None else "",
                    nodes=nodes,
                    weights=weights,
                    metrics=measured,
                    error=_as_error(metric, measured),
                )
            )
        everything = _metrics(outputs, reference, _run(quantized, work, feeds, outputs, inline=True))
    rows.sort(key=lambda r: (-r.error, r.module))
    return SensitivityReport(
        model=source,
        precision=precision,
        granularity=granularity,
        metric=metric,
        block_size=block_size,
        inputs={k: list(np.shape(v)) for k, v in feeds.items()},
        modules=tuple(rows),
        all_quantized=everything,
        skipped=skipped,
    )


class _Swap:
    """The float graph with one module's nodes replaced by the ones the quantizer wrote for it."""

    def __init__(self, light: onnx.ModelProto, quantized: onnx.ModelProto) -> None:
        self.light = light
        self.float_keys = {(n.name, n.op_type) for n in light.graph.node}
        self.quantized_keys = {(n.name, n.op_type) for n in quantized.graph.node}
        self.new = [
            (n, _module(n)) for n in quantized.graph.node if (n.name, n.op_type) not in self.float_keys
        ]  # nodes the quantizer wrote (MatMulNBits, a Gemm's MatMul + Add), with their modules
        self.gone = [
            (i, n, _module(n)) for i, n in enumerate(light.graph.node) if (n.name, n.op_type) not in self.quantized_keys
        ]
        self.initializers = {t.name: t for t in quantized.graph.initializer}
        self.float_initializers = {t.name for t in light.graph.initializer}
        self.matrices = {t.name: math.prod(t.dims) for t in light.graph.initializer if len(t.dims) == 2}
        self.read = {t for n in light.graph.node for t in n.input} | {o.name for o in light.graph.output}
        """Every tensor the float graph reads (node inputs and graph outputs)."""

    def candidates(self, granularity: str) -> list[str]:
        modules = sorted({m for n, m in self.new if n.op_type == "MatMulNBits" and m is not None})
        if granularity == "linear":
            return modules
        blocks = set()
        for module in modules:
            parts = module.split(".")
            prefixes = [".".join(parts[:k]) for k in range(len(parts), 0, -1)]
            block = next((p for p in prefixes if _BLOCK.match(p)), None)
            if block is not None:
                blocks.add(block)
        return sorted(blocks)

    def with_module(self, module: str, *, subtree: bool) -> tuple[onnx.ModelProto, tuple[str, ...], int] | str:
        """``subtree``: the quantized nodes of the module and its submodules (a block), else its own only."""

        def mine(m: str | None) -> bool:
            return m is not None and (within(m, module) if subtree else m == module)

        new = [n for n, m in self.new if mine(m)]
        gone = [(i, n) for i, n, m in self.gone if mine(m)]
        if not new or not gone:
            return "no quantized node of its own"
        produced_new = {t for n in new for t in n.output}
        produced_gone = {t for _, n in gone for t in n.output}
        missing = sorted((produced_gone & self.read) - produced_new - {t for _, n in gone for t in n.input})
        if missing:
            return f"its quantized nodes do not produce {missing[0]!r}, which the rest of the graph reads"
        proto = onnx.ModelProto()
        proto.CopyFrom(self.light)
        removed = {i for i, _ in gone}
        kept = [n for i, n in enumerate(proto.graph.node) if i not in removed]
        first = gone[0][0]  # the first node removed: every node before it is kept, so it is also where to insert
        del proto.graph.node[:]
        proto.graph.node.extend(kept[:first] + new + kept[first:])
        needed = {t for n in new for t in n.input if t in self.initializers and t not in self.float_initializers}
        proto.graph.initializer.extend(self.initializers[t] for t in sorted(needed))
        weights = sum(self.matrices.get(name, 0) for _, n in gone for name in n.input)
        return proto, tuple(n.name for n in new if n.op_type == "MatMulNBits"), int(weights)


def _module(node: onnx.NodeProto) -> str | None:
    return decode_node(read_props(node), node.name, strict=False).module


def _run(
    proto: onnx.ModelProto, work: Path, feeds: Mapping[str, np.ndarray], outputs: Sequence[str], *, inline: bool = False
) -> list[np.ndarray]:
    session = make_session(proto, optimization_level="disable", base_dir=None if inline else work)
    try:
        values = session.run(list(outputs), dict(feeds))
    except ort_errors() as e:
        raise HierarchyError(f"ONNX Runtime failed to run the model on the given inputs: {e}") from e
    return [np.asarray(v) for v in values]


def _metrics(
    names: Sequence[str], reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]
) -> dict[str, float]:
    floats = [i for i, r in enumerate(reference) if np.issubdtype(r.dtype, np.floating)]
    base = Metrics.of([reference[i] for i in floats], [candidate[i] for i in floats])
    measured = {"rel_l2": base.rel_l2, "cosine": base.cosine, "max_abs": base.max_abs}
    if "logits" in names:
        k = list(names).index("logits")
        ref, cand = reference[k].astype(np.float64), candidate[k].astype(np.float64)
        p, q = _softmax(ref), _softmax(cand)
        kl = np.sum(p * (np.log(np.clip(p, 1e-30, None)) - np.log(np.clip(q, 1e-30, None))), axis=-1)
        measured["kl"] = float(np.mean(kl))
        measured["top1"] = float(np.mean(np.argmax(ref, axis=-1) == np.argmax(cand, axis=-1)))
    return measured


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)  # type: ignore[no-any-return]


def _as_error(metric: str, measured: Mapping[str, float]) -> float:
    if metric not in measured:
        return float("nan")
    value = measured[metric]
    return 1.0 - value if metric in ("cosine", "top1") else value
