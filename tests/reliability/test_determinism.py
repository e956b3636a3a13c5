"""Idempotence and determinism: the same input gives the same bytes, whatever the run, the process or the
hash seed (which changes the iteration order of every set and of dicts built from them); annotating an
annotated file changes nothing.

Already covered elsewhere: annotating an export twice (``tests/annotation/test_file.py``), restoring an
O2-optimized model twice (``tests/test_provenance.py``), random graphs (``test_fuzz.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from support import OPTIMUM_CLI, task_of

from optimum_hierarchy import annotate_hierarchy, export_with_hierarchy, schema


def _hierarchy_metadata(path: Path) -> tuple[list[tuple[str, str]], list[list[tuple[str, str]]]]:
    """Our model-level entries and every node's entries, in file order (read with plain onnx)."""
    model = onnx.load(str(path), load_external_data=False)
    ours = [(p.key, p.value) for p in model.metadata_props if p.key.startswith(schema.MODEL_KEY_PREFIX)]
    nodes = [[(p.key, p.value) for p in n.metadata_props] for n in model.graph.node]
    return ours, nodes


def _run(code: str, seed: int, cwd: Path) -> None:
    env = dict(os.environ, PYTHONHASHSEED=str(seed), PYTHONWARNINGS="ignore")
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr


def test_exporting_twice_gives_the_same_file(
    cli_exports: dict[str, Path], model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """The Python API in this process and the CLI in another with another hash seed write the file the
    CLI fixture wrote: the same hierarchy metadata, and in fact the same bytes."""
    api = export_with_hierarchy(model_dirs["bert"], tmp_path / "api", task="feature-extraction")
    assert api.attributed == api.nodes > 100
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONWARNINGS="ignore")
    args = ["export", "onnx", "--model", str(model_dirs["gpt2"]), "--task", task_of("gpt2"), "--hierarchy"]
    subprocess.run([OPTIMUM_CLI, *args, str(tmp_path / "cli")], env=env, capture_output=True, check=True)
    for name, again in (("bert", tmp_path / "api"), ("gpt2", tmp_path / "cli")):
        reference = cli_exports[name] / "model.onnx"
        ours, nodes = _hierarchy_metadata(reference)
        assert ours and all(nodes)
        assert _hierarchy_metadata(again / "model.onnx") == (ours, nodes), name
        assert (again / "model.onnx").read_bytes() == reference.read_bytes(), name


def test_metadata_is_canonical_json_and_in_key_order(cli_exports: dict[str, Path]) -> None:
    """Model-level values are JSON with sorted keys and no spaces (what json.dumps writes with those options),
    and our node keys come sorted, after any key another tool wrote."""
    for name in ("vit", "bert", "gpt2"):
        ours, nodes = _hierarchy_metadata(cli_exports[name] / "model.onnx")
        assert [k for k, _ in ours] == sorted(k for k, _ in ours)
        for key, value in ours:
            if key == schema.PROVENANCE_KEY:
                continue  # compressed; its JSON is checked through decode/encode in tests/test_provenance.py
            canonical = json.dumps(json.loads(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            assert value == canonical, key
        for props in nodes:
            keys = [k for k, _ in props]
            assert keys == sorted(keys)


_RESTORE = """
import sys
from optimum_hierarchy import annotate_hierarchy
annotate_hierarchy(sys.argv[1] if len(sys.argv) > 1 else {path!r}, scope_names={scope_names})
"""


@pytest.mark.parametrize("case", ["names", "config", "optimized", "optimized_scope_names", "quantized"])
def test_annotation_does_not_depend_on_the_hash_seed_and_is_idempotent(
    case: str, plain_exports: dict[str, Path], cli_exports: dict[str, Path], tmp_path: Path
) -> None:
    """The same file annotated in two processes with different hash seeds gives the same bytes, and
    annotating the result again changes nothing (after the fact from names or from config.json; after
    ONNX Runtime's O2 optimizer, with and without ``scope_names``; after dynamic quantization)."""
    source = tmp_path / "source"
    source.mkdir()
    if case in ("names", "config"):
        shutil.copy(plain_exports["bert"] / "model.onnx", source / "model.onnx")
        if case == "config":
            shutil.copy(plain_exports["bert"] / "config.json", source / "config.json")
        name = "model.onnx"
    elif case.startswith("optimized"):
        from optimum.onnxruntime import ORTOptimizer
        from optimum.onnxruntime.configuration import AutoOptimizationConfig

        ORTOptimizer.from_pretrained(cli_exports["bert"], file_names=["model.onnx"]).optimize(
            AutoOptimizationConfig.O2(), save_dir=source
        )
        name = "model_optimized.onnx"
    else:
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        ORTQuantizer.from_pretrained(cli_exports["gpt2"], file_name="model.onnx").quantize(
            AutoQuantizationConfig.avx512(is_static=False, per_channel=False), save_dir=source
        )
        name = "model_quantized.onnx"
    results = []
    for seed in (1, 2):
        copy = tmp_path / f"seed{seed}"
        shutil.copytree(source, copy)
        _run(_RESTORE.format(path=str(copy / name), scope_names=case.endswith("scope_names")), seed, tmp_path)
        results.append((copy / name).read_bytes())
    assert results[0] == results[1]
    again = tmp_path / "seed1" / name
    (record,) = annotate_hierarchy(again, scope_names=case.endswith("scope_names"))
    assert again.read_bytes() == results[0]
    assert record.summary.attributed == record.summary.nodes > 20
