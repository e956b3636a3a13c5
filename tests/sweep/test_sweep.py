"""The architecture sweep: every model type of `sweep_cases.SWEEP_CASES`, exported with the hierarchy.

Checked against definitions independent of the package (`sweep_support`): the TorchScript scopes
resolved with torch's naming rule against the PyTorch model's module objects, calls counted from
those scopes, and for optimized files the nodes each fusion replaced (`dynamo_support.created_regions`).
The exports are made once per session (fixture `sweep_exports`); `-m "not sweep"` skips this part.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from fusion_support import expected_fusions, graph_nodes, within
from sweep_cases import SWEEP_CASES
from sweep_support import TorchScriptScopes, all_nodes, module_meta, paths_of, strip_metadata

pytestmark = [pytest.mark.sweep, pytest.mark.optimum_onnx]

CASES = sorted(SWEEP_CASES)


def _load(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path), load_external_data=False)


def _exported(model: Any, file_name: str) -> Any:
    """The module Optimum exports into the file: the encoder for `encoder_model.onnx`, else the whole model."""
    return model.get_encoder() if file_name.startswith("encoder_model") else model


def _files(directory: Path) -> list[Path]:
    files = sorted(directory.glob("*.onnx"))
    assert files, f"no ONNX file in {directory}"
    return files


@pytest.mark.parametrize("case", CASES)
def test_every_node_attributed_and_the_computation_unchanged(sweep_exports: dict[str, Any], case: str) -> None:
    """100% coverage, and each annotated file is the plain export's graph node for node (metadata aside), so its
    outputs are the plain export's, bit for bit; the O2 files are fully attributed too."""
    export = sweep_exports[case]
    for path in _files(export.hierarchy):
        annotated = _load(path)
        missing = [n.name for n in all_nodes(annotated.graph) if module_meta(n) is None]
        assert not missing, f"{path.name}: {len(missing)} unattributed, e.g. {missing[:3]}"
        plain = _load(export.plain / path.name)
        assert strip_metadata(annotated) == strip_metadata(plain), f"{path.name} differs from the plain export"
    if export.o2 is not None:
        for path in _files(export.o2):
            missing = [n.name for n in all_nodes(_load(path).graph) if module_meta(n) is None]
            assert not missing, f"O2 {path.name}: {len(missing)} unattributed, e.g. {missing[:3]}"


@pytest.mark.parametrize("case", CASES)
def test_module_is_the_torchscript_scope(sweep_exports: dict[str, Any], case: str) -> None:
    """Every node whose scope resolves (torch's naming rule, module objects) is attributed to that module, under
    one of its paths (a shared module has several)."""
    export = sweep_exports[case]
    model = export.model
    paths = paths_of(model)
    wrong = []
    checked = 0
    for path in _files(export.hierarchy):
        scopes = TorchScriptScopes(_exported(model, path.name))
        for node in all_nodes(_load(path).graph):
            module = scopes.module_of(node.name)
            if module is None:
                continue
            checked += 1
            if module_meta(node) not in paths[id(module)]:
                wrong.append((path.name, node.name, module_meta(node), sorted(paths[id(module)])))
    assert checked > 0
    assert not wrong, f"{len(wrong)} of {checked} nodes are not at their scope's module, e.g. {wrong[:3]}"


def _census_kind(module: Any) -> tuple[str, ...] | None:
    """The op types one call of the module makes exactly one of, per PyTorch semantics; None: not counted."""
    from transformers.pytorch_utils import Conv1D

    name = type(module).__name__
    if isinstance(module, (torch.nn.Linear, Conv1D)):
        return ("MatMul|Gemm",)
    if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d)):
        return ("Conv",)
    # Subclasses with a forward of their own (BART's learned positions compute them first) are not counted.
    if isinstance(module, torch.nn.Embedding) and type(module).forward is torch.nn.Embedding.forward:
        return ("Gather",)
    if isinstance(module, torch.nn.LayerNorm) and type(module).forward is torch.nn.LayerNorm.forward:
        return ("LayerNormalization",)
    if name.endswith("RMSNorm") or name == "T5LayerNorm":  # decomposed: x.pow(2).mean(-1) ...
        return ("Pow", "ReduceMean")
    return None


@pytest.mark.parametrize("case", CASES)
def test_one_op_per_call(sweep_exports: dict[str, Any], case: str) -> None:
    """One MatMul/Gemm per Linear call, one Conv per Conv call, one Gather per Embedding call, one
    LayerNormalization per LayerNorm call, one Pow and one ReduceMean per (decomposed) RMSNorm call. Calls are
    counted from the scopes (one scope string per call); ops from the package's attribution."""
    export = sweep_exports[case]
    model = export.model
    paths = paths_of(model)
    problems = []
    counted = 0
    for path in _files(export.hierarchy):
        exported = _exported(model, path.name)
        scopes = TorchScriptScopes(exported)
        for key, graph in _graphs(_load(path)).items():  # each branch of a merged decoder is one decoder
            nodes = list(graph.graph.node)
            calls: dict[int, set[str]] = collections.defaultdict(set)
            for node in nodes:
                module = scopes.module_of(node.name)
                if module is not None:
                    calls[id(module)].add(node.name.rsplit("/", 1)[0])
            by_path: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
            for node in nodes:
                by_path[module_meta(node) or ""][node.op_type] += 1
            for module in exported.modules():
                kinds = _census_kind(module)
                if kinds is None:
                    continue
                n_calls = len(calls.get(id(module), ()))
                for kind in kinds:
                    found = sum(by_path[p][op] for p in paths[id(module)] for op in kind.split("|"))
                    counted += 1
                    if found != n_calls:
                        where = f"{path.name}:{key}"
                        problems.append((where, sorted(paths[id(module)])[0], kind, f"{found} for {n_calls} calls"))
    assert counted > 0
    assert not problems, f"{len(problems)} census mismatches, e.g. {problems[:4]}"


def _graphs(model: onnx.ModelProto) -> dict[str, onnx.ModelProto]:
    """The main graph, and each If branch of a merged decoder, as models of their own."""
    out = {"main": model}
    for node in model.graph.node:
        if node.op_type == "If":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    out[f"{node.name}.{attr.name}"] = onnx.helper.make_model(attr.g)
    return out


@pytest.mark.parametrize("case", [c for c in CASES if SWEEP_CASES[c].o2])
def test_o2_fused_nodes_at_the_common_module_of_what_they_replaced(sweep_exports: dict[str, Any], case: str) -> None:
    """After --optimize O2 (merged decoders included, in each branch), a node ONNX Runtime created sits at the
    lowest common ancestor of the modules of the nodes it replaced (an architecture rule may narrow it within)."""
    export = sweep_exports[case]
    wrong = []
    checked = 0
    for path in _files(export.o2):
        before_graphs, after_graphs = _graphs(_load(export.hierarchy / path.name)), _graphs(_load(path))
        for key, after in after_graphs.items():
            if key not in before_graphs:
                continue
            g0, g1 = graph_nodes(before_graphs[key].graph), graph_nodes(after.graph)
            for i, (expected, _modules) in expected_fusions(g0, g1).items():
                node = g1[i]
                got = node["module"] if node["module"] is not None else "-"
                ok = within(got, expected) if node["source"] in {"rule", "name"} else got == expected
                checked += 1
                if not ok:
                    wrong.append((path.name, key, node["name"], node["op"], got, expected))
    assert checked > 0
    assert not wrong, f"{len(wrong)} of {checked} created nodes not at the common module, e.g. {wrong[:3]}"


def test_readme_table_is_the_sweep() -> None:
    """docs/architectures.md's supported-architectures table is generated from SWEEP_CASES (tests/sweep_cases.py)."""
    from sweep_cases import readme_table

    page = (Path(__file__).resolve().parents[2] / "docs" / "architectures.md").read_text(encoding="utf-8")
    assert readme_table() in page
    assert len(SWEEP_CASES) >= 20


def test_o2_marks_are_optimums() -> None:
    """A case is optimized in the sweep exactly when Optimum's ORTOptimizer supports its model type."""
    from optimum.onnxruntime.utils import ORTConfigManager

    for name, case in SWEEP_CASES.items():
        assert case.o2 == (name in ORTConfigManager._conf), name
