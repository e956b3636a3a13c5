"""`optimum-cli hierarchy quantize --int4`: MatMulNBits by module, on `hierarchy export` files (both stacks).

Expected sets come from the PyTorch model's `named_modules()` (every nn.Linear, minus the excluded globs
matched by the test itself) and the files read with plain onnx.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from dynamo_support import module_of
from support import run_cli
from task_cases import TASK_CASES, load_task_model

pytestmark = pytest.mark.cli

CASES = {
    "llama": ["lm_head", "model.layers.0.self_attn.*"],
    "bert": ["encoder.layer.1.*"],
    "gpt2": ["transformer.h.0.mlp.*"],  # Conv1D exported as Gemm: rewritten as MatMul, then quantized
}


def linear_layers(model: torch.nn.Module) -> set[str]:
    """Paths of the nn.Linear and transformers Conv1D modules whose weight is their own.

    A weight tied to another module's (GPT-2's lm_head and wte) reaches the graph through a Transpose,
    not as a constant, and ONNX Runtime's quantizer leaves such a MatMul float.
    """
    from transformers.pytorch_utils import Conv1D

    owners: dict[int, int] = {}
    for _, module in model.named_modules():
        for param in module.parameters(recurse=False):
            owners[id(param)] = owners.get(id(param), 0) + 1
    return {
        path
        for path, m in model.named_modules()
        if isinstance(m, (torch.nn.Linear, Conv1D)) and owners[id(m.weight)] == 1
    }


def _matches(path: str, glob: str) -> bool:
    # the test's own reading of the glob: '*' one segment (no dots), '**' any number
    pattern = glob.replace("**", "\0").replace("*", "[!.]*").replace("\0", "*")
    return fnmatch.fnmatchcase(path, pattern) or any(
        fnmatch.fnmatchcase(".".join(path.split(".")[:n]), pattern) for n in range(1, path.count(".") + 1)
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_int4_quantizes_exactly_the_other_linears(
    task_exports: dict[str, Path], task_model_dirs: dict[str, Path], tmp_path: Path, case: str
) -> None:
    source = task_exports[case] / "model.onnx"
    output = tmp_path / "int4.onnx"
    globs = CASES[case]
    completed = run_cli(
        "hierarchy", "quantize", str(source), "-o", str(output), "--int4", "--block-size", "32",
        "--exclude-modules", *globs, "--json",
    )  # fmt: skip
    report = json.loads(completed.stdout)
    model = load_task_model(case, task_model_dirs[case])
    linears = linear_layers(model) - set(TASK_CASES[case].unused_linears)
    excluded = {p for p in linears if any(_matches(p, g) for g in globs)}
    assert excluded and excluded != linears
    quantized = onnx.load(str(output))
    nbits = [n for n in quantized.graph.node if n.op_type == "MatMulNBits"]
    assert sorted(module_of(n) or "" for n in nbits) == sorted(linears - excluded)  # one each, in its Linear
    assert {(r["node"], r["module"]) for r in report["quantized"]} == {(n.name, module_of(n)) for n in nbits}
    assert all(module_of(n) is not None for n in quantized.graph.node)  # every node attributed
    float_matmuls = {module_of(n) for n in quantized.graph.node if n.op_type in {"MatMul", "Gemm"}}
    assert excluded <= float_matmuls  # the excluded Linears still compute in float
    # It runs, and stays close to the float model (int4 of tiny random weights: loose).
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for value in session.get_inputs():
        if value.name == "position_ids":
            feeds[value.name] = np.tile(np.arange(7), (2, 1))
        elif value.name == "attention_mask":
            feeds[value.name] = np.ones((2, 7), dtype=np.int64)
        elif value.name == "token_type_ids":
            feeds[value.name] = np.zeros((2, 7), dtype=np.int64)
        else:
            feeds[value.name] = rng.integers(0, 100, (2, 7))
    got, expected = session.run(None, feeds)[0], reference.run(None, feeds)[0]
    assert got.shape == expected.shape
    assert 0 < float(np.abs(got - expected).max()) < 0.5 * float(np.abs(expected).max())


def test_int4_of_a_torchscript_gemm_with_bias(
    cli_exports: dict[str, Path], model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """Optimum's TorchScript GPT-2 computes each Conv1D as Gemm(x, W, b): MatMul + Add, the MatMul quantized."""
    from support import load_torch_model

    from optimum_hierarchy.tools.int4 import quantize_int4

    source = cli_exports["gpt2"] / "model.onnx"
    plain = onnx.load(str(source), load_external_data=False)
    assert any(n.op_type == "Gemm" and len(n.input) == 3 for n in plain.graph.node)
    result = quantize_int4(source, tmp_path / "int4.onnx", block_size=32, exclude_modules=["transformer.h.1.attn.*"])
    model = load_torch_model("gpt2", model_dirs["gpt2"])
    # The TorchScript exporter stores the tied lm_head weight as a constant of its own (dynamo: a Transpose).
    initializers = {t.name for t in plain.graph.initializer}
    constant_b = {module_of(n) for n in plain.graph.node if n.op_type == "MatMul" and n.input[1] in initializers}
    assert "lm_head" in constant_b
    expected = {p for p in linear_layers(model) | {"lm_head"} if ".h.1.attn." not in p}
    quantized = onnx.load(str(result.output))
    nbits = [n for n in quantized.graph.node if n.op_type == "MatMulNBits"]
    assert sorted(module_of(n) or "" for n in nbits) == sorted(expected)
    assert all(module_of(n) is not None for n in quantized.graph.node)
    # Each rewritten Gemm's bias is an Add in the same module, producing the Gemm's output.
    gemm_outputs = {n.output[0]: module_of(n) for n in plain.graph.node if n.op_type == "Gemm"}
    adds = {
        n.output[0]: module_of(n) for n in quantized.graph.node if n.op_type == "Add" and n.output[0] in gemm_outputs
    }
    assert adds and all(gemm_outputs[t] == m for t, m in adds.items())
    from optimum_hierarchy.tools.inputs import generate_inputs

    feeds = generate_inputs(source, shapes={"batch_size": 2, "sequence_length": 7})
    session = ort.InferenceSession(str(result.output), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    got, want = session.run(None, feeds)[0], reference.run(None, feeds)[0]
    assert 0 < float(np.abs(got - want).max()) < 0.5 * float(np.abs(want).max())


def test_int4_external_data_in_and_out(task_exports: dict[str, Path], tmp_path: Path) -> None:
    from optimum_hierarchy.tools.int4 import quantize_int4

    source = tmp_path / "external.onnx"
    onnx.save(onnx.load(str(task_exports["bert"] / "model.onnx")), str(source), save_as_external_data=True,
              location="external.onnx_data", size_threshold=0)  # fmt: skip
    result = quantize_int4(source, tmp_path / "out.onnx", block_size=32)
    assert result.external_data and (tmp_path / "out.onnx_data").is_file()
    light = onnx.load(str(tmp_path / "out.onnx"), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in light.graph.initializer)
    ort.InferenceSession(str(tmp_path / "out.onnx"), providers=["CPUExecutionProvider"])
    assert len(result.quantized) > 0 and all(m is not None for _, m in result.quantized)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--exclude-modules", "encoder.layer.9.*"], "Closest module paths: encoder.layer.1"),
        (["--block-size", "48"], "--block-size 48"),
        ([], None),  # no --int4
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(
    task_exports: dict[str, Path], tmp_path: Path, args: list[str], words: str | None
) -> None:
    output = tmp_path / "out.onnx"
    mode = ["--int4"] if words is not None else []
    completed = run_cli(
        "hierarchy", "quantize", str(task_exports["bert"] / "model.onnx"), "-o", str(output), *mode, *args,
        check=False,
    )  # fmt: skip
    assert completed.returncode == 1
    assert (words or "--int4") in completed.stderr.replace("\n", " ")
    assert not output.exists()


def test_file_without_hierarchy_and_output_over_input(tmp_path: Path, task_exports: dict[str, Path]) -> None:
    plain = tmp_path / "plain.onnx"
    model = onnx.load(str(task_exports["bert"] / "model.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(plain))
    completed = run_cli("hierarchy", "quantize", str(plain), "-o", str(tmp_path / "o.onnx"), "--int4", check=False)
    assert completed.returncode == 1 and "optimum-cli hierarchy annotate" in completed.stderr.replace("\n", " ")
    assert not (tmp_path / "o.onnx").exists()
    same = run_cli("hierarchy", "quantize", str(plain), "-o", str(plain), "--int4", check=False)
    assert same.returncode == 1 and "is the input file" in same.stderr.replace("\n", " ")


def test_the_block_size_default_is_stated_in_the_help_and_the_docs() -> None:
    import argparse
    import inspect

    from optimum_hierarchy.cli.quantize_command import QuantizeCommand
    from optimum_hierarchy.tools.int4 import quantize_int4

    default = inspect.signature(quantize_int4).parameters["block_size"].default
    parser = argparse.ArgumentParser()
    QuantizeCommand.parse_args(parser)
    (action,) = [a for a in parser._actions if "--block-size" in a.option_strings]
    assert action.default == default == 128
    assert action.help is not None and f"{default} (default)" in action.help and "smaller" in action.help
    docs = " ".join((Path(__file__).parents[2] / "docs" / "tools.md").read_text().split())
    assert f"{default} weights by default (`--block-size`)" in docs and "smaller block lowers the error" in docs
