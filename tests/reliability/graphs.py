"""Random small ONNX graphs for the fuzz tests (hypothesis), with the module tree they are attributed against.

Importable as ``reliability.graphs`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from optimum_hierarchy.schema import ModuleInfo, ModuleTree, ParameterInfo

_LINEAR = (ParameterInfo("weight", (2, 2), dtype="float32"), ParameterInfo("bias", (2,), dtype="float32"))

TREE = ModuleTree(
    [
        ModuleInfo("", "Root"),
        ModuleInfo("enc", "Encoder"),
        ModuleInfo("enc.layer", "torch.nn.modules.container.ModuleList"),
        ModuleInfo("enc.layer.0", "Layer"),
        ModuleInfo("enc.layer.0.dense", "torch.nn.Linear", parameters=_LINEAR),
        ModuleInfo("enc.layer.1", "Layer"),
        ModuleInfo("enc.layer.1.dense", "torch.nn.Linear", parameters=_LINEAR),
        ModuleInfo("blöck", "Ünïcode"),
        ModuleInfo("blöck.ω", "torch.nn.Linear", parameters=(ParameterInfo("weight", (2, 2), dtype="float32"),)),
        ModuleInfo("head", "torch.nn.Linear", parameters=(ParameterInfo("weight", (2, 2), dtype="float32"),)),
    ]
)

PARAMETERS = (
    "enc.layer.0.dense.weight",
    "enc.layer.0.dense.bias",
    "enc.layer.1.dense.weight",
    "enc.layer.1.dense.bias",
    "blöck.ω.weight",
    "head.weight",
)
"""Full names of the tree's parameters, and the module owning each (everything before the last dot)."""

SCOPES = {
    "/": "",
    "/enc/": "enc",
    "/enc/layer.0/": "enc.layer.0",
    "/enc/layer.0/dense/": "enc.layer.0.dense",
    "/enc/layer/1/": "enc.layer.1",  # one segment per level
    "/enc/layer.1/dense/": "enc.layer.1.dense",
    "/enc/enc.layer/": "enc.layer",  # the exporter repeating a container level (docs/attribution.md, `scope`)
    "/head_1/": "head",  # a module called a second time (docs/attribution.md, `scope`)
    "/blöck/ω/": "blöck.ω",
}
"""TorchScript scopes and the module each names, by the rules of docs/attribution.md (written here, not computed)."""

UNRESOLVED_SCOPES = ("/nope/", "/enc/layer.7/", "/enc//", "/enc/layer..0/", "/.enc/", "/enc./")
UNSCOPED_NAMES = ("", "MatMul_3", "onnx::Add_5", "节点", "Constant_0", "/enc/layer.0/dense/")
OP_TYPES = ("Add", "Mul", "MatMul", "Relu", "Frob")


def expected_scope_module(name: str) -> str | None:
    """The module a node name's scope names, from :data:`SCOPES`; ``None`` for any other name."""
    prefix, slash, op = name.rpartition("/")
    return SCOPES.get(prefix + slash) if op else None


@dataclasses.dataclass
class _Builder:
    data: st.DataObject
    dangling: bool
    counter: int = 0
    initializers: dict[str, TensorProto] = dataclasses.field(default_factory=dict)
    produced: set[str] = dataclasses.field(default_factory=set)

    def draw(self, strategy: st.SearchStrategy[Any]) -> Any:
        return self.data.draw(strategy)

    def node_name(self, op_type: str) -> str:
        kind = self.draw(st.sampled_from(("scope", "scope", "unresolved", "unscoped")))
        if kind == "scope":
            return self.draw(st.sampled_from(sorted(SCOPES))) + op_type + self.draw(st.sampled_from(("", "_1", "_2")))
        if kind == "unresolved":
            return self.draw(st.sampled_from(UNRESOLVED_SCOPES)) + op_type
        return str(self.draw(st.sampled_from(UNSCOPED_NAMES)))

    def tensor(self, node_name: str, index: int) -> str:
        """A new tensor name, in TorchScript's ``<node>_output_<i>`` form when that is still free."""
        self.counter += 1
        name = f"{node_name}_output_{index}" if node_name.startswith("/") else ""
        if not name or name in self.produced or name in self.initializers:
            name = f"v{self.counter}"
        self.produced.add(name)
        return name

    def initializer(self) -> str:
        if self.draw(st.booleans()):
            free = [p for p in PARAMETERS if p not in self.produced]
            if free:
                name = self.draw(st.sampled_from(free))
                self.initializers.setdefault(name, numpy_helper.from_array(np.ones((2,), np.float32), name))
                return name
        name = f"onnx::Init_{self.draw(st.integers(0, 3))}"
        self.initializers.setdefault(name, numpy_helper.from_array(np.ones((2,), np.float32), name))
        return name

    def graph(self, computing: list[str], depth: int, size: int) -> tuple[list[onnx.NodeProto], list[str]]:
        """``size`` nodes; each op reads a value computed from a graph input (``computing``)."""
        nodes: list[onnx.NodeProto] = []
        computing = list(computing)
        kinds = ["op", "op", "op", "alias", "constant"] + (["if"] if depth < 2 else [])
        if self.dangling:
            kinds += ["dangling", "weights_only"]
        local: list[str] = []
        for _ in range(size):
            kind = self.draw(st.sampled_from(kinds))
            if kind == "alias":
                free = [p for p in PARAMETERS if p not in self.produced and p not in self.initializers]
                if free:
                    # An Identity standing for a deduplicated initializer, named after the parameter.
                    source = f"onnx::Dedup_{self.counter}"
                    self.counter += 1
                    self.initializers[source] = numpy_helper.from_array(np.ones((2,), np.float32), source)
                    target = self.draw(st.sampled_from(free))
                    self.produced.add(target)
                    nodes.append(helper.make_node("Identity", [source], [target], name=self.node_name("Identity")))
                    continue
                kind = "op"
            if kind in ("dangling", "weights_only"):
                op = "Constant" if kind == "dangling" else "Transpose"
                name = self.node_name(op)
                inputs = [] if kind == "dangling" else [self.initializer()]
                nodes.append(helper.make_node(op, inputs, [self.tensor(name, 0)], name=name))
                continue
            if kind == "if":
                first = self.draw(st.sampled_from(computing))
                name = self.node_name("If")
                branches = []
                for branch in ("then", "else"):
                    body, outs = self.graph(computing, depth + 1, self.draw(st.integers(1, 3)))
                    branches.append(
                        helper.make_graph(
                            body,
                            f"{branch}_{self.counter}",
                            [],
                            [helper.make_tensor_value_info(outs[-1], TensorProto.FLOAT, None)],
                        )
                    )
                    self.counter += 1
                out = self.tensor(name, 0)
                nodes.append(
                    helper.make_node("If", [first], [out], name=name, then_branch=branches[0], else_branch=branches[1])
                )
                computing.append(out)
                local.append(out)
                continue
            extra: list[str] = []
            if kind == "constant" or self.draw(st.booleans()):
                if self.draw(st.booleans()):
                    name = self.node_name("Constant")
                    out = self.tensor(name, 0)
                    nodes.append(helper.make_node("Constant", [], [out], name=name))
                    extra.append(out)
                else:
                    extra.append(self.initializer())
            first = self.draw(st.sampled_from(computing))
            op = self.draw(st.sampled_from(OP_TYPES))
            name = self.node_name(op)
            outs = [self.tensor(name, i) for i in range(self.draw(st.integers(1, 2)))]
            nodes.append(helper.make_node(op, [first, *extra], outs, name=name))
            computing.extend(outs)
            local.extend(outs)
        return nodes, local or computing[-1:]


def random_model(data: st.DataObject, *, dangling: bool = False, max_nodes: int = 10) -> onnx.ModelProto:
    """A random graph over :data:`TREE`: op types, scoped / unscoped / duplicate / empty / unicode names,
    parameters and aliases of them, constants, ``If`` subgraphs (nested twice at most).

    Without ``dangling`` every node computes on a graph input or serves one that does, so that each has
    evidence; with it, nodes that only read weights or nothing at all are added.
    """
    builder = _Builder(data, dangling)
    builder.produced.update(("x", "x2"))
    nodes, outs = builder.graph(["x", "x2"], 0, data.draw(st.integers(1, max_nodes)))
    graph_outputs = list(dict.fromkeys([outs[-1], *data.draw(st.lists(st.sampled_from(outs), max_size=2))]))
    graph = helper.make_graph(
        nodes,
        "main",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("x", "x2")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in graph_outputs],
        initializer=list(builder.initializers.values()),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Every node, subgraphs included (each node, then its bodies), walked here independently of the package."""
    out = []
    for node in graph.node:
        out.append(node)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                out.extend(all_nodes(attr.g))
            for sub in attr.graphs:
                out.extend(all_nodes(sub))
    return out


def node_props(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
"""Any JSON value."""
