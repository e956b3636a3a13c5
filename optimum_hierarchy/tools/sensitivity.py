"""Which modules can be converted: the error at the model's outputs when only one module is in int4, int8 or fp16.

:func:`module_sensitivity` ranks candidate modules of an annotated float file: each ``nn.Linear`` (each
module that owns a ``MatMul`` / ``Gemm`` with a constant 2-D weight) by default, or each repeated block
(``granularity="block"``: ``model.layers.3``, ``encoder.layer.1``). For each candidate, the model with
only that module converted is run on the same inputs as the float model, and compared with it:

* at the model's outputs (``rel_l2``, ``cosine``, ``max_abs``; for an output named ``logits`` also
  ``kl``, the mean KL divergence of the softmax, and ``top1``, the share of positions whose argmax
  agrees), which ranks the candidates;
* at the module's own outputs, its boundary outputs (:mod:`optimum_hierarchy.tools.boundary`: the tensors
  its nodes hand to the rest of the graph), against the float model's same tensors: its *local* error.
  Only the module is converted, so its inputs are the float model's: this is what the module itself adds.
  Both come from the same run (the boundary tensors are extra outputs of it).

What "only that module converted" means, and how it is computed (the tests check each against one
conversion per module, file by file):

* ``int4``: ONNX Runtime's ``MatMulNBits`` quantization of the module's weights
  (:func:`~optimum_hierarchy.tools.int4.quantize_int4` with ``include_modules=[module]``).
* ``int8``: ONNX Runtime's dynamic int8 quantization of the module's ``MatMul`` nodes
  (``onnxruntime.quantization.quantize_dynamic`` with ``op_types_to_quantize=["MatMul"]`` and
  ``nodes_to_quantize`` the module's nodes; int8 weights, per tensor; activations quantized at run time
  by ``DynamicQuantizeLinear``; the quantizer first rewrites each ``Gemm`` as ``MatMul`` + ``Add``, so
  GPT-2's ``Conv1D`` is quantized too). No optimum-onnx is needed.
* ``fp16``: the module's nodes converted by ONNX Runtime's float16 converter (what
  :mod:`~optimum_hierarchy.tools.fp16` runs; ``convert_float_to_float16``, its default op block list),
  with ``keep_io_types``: a ``Cast`` to float16 on each float tensor entering the module and a ``Cast``
  to float32 on each leaving it; the rest of the model stays float32, unrounded.

Int4 and int8 quantize each weight on its own, so the model with only module ``m`` quantized is the
float model with ``m``'s replaced nodes swapped for what the quantizer computes in their place when it
quantizes everything: the file is quantized once, its float weights are written once as external data,
and each candidate is the float graph with that swap, found by data flow: the quantized nodes that
produce the tensors the rest of the graph reads from ``m``'s replaced nodes, and, back from them,
every quantized node they need that the float graph does not compute. int8's quantizer shares one
``DynamicQuantizeLinear`` among the ``MatMul`` nodes that read one tensor (q, k and v): it goes with
each of them (it depends on that tensor only). Cost: one quantization, one float run (every candidate's
boundary tensors as extra outputs), one run of the quantized file (every candidate at once), and per
candidate one ONNX Runtime session and one run: N + 2 sessions and runs for N candidates.

fp16 is not computed per weight: the converter decides per node (its block list, the inputs some ops
keep in float32) and adds ``Cast`` nodes where float16 and float32 meet, and a whole-model conversion
rounds tensors the single-module one does not. So each candidate's nodes are cut out as a small model
(with their weights, and their tensors' types: the file's value infos, or ONNX Runtime's inference of
the ones it lacks, run once for all candidates), converted
with ``keep_io_types`` and spliced back in their place: graph work on the module's nodes only (the
conversions together touch each candidate's nodes and weights once, about one whole-model conversion),
then per candidate one session and one run, as for int4 and int8 (and one more conversion, of every
candidate's nodes together, for the run with all of them converted).
"""

from __future__ import annotations

__all__ = [
    "GRANULARITIES",
    "METRICS",
    "PRECISIONS",
    "ModuleSensitivity",
    "SensitivityReport",
    "as_error",
    "check_metric",
    "module_sensitivity",
    "output_metrics",
    "sensitivity_node_data",
]

import abc
import dataclasses
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.modules import within
from optimum_hierarchy.read import read_hierarchy
from optimum_hierarchy.retriever import HierarchyRetriever
from optimum_hierarchy.schema import decode_model_metadata, decode_node, read_props
from optimum_hierarchy.tools.boundary import BoundaryFinder, ModuleBoundary, outer_scope_inputs, tensor_types
from optimum_hierarchy.tools.calibration import check_feeds
from optimum_hierarchy.tools.choices import GRANULARITIES as _GRANULARITIES
from optimum_hierarchy.tools.choices import OUTPUT_METRICS, SENSITIVITY_EXPLORER_VALUES
from optimum_hierarchy.tools.error import Metrics
from optimum_hierarchy.tools.explorer import NodeData, explorer_nodes
from optimum_hierarchy.tools.inputs import generate_inputs
from optimum_hierarchy.tools.runtime import make_session, ort_errors

PRECISIONS = ("int4", "int8", "fp16")
METRICS = OUTPUT_METRICS
"""What the ranking is by: ``kl`` and ``top1`` need an output named ``logits``."""
GRANULARITIES = _GRANULARITIES
EXPLORER_VALUES = SENSITIVITY_EXPLORER_VALUES
"""What :func:`sensitivity_node_data` can show: the ranked error at the model's outputs, or a local error."""
_BLOCK = re.compile(r"^(.*\.)?\d+$")
_LINEAR_OPS = ("MatMul", "Gemm")
_WEIGHT_NODES = {"int4": ("MatMulNBits",), "int8": ("MatMulInteger",), "fp16": _LINEAR_OPS}
"""The swapped-in nodes a row names: those that compute with the converted weights."""
_METHODS = {
    "int4": "one int4 quantization of every candidate; per module, the float graph with that module's replaced "
    "nodes swapped for the int4 nodes computing in their place, one session and one run",
    "int8": "one dynamic int8 quantization of every candidate MatMul; per module, the float graph with that "
    "module's replaced nodes swapped for the int8 nodes computing in their place (a shared DynamicQuantizeLinear "
    "included), one session and one run",
    "fp16": "per module, its nodes cut out, converted to float16 with Casts at its boundary and spliced back "
    "into the float graph; one session and one run",
}


@dataclasses.dataclass(frozen=True)
class ModuleSensitivity:
    """The error with only ``module`` converted: at the model's outputs, and at the module's own outputs."""

    module: str
    class_name: str
    nodes: tuple[str, ...]
    """The converted nodes that compute with its weights (``MatMulNBits``, ``MatMulInteger``, or its fp16
    ``MatMul`` / ``Gemm``)."""
    weights: int
    """Float weight elements converted (what converting the module saves, in elements): the 2-D weights its
    replaced nodes read for int4 and int8, every float initializer of its nodes made float16 for fp16."""
    metrics: dict[str, float]
    """At the model's outputs."""
    error: float
    """The ranked metric as an error (higher is worse): ``1 - cosine`` and ``1 - top1`` for those two."""
    local: dict[str, float] = dataclasses.field(default_factory=dict)
    """``rel_l2``, ``cosine``, ``max_abs`` at the module's boundary outputs (``local_tensors``) against the
    float model's same tensors (empty: none of them is a float tensor)."""
    local_tensors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SensitivityReport:
    model: Path
    precision: str
    granularity: str
    metric: str
    block_size: int | None
    """int4's block size (``None`` for int8 and fp16)."""
    inputs: dict[str, list[int]]
    modules: tuple[ModuleSensitivity, ...]
    """Most sensitive first."""
    all_quantized: dict[str, float]
    """The metrics at the outputs with every candidate converted at once."""
    skipped: dict[str, str]
    """Candidates not measured, with the reason."""

    @property
    def method(self) -> str:
        return _METHODS[self.precision]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            "precision": self.precision,
            "granularity": self.granularity,
            "metric": self.metric,
            "block_size": self.block_size,
            "inputs": self.inputs,
            "method": self.method,
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
    """Rank the modules of the annotated float file ``model`` by the output error of converting each alone.

    ``precision``: ``int4`` (``block_size``, ``symmetric``), ``int8`` or ``fp16``; see the module docstring
    for what each means and the method. ``feeds`` default to generated inputs
    (:func:`~optimum_hierarchy.tools.inputs.generate_inputs` with ``shapes`` and ``seed``); given ones
    must match the model's inputs (names, element types, ranks).

    Raises:
        HierarchyError: bad arguments or inputs, a file without hierarchy, no candidate, or ONNX Runtime failing.
    """
    if precision not in PRECISIONS:
        raise HierarchyError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}.")
    if granularity not in GRANULARITIES:
        raise HierarchyError(f"--granularity {granularity}: one of {', '.join(GRANULARITIES)}.")
    if metric not in METRICS:
        raise HierarchyError(f"--metric {metric}: one of {', '.join(METRICS)}.")
    source = Path(model)
    if not source.is_file():
        raise HierarchyError(f"{source}: no such ONNX file.")
    float_proto = onnx.load(str(source))  # with the weights: written once as external data below
    meta = decode_model_metadata(read_props(float_proto), source=str(source))
    outputs = [o.name for o in float_proto.graph.output]
    check_metric(metric, outputs, source)
    if feeds is None:
        feeds = generate_inputs(float_proto, shapes=shapes, seed=seed, source=source)
    else:
        feeds = check_feeds(float_proto, feeds, what="the inputs given")
    with tempfile.TemporaryDirectory(prefix="optimum_hierarchy_sensitivity_") as tmp:
        work = Path(tmp)
        onnx.save(
            float_proto,
            str(work / "float.onnx"),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="float.onnx.data",
            size_threshold=1024,  # small tensors stay inline: shape inference reads them (Unsqueeze axes)
        )
        light = onnx.load(str(work / "float.onnx"), load_external_data=False)
        modules = [_module(n) for n in light.graph.node]
        finder = BoundaryFinder(light, HierarchyRetriever(read_hierarchy(light, path=source)))
        if precision == "fp16":
            swap: _Swap = _Fp16Swap(light, work, modules, finder)
        else:
            converted = _quantize_all(precision, source, work, block_size=block_size, symmetric=symmetric)
            swap = _QuantizedSwap(light, converted, _WEIGHT_NODES[precision])
        candidates = _candidates(light, modules, swap.replaced, granularity)
        if not candidates:
            raise HierarchyError(
                f"{source}: no module has a MatMul or Gemm weight that {precision} converts "
                "(is it a float file with the hierarchy?)."
            )
        boundaries = {m: finder.of_nodes(m, nodes) for m, nodes in candidates.items()}
        swap.prepare(candidates, boundaries)
        local_names = sorted(
            {t for b in boundaries.values() for t in b.outputs if t not in outputs}
        )  # every candidate's boundary outputs: extra outputs of the one float run
        reference = _run(light, work, feeds, [*outputs, *local_names])
        rows, skipped = [], {}
        for module, nodes in candidates.items():
            edited = swap.edit(nodes, boundaries[module])
            if isinstance(edited, str):
                skipped[module] = edited
                continue
            proto, names, weights = edited
            mine = [t for t in boundaries[module].outputs if np.issubdtype(reference[t].dtype, np.floating)]
            values = _run(proto, work, feeds, [*outputs, *(t for t in mine if t not in outputs)])
            measured = output_metrics(outputs, [reference[t] for t in outputs], [values[t] for t in outputs])
            local = Metrics.of([reference[t] for t in mine], [values[t] for t in mine]) if mine else None
            info = meta.tree.get(module)
            rows.append(
                ModuleSensitivity(
                    module=module,
                    class_name=info.class_name if info is not None else "",
                    nodes=names,
                    weights=weights,
                    metrics=measured,
                    error=as_error(metric, measured),
                    local=dataclasses.asdict(local) if local is not None else {},
                    local_tensors=tuple(mine),
                )
            )
        everything = swap.everything(
            sorted({i for nodes in candidates.values() for i in nodes}), work, feeds, outputs, _run
        )
        all_converted = output_metrics(outputs, [reference[t] for t in outputs], [everything[t] for t in outputs])
    rows.sort(key=lambda r: (-r.error, r.module))
    return SensitivityReport(
        model=source,
        precision=precision,
        granularity=granularity,
        metric=metric,
        block_size=block_size if precision == "int4" else None,
        inputs={k: list(np.shape(v)) for k, v in feeds.items()},
        modules=tuple(rows),
        all_quantized=all_converted,
        skipped=skipped,
    )


def sensitivity_node_data(report: SensitivityReport, value: str = "error") -> NodeData:
    """Each node of the analyzed file that belongs to a measured candidate, with that candidate's ``value``.

    ``value``: ``error`` (the ranked metric at the model's outputs, as an error: higher is worse),
    ``local_rel_l2`` or ``local_max_abs`` (at the module's own outputs). For ``granularity="linear"`` a node
    belongs to the candidate it is attributed to; for ``block``, to the block above it.
    """
    if value not in EXPLORER_VALUES:
        raise HierarchyError(f"--model-explorer-metric {value}: one of {', '.join(EXPLORER_VALUES)}.")
    measured: dict[str, float] = {}
    for row in report.modules:
        if value == "error":
            measured[row.module] = row.error
        elif value.removeprefix("local_") in row.local:
            measured[row.module] = row.local[value.removeprefix("local_")]
    proto = onnx.load(str(report.model), load_external_data=False)  # the graph only
    values: dict[str, dict[str, float]] = {}
    unplaced = 0
    for node in explorer_nodes(proto):
        owner = _owner(node.module, measured, report.granularity)
        if owner is None:
            unplaced += 1
        else:
            values.setdefault(node.graph_id, {})[node.node_id] = measured[owner]
    name = f"{report.precision} sensitivity: " + (
        f"{report.metric} at the outputs" if value == "error" else f"{value} at the module's outputs"
    )
    note = f"{unplaced} nodes in no measured candidate module" if unplaced else ""
    return NodeData(name=name, values=values, unplaced=unplaced, unplaced_note=note)


def _owner(module: str | None, measured: Mapping[str, float], granularity: str) -> str | None:
    if module is None:
        return None
    if granularity == "linear":
        return module if module in measured else None
    return next((m for m in measured if within(module, m)), None)


# --- candidates --------------------------------------------------------------------------------------


def _module(node: onnx.NodeProto) -> str | None:
    return decode_node(read_props(node), node.name, strict=False).module


def _candidates(
    light: onnx.ModelProto, modules: Sequence[str | None], replaced: set[int], granularity: str
) -> dict[str, tuple[int, ...]]:
    """Each candidate module and the indexes of its nodes (own nodes for a Linear, the subtree for a block)."""
    linears = sorted(
        {
            m
            for i, m in enumerate(modules)
            if i in replaced and m is not None and light.graph.node[i].op_type in _LINEAR_OPS
        }
    )
    if granularity == "linear":
        chosen = linears
    else:
        blocks = set()
        for module in linears:
            parts = module.split(".")
            prefixes = [".".join(parts[:k]) for k in range(len(parts), 0, -1)]
            block = next((p for p in prefixes if _BLOCK.match(p)), None)
            if block is not None:
                blocks.add(block)
        chosen = sorted(blocks)

    def mine(m: str | None, candidate: str) -> bool:
        return m is not None and (m == candidate if granularity == "linear" else within(m, candidate))

    return {c: tuple(i for i, m in enumerate(modules) if mine(m, c)) for c in chosen}


# --- the swaps ---------------------------------------------------------------------------------------

_Edited = tuple[onnx.ModelProto, tuple[str, ...], int]
_Runner = Callable[[onnx.ModelProto, Path, Mapping[str, np.ndarray], Sequence[str]], dict[str, np.ndarray]]


class _Swap(abc.ABC):
    """One precision's way to the float graph with only some nodes converted."""

    replaced: set[int]
    """Indexes of the float nodes the conversion changes (what makes a Linear a candidate)."""

    def prepare(self, candidates: Mapping[str, Sequence[int]], boundaries: Mapping[str, ModuleBoundary]) -> None:
        """Work shared by the candidates, done once before the first :meth:`edit` (nothing by default)."""
        del candidates, boundaries

    @abc.abstractmethod
    def edit(self, nodes: Sequence[int], boundary: ModuleBoundary) -> _Edited | str:
        """The float graph with ``nodes`` converted, the converted weight nodes' names, and the weights; or why not."""

    @abc.abstractmethod
    def everything(
        self, nodes: Sequence[int], work: Path, feeds: Mapping[str, np.ndarray], outputs: Sequence[str], run: _Runner
    ) -> dict[str, np.ndarray]:
        """The outputs with every candidate's ``nodes`` converted at once."""


class _QuantizedSwap(_Swap):
    """The float graph with some nodes replaced by what the quantized graph computes in their place."""

    def __init__(self, light: onnx.ModelProto, quantized: onnx.ModelProto, weight_ops: tuple[str, ...]) -> None:
        self.light, self.quantized, self.weight_ops = light, quantized, weight_ops
        keys = {(n.name, n.op_type) for n in quantized.graph.node}
        self.replaced = {i for i, n in enumerate(light.graph.node) if (n.name, n.op_type) not in keys}
        self.producer = {t: i for i, n in enumerate(quantized.graph.node) for t in n.output if t}
        self.initializers = {t.name: t for t in quantized.graph.initializer}
        self.float_initializers = {t.name: t for t in light.graph.initializer}
        self.graph_inputs = {i.name for i in light.graph.input}
        self.graph_outputs = {o.name for o in light.graph.output}
        self.produced = {t for n in light.graph.node for t in n.output if t}
        self.readers: dict[str, set[int]] = {}
        for i, node in enumerate(light.graph.node):
            for name in (*node.input, *outer_scope_inputs(node)):
                if name:
                    self.readers.setdefault(name, set()).add(i)

    def edit(self, nodes: Sequence[int], boundary: ModuleBoundary) -> _Edited | str:
        gone = [i for i in nodes if i in self.replaced]
        if not gone:
            return "no node of its own is quantized"
        gone_set = set(gone)
        removed = {t for i in gone for t in self.light.graph.node[i].output if t}
        needed = sorted(t for t in removed if t in self.graph_outputs or self.readers.get(t, set()) - gone_set)

        def available(t: str) -> bool:
            return t in self.graph_inputs or t in self.float_initializers or (t in self.produced and t not in removed)

        chosen: set[int] = set()
        initializers: set[str] = set()
        stack, seen = list(needed), set()
        while stack:
            t = stack.pop()
            if not t or t in seen:
                continue
            seen.add(t)
            if available(t):
                ours, theirs = self.float_initializers.get(t), self.initializers.get(t)
                if (
                    ours is not None
                    and theirs is not None
                    and (ours.data_type, ours.dims) != (theirs.data_type, theirs.dims)
                ):
                    return f"the quantized graph changes the initializer {t!r} in place"
                continue
            if t in self.initializers:
                initializers.add(t)
                continue
            p = self.producer.get(t)
            if p is None:
                return f"the quantized graph does not compute {t!r}, which the rest of the graph reads"
            if p not in chosen:
                chosen.add(p)
                node = self.quantized.graph.node[p]
                stack.extend([*node.input, *outer_scope_inputs(node)])
        new = [self.quantized.graph.node[p] for p in sorted(chosen)]
        clash = next((t for n in new for t in n.output if t and available(t)), None)
        if clash is not None:
            return f"a quantized node computes {clash!r} again, which the float graph keeps"
        proto = _spliced(self.light, gone, new, [self.initializers[t] for t in sorted(initializers)])
        weights = sum(
            math.prod(self.float_initializers[name].dims)
            for i in gone
            for name in self.light.graph.node[i].input
            if name in self.float_initializers and len(self.float_initializers[name].dims) == 2
        )
        return proto, tuple(n.name for n in new if n.op_type in self.weight_ops), int(weights)

    def everything(
        self, nodes: Sequence[int], work: Path, feeds: Mapping[str, np.ndarray], outputs: Sequence[str], run: _Runner
    ) -> dict[str, np.ndarray]:
        return run(self.quantized, work, feeds, outputs)


class _Fp16Swap(_Swap):
    """The float graph with some nodes cut out, converted to float16 with Casts at their boundary, spliced back."""

    def __init__(
        self,
        light: onnx.ModelProto,
        work: Path,
        modules: Sequence[str | None],
        finder: BoundaryFinder,
    ) -> None:
        self.light, self.work, self.finder = light, work, finder
        self.weights = {t.name: t for t in light.graph.initializer}  # large ones: references to the external data
        self.replaced = {
            i
            for i, n in enumerate(light.graph.node)
            if n.op_type in _LINEAR_OPS
            and modules[i] is not None
            and any(
                name in self.weights
                and self.weights[name].data_type == onnx.TensorProto.FLOAT
                and len(self.weights[name].dims) == 2
                for name in n.input
            )
        }
        self._types: dict[str, onnx.TypeProto] = {}

    def weight(self, name: str) -> onnx.TensorProto:
        """The initializer ``name`` with its values (read from the external data written once)."""
        tensor = onnx.TensorProto()
        tensor.CopyFrom(self.weights[name])
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            from onnx.external_data_helper import load_external_data_for_tensor

            load_external_data_for_tensor(tensor, str(self.work))
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
        return tensor

    def types(self, names: Sequence[str]) -> dict[str, onnx.TypeProto]:
        missing = [n for n in names if n not in self._types]
        if missing:
            self._types.update(tensor_types(self.light, missing))
        return {n: self._types[n] for n in names}

    def prepare(self, candidates: Mapping[str, Sequence[int]], boundaries: Mapping[str, ModuleBoundary]) -> None:
        """Infer the types of every tensor of the candidates' nodes at once (at most one probe session)."""
        names = {t for nodes in candidates.values() for i in nodes for t in self.light.graph.node[i].output if t}
        names |= {t for b in boundaries.values() for t in b.inputs}
        self.types(sorted(names))

    def edit(self, nodes: Sequence[int], boundary: ModuleBoundary) -> _Edited | str:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        graph = self.light.graph
        internal = [t for i in nodes for t in graph.node[i].output if t and t not in boundary.outputs]
        types = self.types([*boundary.inputs, *boundary.outputs, *internal])
        sub = onnx.helper.make_model(
            onnx.helper.make_graph(
                [graph.node[i] for i in nodes],
                "module",
                [onnx.helper.make_value_info(n, types[n]) for n in boundary.inputs],
                [onnx.helper.make_value_info(n, types[n]) for n in boundary.outputs],
                initializer=[self.weight(n) for n in boundary.initializers],
                value_info=[onnx.helper.make_value_info(n, types[n]) for n in internal],
            ),
            opset_imports=self.light.opset_import,
            ir_version=self.light.ir_version,
        )
        sub.functions.extend(self.light.functions)
        try:
            converted = convert_float_to_float16(sub, keep_io_types=True, disable_shape_infer=True)
        except (ValueError, AssertionError, KeyError) as e:
            return f"ONNX Runtime's float16 converter failed on its nodes: {e}"
        was_float = {n for n in boundary.initializers if self.weights[n].data_type == onnx.TensorProto.FLOAT}
        weights = sum(
            math.prod(t.dims)
            for t in converted.graph.initializer
            if t.name in was_float and t.data_type == onnx.TensorProto.FLOAT16
        )
        own_names = {graph.node[i].name for i in nodes}
        _rename_inside(converted.graph, keep=set(boundary.inputs) | set(boundary.outputs), own_nodes=own_names)
        proto = _spliced(self.light, nodes, list(converted.graph.node), list(converted.graph.initializer))
        names = tuple(graph.node[i].name for i in nodes if i in self.replaced)
        return proto, names, int(weights)

    def everything(
        self, nodes: Sequence[int], work: Path, feeds: Mapping[str, np.ndarray], outputs: Sequence[str], run: _Runner
    ) -> dict[str, np.ndarray]:
        edited = self.edit(nodes, self.finder.of_nodes("", nodes))
        if isinstance(edited, str):
            raise HierarchyError(f"fp16: the candidates cannot be converted together: {edited}")
        return run(edited[0], work, feeds, outputs)


_PREFIX = "fp16::"


def _rename_inside(graph: onnx.GraphProto, *, keep: set[str], own_nodes: set[str]) -> None:
    """Prefix every tensor of the converted module (its initializers included) but its boundary, and the nodes
    the converter added: none can clash with a tensor or node of the float graph it is spliced into."""
    names = {t.name for t in graph.initializer} | {t for n in graph.node for t in n.output if t}
    rename = {n: _PREFIX + n for n in names if n not in keep}

    def apply(g: onnx.GraphProto) -> None:
        for node in g.node:
            node.input[:] = [rename.get(t, t) for t in node.input]
            node.output[:] = [rename.get(t, t) for t in node.output]
            for attribute in node.attribute:
                for body in (attribute.g,) if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                    apply(body)

    apply(graph)
    for t in graph.initializer:
        t.name = rename.get(t.name, t.name)
    for node in graph.node:
        if node.name not in own_nodes:
            node.name = _PREFIX + node.name


def _spliced(
    light: onnx.ModelProto,
    removed: Sequence[int],
    new: Sequence[onnx.NodeProto],
    initializers: Sequence[onnx.TensorProto],
) -> onnx.ModelProto:
    """A copy of ``light`` with the nodes ``removed`` taken out, ``new`` put where the first of them was."""
    proto = onnx.ModelProto()
    proto.CopyFrom(light)
    gone = set(removed)
    kept = [n for i, n in enumerate(proto.graph.node) if i not in gone]
    first = min(removed)  # every node before it is kept, so it is also where to insert
    del proto.graph.node[:]
    proto.graph.node.extend([*kept[:first], *new, *kept[first:]])
    proto.graph.initializer.extend(initializers)
    return proto


def _quantize_all(precision: str, source: Path, work: Path, *, block_size: int, symmetric: bool) -> onnx.ModelProto:
    """``source`` with every candidate weight quantized, once (int4: ``MatMulNBits``; int8: dynamic, MatMul)."""
    target = work / f"{precision}.onnx"
    if precision == "int4":
        from optimum_hierarchy.tools.int4 import quantize_int4

        quantize_int4(source, target, block_size=block_size, symmetric=symmetric)
    else:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        try:
            quantize_dynamic(
                source,
                target,
                op_types_to_quantize=["MatMul"],
                weight_type=QuantType.QInt8,
                use_external_data_format=True,
            )
        except (ValueError, RuntimeError, onnx.checker.ValidationError) as e:
            raise HierarchyError(f"{source}: ONNX Runtime's dynamic int8 quantization failed: {e}") from e
    return onnx.load(str(target))


# --- runs and metrics --------------------------------------------------------------------------------


def _run(
    proto: onnx.ModelProto, work: Path, feeds: Mapping[str, np.ndarray], names: Sequence[str]
) -> dict[str, np.ndarray]:
    outputs = {o.name for o in proto.graph.output}
    session = make_session(
        proto, optimization_level="disable", extra_outputs=[n for n in names if n not in outputs], base_dir=work
    )
    try:
        values = session.run(list(names), dict(feeds))
    except ort_errors() as e:
        raise HierarchyError(f"ONNX Runtime failed to run the model on the given inputs: {e}") from e
    return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}


def output_metrics(
    names: Sequence[str], reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]
) -> dict[str, float]:
    """The metrics of :data:`METRICS` between two runs' outputs (``names``, in order): over the float outputs,
    and ``kl`` and ``top1`` of the output named ``logits`` if there is one."""
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


def check_metric(metric: str, outputs: Sequence[str], source: Path) -> None:
    """Raise if ``metric`` cannot be measured on a model with these ``outputs`` (``kl``, ``top1``: no ``logits``)."""
    if metric in ("kl", "top1") and "logits" not in outputs:
        raise HierarchyError(
            f"--metric {metric}: needs an output named logits; {source} has {', '.join(outputs)}. "
            "Use rel_l2, cosine or max_abs."
        )


def as_error(metric: str, measured: Mapping[str, float]) -> float:
    """``metric`` of :func:`output_metrics` as an error, higher worse: ``1 - cosine``, ``1 - top1``; NaN if not
    measured."""
    if metric not in measured:
        return float("nan")
    value = measured[metric]
    return 1.0 - value if metric in ("cosine", "top1") else value
