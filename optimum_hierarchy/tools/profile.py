"""Time per module: run an annotated model in ONNX Runtime with its profiler and add up kernel time by module.

ONNX Runtime optimizes the graph when it creates a session (it fuses nodes and names the new ones), so
the node names in its profile are those of the graph it runs, not those of the file. That graph is
saved (``SessionOptions.optimized_model_filepath``) into a temporary directory and re-attributed from
the provenance the file carries (:func:`~optimum_hierarchy.annotation.file.annotate_proto`), exactly as
after ``ORTOptimizer``; each kernel event is then mapped by node name to that graph and its module.

*Node time* is the sum of the kernel events of the measured runs (warm-up runs are excluded by the
timestamps of ONNX Runtime's ``model_run`` events). A control-flow node (``If``, ``Loop``, ``Scan``)
is timed by ONNX Runtime including its body, whose nodes are also timed on their own: the body's time
is counted once, for the body's nodes, and the control-flow node keeps the rest. Every kernel event
is either attributed to a module or listed as unattributed with a reason, so the modules' own times
and the unattributed time add up to the total.
"""

from __future__ import annotations

__all__ = [
    "OPTIMIZATION_LEVELS",
    "PROFILE_RESULT",
    "ModuleProfile",
    "ModuleTime",
    "NodeTime",
    "UnattributedTime",
    "aggregate_to_depth",
    "profile_model",
    "read_profile",
]

import bisect
import collections
import dataclasses
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from optimum_hierarchy.annotation.file import annotate_proto, load_model_proto
from optimum_hierarchy.errors import HierarchyError
from optimum_hierarchy.read import ModelHierarchy, NodeAttribution, read_hierarchy
from optimum_hierarchy.schema import Level, ModuleTree, decode_model_metadata, read_props, replace_props
from optimum_hierarchy.tools.inputs import generate_inputs
from optimum_hierarchy.tools.result_file import ResultFormat, ResultSource
from optimum_hierarchy.tools.runtime import OPTIMIZATION_LEVELS, model_file, ort_errors, ort_optimization_level
from optimum_hierarchy.walk import iter_proto_nodes, subgraphs
from optimum_hierarchy.wire import read_model_file

logger = logging.getLogger(__name__)


_KERNEL_SUFFIX = "_kernel_time"
_NOT_FOUND = "no node of this name in the graph ONNX Runtime ran"


@dataclasses.dataclass(frozen=True)
class ModuleTime:
    """Node time of one module over the measured runs; ``own`` is its own nodes, ``subtree`` adds its descendants."""

    path: str
    class_name: str
    depth: int
    own_us: int
    """Microseconds of kernel time of the nodes attributed to this module, summed over the measured runs."""
    subtree_us: int
    own_calls: int
    """Kernel events (node executions) of its own nodes over the measured runs."""
    subtree_calls: int
    own_nodes: int
    """Distinct nodes (of the graph ONNX Runtime ran) that were executed."""
    subtree_nodes: int
    own_share: float
    """``own_us`` over the total node time of the profile (0 to 1)."""
    subtree_share: float


@dataclasses.dataclass(frozen=True)
class UnattributedTime:
    """Kernel events that could not be given a module, grouped by node name."""

    node: str
    """The node name as ONNX Runtime's profile gives it (an unnamed node appears as ``OpType_index``)."""
    op_type: str
    reason: str
    calls: int
    time_us: int


@dataclasses.dataclass(frozen=True)
class NodeTime:
    """Kernel time of one node of the graph ONNX Runtime ran, and the node of the file it stands for."""

    node: str
    """The node name as ONNX Runtime's profile gives it."""
    op_type: str
    module: str | None
    """Its module; ``None`` when the events are unattributed (the reason is in ``unattributed``)."""
    calls: int
    time_us: int
    outputs: tuple[str, ...]
    """Its output tensors in the graph ONNX Runtime ran. A node ONNX Runtime created by fusion produces the
    tensors of the last nodes of the subgraph it replaced, which is how it is placed on the file's nodes
    (:func:`optimum_hierarchy.tools.explorer.profile_node_data`)."""


@dataclasses.dataclass(frozen=True)
class ModuleProfile:
    """Where the node time of a model goes, by module; all times are sums over ``runs`` measured runs."""

    model: Path
    optimization_level: str
    runs: int
    warmup: int
    inputs: Mapping[str, tuple[int, ...]]
    """The shape of each generated input."""
    graph_nodes: int
    """Nodes in the graph ONNX Runtime ran (after its optimizations)."""
    run_us: int
    """Wall time of the measured runs (``model_run`` events), for comparison with ``total_us``."""
    total_us: int
    """Node time: all kernel events of the measured runs (control-flow bodies counted once)."""
    node_events: int
    modules: tuple[ModuleTime, ...]
    """Depth first from the root; modules none of whose nodes ran are left out (the root never is)."""
    unattributed: tuple[UnattributedTime, ...]
    warmup_events: int
    """Kernel events of the warm-up runs, excluded from every number above."""
    nodes: tuple[NodeTime, ...] = ()
    """Every node that ran, by decreasing time."""
    depth: int | None = None
    """Set by :func:`aggregate_to_depth`: deeper modules are counted in their ancestor at this depth."""

    @property
    def attributed_us(self) -> int:
        return sum(m.own_us for m in self.modules)

    @property
    def unattributed_us(self) -> int:
        return sum(u.time_us for u in self.unattributed)

    @property
    def unattributed_events(self) -> int:
        return sum(u.calls for u in self.unattributed)

    def module(self, path: str) -> ModuleTime:
        """The entry of module ``path``; ``KeyError`` if it is not in the profile."""
        for entry in self.modules:
            if entry.path == path:
                return entry
        raise KeyError(f"{path!r} is not a module of this profile (or none of its nodes ran)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data in a fixed order (what ``optimum-cli hierarchy profile --json`` prints)."""
        return {
            "model": str(self.model),
            "optimization_level": self.optimization_level,
            "runs": self.runs,
            "warmup": self.warmup,
            "depth": self.depth,
            "inputs": {name: list(shape) for name, shape in self.inputs.items()},
            "graph_nodes": self.graph_nodes,
            "run_us": self.run_us,
            "total_us": self.total_us,
            "attributed_us": self.attributed_us,
            "unattributed_us": self.unattributed_us,
            "node_events": self.node_events,
            "unattributed_events": self.unattributed_events,
            "warmup_events": self.warmup_events,
            "modules": [dataclasses.asdict(m) for m in self.modules],
            "unattributed": [dataclasses.asdict(u) for u in self.unattributed],
            "nodes": [dataclasses.asdict(n) for n in self.nodes],
        }


PROFILE_RESULT = ResultFormat("a profile result", "optimum-cli hierarchy profile MODEL --json > profile.json")


def read_profile(source: ResultSource) -> ModuleProfile:
    """The profile :meth:`ModuleProfile.to_dict` wrote (``hierarchy profile --json``): a file, or its parsed JSON.

    Raises:
        HierarchyError: the source is not such a profile; the message names it, the field and the command.
    """
    fmt = PROFILE_RESULT
    name, data = fmt.load(source)
    rows = fmt.rows(name, data, "path")
    runs = data.get("runs")
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise fmt.refuse(name, "expected 'runs', a positive number of runs")
    modules = []
    for row in rows:
        where = f"module {row['path']!r}"
        if not all(isinstance(row.get(k), int) and not isinstance(row.get(k), bool) for k in ("own_us", "subtree_us")):
            raise fmt.refuse(name, f"{where}: 'subtree_us' and 'own_us' must be microseconds")
        counts = {k: fmt.get(name, row, k, "count", where) for k in _MODULE_COUNTS}
        shares = {k: fmt.get(name, row, k, "share", where) for k in ("own_share", "subtree_share")}
        modules.append(
            ModuleTime(path=row["path"], class_name=fmt.get(name, row, "class_name", "text", where), **counts, **shares)
        )
    unattributed = [
        UnattributedTime(
            node=fmt.get(name, u, "node", "text", "unattributed"),
            op_type=fmt.get(name, u, "op_type", "text", "unattributed"),
            reason=fmt.get(name, u, "reason", "text", "unattributed"),
            calls=fmt.get(name, u, "calls", "count", "unattributed"),
            time_us=fmt.get(name, u, "time_us", "count", "unattributed"),
        )
        for u in fmt.objects(name, data, "unattributed")
    ]
    nodes = [
        NodeTime(
            node=fmt.get(name, n, "node", "text", "nodes"),
            op_type=fmt.get(name, n, "op_type", "text", "nodes"),
            module=fmt.get(name, n, "module", "optional text", "nodes"),
            calls=fmt.get(name, n, "calls", "count", "nodes"),
            time_us=fmt.get(name, n, "time_us", "count", "nodes"),
            outputs=tuple(fmt.get(name, n, "outputs", "texts", "nodes")),
        )
        for n in fmt.objects(name, data, "nodes")
    ]
    depth = data.get("depth")
    if depth is not None:
        depth = fmt.get(name, data, "depth", "count")
    inputs = fmt.get(name, data, "inputs", "shapes")
    return ModuleProfile(
        model=Path(fmt.get(name, data, "model", "text")),
        optimization_level=fmt.get(name, data, "optimization_level", "text"),
        runs=runs,
        inputs={k: tuple(v) for k, v in inputs.items()},
        modules=tuple(modules),
        unattributed=tuple(unattributed),
        nodes=tuple(nodes),
        depth=depth,
        **{k: fmt.get(name, data, k, "count") for k in _PROFILE_COUNTS},
    )


_MODULE_COUNTS = ("depth", "own_us", "subtree_us", "own_calls", "subtree_calls", "own_nodes", "subtree_nodes")
_PROFILE_COUNTS = ("warmup", "graph_nodes", "run_us", "total_us", "node_events", "warmup_events")


def profile_model(
    path: str | os.PathLike[str],
    *,
    runs: int = 10,
    warmup: int = 1,
    shapes: Mapping[str, int] | None = None,
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    optimization_level: str = "all",
    intra_op_threads: int | None = None,
    seed: int = 0,
) -> ModuleProfile:
    """Run the annotated model at ``path`` ``warmup + runs`` times on CPU with ONNX Runtime's profiler.

    Args:
        path: an annotated ``.onnx`` file, or a directory holding exactly one.
        runs: measured runs; times are summed over them.
        warmup: runs before those, left out of the measurement.
        shapes: values of symbolic input dimensions (``{"batch_size": 1}``); see
            :func:`~optimum_hierarchy.tools.inputs.generate_inputs`.
        config: the model's ``config.json`` (a path, its directory or a dict); default: the one beside the file.
        optimization_level: ONNX Runtime's graph optimizations, one of :data:`OPTIMIZATION_LEVELS`
            (``"all"``, the default, is what a deployment runs).
        intra_op_threads: ONNX Runtime's intra-op thread count (default: its own choice).
        seed: of the generated inputs.

    Raises:
        MissingHierarchyError: the file carries no hierarchy (annotate it first).
        HierarchyError: bad arguments, inputs that cannot be generated, or ONNX Runtime failing.
    """
    if runs < 1 or warmup < 0:
        raise HierarchyError(f"runs must be at least 1 and warmup at least 0 (got runs={runs}, warmup={warmup}).")
    if optimization_level not in OPTIMIZATION_LEVELS:
        raise HierarchyError(
            f"optimization level {optimization_level!r}: expected one of {', '.join(OPTIMIZATION_LEVELS)}."
        )
    file = model_file(path)
    with read_model_file(file) as source:  # metadata and inputs only: no weight values
        proto = source.proto
    metadata = decode_model_metadata(read_props(proto), source=str(file))
    if config is None and (file.parent / "config.json").is_file():
        config = file.parent / "config.json"
    feeds = generate_inputs(proto, shapes=shapes, config=config, seed=seed, source=file)

    with tempfile.TemporaryDirectory(prefix="optimum_hierarchy_profile_") as tmp:
        events, saved_path = _run_profiled(
            file,
            feeds=feeds,
            tmp=Path(tmp),
            total_runs=runs + warmup,
            level=optimization_level,
            intra_op_threads=intra_op_threads,
        )
        saved = load_model_proto(saved_path)
    # The saved graph keeps model metadata; copy ours anyway so that re-attribution reads the file's own.
    replace_props(saved.metadata_props, read_props(proto), Level.MODEL)
    summary, _ = annotate_proto(saved, metadata.tree, metadata.export)
    logger.info("%s: graph run by ONNX Runtime (%s): %s", file, optimization_level, summary.describe())
    hierarchy = read_hierarchy(saved)

    windows = _run_windows(events, runs + warmup)
    measured = windows[warmup:]
    starts = [start for start, _ in windows]
    per_run = [0] * len(windows)
    timed: list[tuple[str, str, int]] = []
    for name, op_type, ts, exclusive in _kernel_times(events, _body_owners(saved.graph)):
        index = bisect.bisect_right(starts, ts) - 1
        if index < 0 or ts > windows[index][1]:
            raise HierarchyError(
                f"ONNX Runtime's profile has a kernel event of {name!r} outside every model run; the profile "
                "format is not the one this version of optimum_hierarchy reads. Report this with your onnxruntime "
                "version."
            )
        per_run[index] += 1
        if index >= warmup:
            timed.append((name, op_type, exclusive))
    if 0 in per_run[warmup:]:
        raise HierarchyError(
            "ONNX Runtime's profile has no kernel event in a measured run (its profiler stops recording past a "
            "maximum number of events); lower --runs."
        )
    return _build_profile(
        file=file,
        level=optimization_level,
        runs=runs,
        warmup=warmup,
        feeds=feeds,
        hierarchy=hierarchy,
        timed=timed,
        run_us=sum(end - start for start, end in measured),
        warmup_events=sum(per_run[:warmup]),
        node_outputs=_node_outputs(saved.graph),
    )


def _run_profiled(
    file: Path,
    *,
    feeds: Mapping[str, np.ndarray],
    tmp: Path,
    total_runs: int,
    level: str,
    intra_op_threads: int | None,
) -> tuple[list[dict[str, Any]], Path]:
    """Run the session with the profiler; return its events and the path of the graph it ran."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort_optimization_level(level)
    saved = tmp / "session_graph.onnx"
    options.optimized_model_filepath = str(saved)
    # Weights go to a side file: the graph is read without them, and a model over 2 GB could not be saved inline.
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "weights.bin")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp / "profile")
    # At "all", ORT warns that the saved graph holds hardware-specific layouts; it is only read here, never deployed.
    options.log_severity_level = 3
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    errors = ort_errors()
    try:
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    except errors as e:
        raise HierarchyError(f"{file}: ONNX Runtime cannot create a session for it ({str(e).strip()}).") from e
    try:
        for _ in range(total_runs):
            session.run(None, dict(feeds))
    except errors as e:
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feeds.items())
        raise HierarchyError(
            f"{file}: ONNX Runtime failed to run it on generated inputs ({shapes}): {str(e).strip()}. "
            "Give the right sizes with --shape NAME=VALUE (or shapes=...)."
        ) from e
    finally:
        # Always write the profile while the temporary directory exists.
        profile = Path(session.end_profiling())
    if not saved.is_file():
        raise HierarchyError(f"{file}: ONNX Runtime did not save the graph it ran; try another optimization level.")
    try:
        events = json.loads(profile.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HierarchyError(f"{profile}: ONNX Runtime's profile cannot be read ({e}).") from e
    if not isinstance(events, list):
        raise HierarchyError(f"{profile}: ONNX Runtime's profile is not a list of events.")
    return events, saved


def _run_windows(events: Iterable[Mapping[str, Any]], expected: int) -> list[tuple[int, int]]:
    """(start, end) in microseconds of each ``model_run``, in order."""
    windows = sorted(
        (int(e["ts"]), int(e["ts"]) + int(e["dur"]))
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    if len(windows) != expected:
        raise HierarchyError(
            f"ONNX Runtime's profile has {len(windows)} model_run events for {expected} runs; the profile format is "
            "not the one this version of optimum_hierarchy reads. Report this with your onnxruntime version."
        )
    return windows


def _body_owners(graph: onnx.GraphProto, owner: str | None = None) -> dict[str, str]:
    """Node name -> name of the control-flow node (``If``, ``Loop``, ``Scan``, ...) whose body holds it."""
    owners: dict[str, str] = {}
    for node in graph.node:
        if owner is not None:
            owners.setdefault(node.name, owner)
        for body in subgraphs(node):
            owners.update(_body_owners(body, node.name))
    return owners


def _kernel_times(events: Iterable[Mapping[str, Any]], owners: Mapping[str, str]) -> list[tuple[str, str, int, int]]:
    """(node name, op type, start, exclusive microseconds) of each kernel event, in time order.

    Only ``Node`` events named ``<node>_kernel_time`` are node time (fences and session events are not).
    A control-flow node's event includes the events of its body's nodes; each of those is taken off the
    latest event of its owner that started before it on the same thread, so that time is counted once.
    (Matching by structure and start time, not by interval ends, is immune to the microsecond rounding.)
    """
    kernels = []
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") == "Node" and name.endswith(_KERNEL_SUFFIX):
            op_type = str(e.get("args", {}).get("op_name", ""))
            kernels.append((int(e["ts"]), int(e["dur"]), e.get("tid"), name[: -len(_KERNEL_SUFFIX)], op_type))
    owner_names = set(owners.values())
    # An owner starts no later than its body's nodes; on a tie (rounding), the longer event, then the owner, first.
    kernels.sort(key=lambda k: (k[0], -k[1], k[3] not in owner_names))
    exclusive = [k[1] for k in kernels]
    latest: dict[tuple[Any, str], int] = {}
    for i, (_, dur, tid, node, _) in enumerate(kernels):
        owner = owners.get(node)
        if owner is not None and (tid, owner) in latest:
            exclusive[latest[(tid, owner)]] -= dur
        if node in owner_names:
            latest[(tid, node)] = i
    return [(k[3], k[4], k[0], max(0, x)) for k, x in zip(kernels, exclusive, strict=True)]


def _node_outputs(ran: onnx.GraphProto) -> Callable[[str, str], tuple[str, ...]]:
    """Output tensors of a profiled node of the graph ONNX Runtime ran, by the name its events carry.

    An unnamed node's events are called ``OpType_<index>``: it is found when it is the only unnamed node
    of that op type (else its outputs are unknown: ``()``).
    """
    named: dict[str, tuple[str, ...]] = {}
    unnamed: dict[str, list[tuple[str, ...]]] = collections.defaultdict(list)
    for node, _ in iter_proto_nodes(ran):
        produced = tuple(t for t in node.output if t)
        if node.name:
            named.setdefault(node.name, produced)
        else:
            unnamed[node.op_type].append(produced)

    def outputs(name: str, op_type: str) -> tuple[str, ...]:
        if name in named:
            return named[name]
        single = unnamed.get(op_type, [])
        if len(single) == 1 and re.fullmatch(re.escape(op_type) + r"_\d+", name):
            return single[0]
        return ()

    return outputs


def _resolve(
    name: str,
    op_type: str,
    by_name: Mapping[str, list[NodeAttribution]],
    unnamed: Mapping[str, list[NodeAttribution]],
    tree: ModuleTree,
) -> tuple[str, None] | tuple[None, str]:
    """The module of a kernel event's node, or ``None`` and why there is none."""
    candidates = by_name.get(name, [])
    if op_type:
        candidates = [n for n in candidates if n.op_type == op_type] or candidates
    if not candidates and op_type and re.fullmatch(re.escape(op_type) + r"_\d+", name):
        # ONNX Runtime profiles an unnamed node as OpType_<its node index>; the saved graph keeps it unnamed.
        candidates = list(unnamed.get(op_type, []))
    if not candidates:
        return None, _NOT_FOUND
    modules = {n.module for n in candidates}
    if len(modules) > 1:
        where = ", ".join(sorted(m if m is not None else "(unattributed)" for m in modules))
        return None, f"ambiguous: {len(candidates)} nodes of this name in different modules ({where})"
    node = candidates[0]
    if node.module is None:
        return None, f"node unattributed: {node.reason or 'no reason recorded'}"
    if node.module not in tree:
        return None, f"its module {node.module!r} is not in the model's module tree"
    return node.module, None


def _build_profile(
    *,
    file: Path,
    level: str,
    runs: int,
    warmup: int,
    feeds: Mapping[str, np.ndarray],
    hierarchy: ModelHierarchy,
    timed: Sequence[tuple[str, str, int]],
    run_us: int,
    warmup_events: int,
    node_outputs: Callable[[str, str], tuple[str, ...]],
) -> ModuleProfile:
    tree = hierarchy.tree
    by_name: dict[str, list[NodeAttribution]] = collections.defaultdict(list)
    unnamed: dict[str, list[NodeAttribution]] = collections.defaultdict(list)
    for node in hierarchy.nodes:
        if node.name:
            by_name[node.name].append(node)
        else:
            unnamed[node.op_type].append(node)

    own_us: dict[str, int] = collections.Counter()
    own_calls: dict[str, int] = collections.Counter()
    own_nodes: dict[str, set[str]] = collections.defaultdict(set)
    lost: dict[tuple[str, str, str], list[int]] = {}
    per_node: dict[tuple[str, str, str | None], list[int]] = {}
    for name, op_type, us in timed:
        module, reason = _resolve(name, op_type, by_name, unnamed, tree)
        entry = per_node.setdefault((name, op_type, module), [0, 0])
        entry[0] += 1
        entry[1] += us
        if module is None:
            entry = lost.setdefault((name, op_type, reason or _NOT_FOUND), [0, 0])
            entry[0] += 1
            entry[1] += us
            continue
        own_us[module] += us
        own_calls[module] += 1
        own_nodes[module].add(name)

    total = sum(us for _, _, us in timed)
    modules = _module_times(tree, own_us, own_calls, {k: len(v) for k, v in own_nodes.items()}, total)
    unattributed = tuple(
        UnattributedTime(node=name, op_type=op, reason=reason, calls=calls, time_us=us)
        for (name, op, reason), (calls, us) in sorted(lost.items(), key=lambda kv: (-kv[1][1], kv[0]))
    )
    for u in unattributed:
        logger.warning("%s: %d kernel events of %s (%s) unattributed: %s", file, u.calls, u.node, u.op_type, u.reason)
    return ModuleProfile(
        model=file,
        optimization_level=level,
        runs=runs,
        warmup=warmup,
        inputs={name: tuple(int(d) for d in value.shape) for name, value in feeds.items()},
        graph_nodes=len(hierarchy.nodes),
        run_us=run_us,
        total_us=total,
        node_events=len(timed),
        modules=modules,
        unattributed=unattributed,
        warmup_events=warmup_events,
        nodes=tuple(
            NodeTime(node=name, op_type=op, module=module, calls=calls, time_us=us, outputs=node_outputs(name, op))
            for (name, op, module), (calls, us) in sorted(per_node.items(), key=lambda kv: (-kv[1][1], kv[0][:2]))
        ),
    )


def _module_times(
    tree: ModuleTree,
    own_us: Mapping[str, int],
    own_calls: Mapping[str, int],
    own_nodes: Mapping[str, int],
    total: int,
) -> tuple[ModuleTime, ...]:
    """Own and subtree numbers of every module with a node that ran (and the root), depth first."""
    subtree: dict[str, tuple[int, int, int]] = {}

    def fill(path: str) -> tuple[int, int, int]:
        us, calls, nodes = own_us.get(path, 0), own_calls.get(path, 0), own_nodes.get(path, 0)
        for child in tree.children(path):
            c_us, c_calls, c_nodes = fill(child)
            us, calls, nodes = us + c_us, calls + c_calls, nodes + c_nodes
        subtree[path] = (us, calls, nodes)
        return subtree[path]

    root = tree.root.path
    fill(root)
    out = []
    stack = [root]
    while stack:
        path = stack.pop()
        us, calls, nodes = subtree[path]
        if calls == 0 and path != root:
            continue
        info = tree[path]
        out.append(
            ModuleTime(
                path=path,
                class_name=info.class_name,
                depth=info.depth,
                own_us=own_us.get(path, 0),
                subtree_us=us,
                own_calls=own_calls.get(path, 0),
                subtree_calls=calls,
                own_nodes=own_nodes.get(path, 0),
                subtree_nodes=nodes,
                own_share=own_us.get(path, 0) / total if total else 0.0,
                subtree_share=us / total if total else 0.0,
            )
        )
        stack.extend(reversed(tree.children(path)))
    return tuple(out)


def aggregate_to_depth(profile: ModuleProfile, depth: int) -> ModuleProfile:
    """The same profile with modules deeper than ``depth`` counted in their ancestor at ``depth``.

    A module at ``depth`` then owns its whole subtree, so own times still add up to the total.
    """
    if depth < 0:
        raise HierarchyError(f"depth must be 0 or more (got {depth}).")
    modules = []
    for m in profile.modules:
        if m.depth < depth:
            modules.append(m)
        elif m.depth == depth:
            modules.append(
                dataclasses.replace(
                    m,
                    own_us=m.subtree_us,
                    own_calls=m.subtree_calls,
                    own_nodes=m.subtree_nodes,
                    own_share=m.subtree_share,
                )
            )
    return dataclasses.replace(profile, modules=tuple(modules), depth=depth)
