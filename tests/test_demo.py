"""The README's main job: the demo builds a tiny ViT and exports it with the real optimum-cli."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from optimum_hierarchy import read_hierarchy


@pytest.mark.parametrize("exporter", ["auto", "dynamo"])
def test_demo_runs(tmp_path: Path, exporter: str) -> None:
    demo = Path(sys.executable).with_name("optimum-hierarchy-demo")
    completed = subprocess.run(
        [str(demo), "--output", str(tmp_path), "--exporter", exporter], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert "Attributed" in completed.stdout and "Annotated model" in completed.stdout
    hierarchy = read_hierarchy(tmp_path / "onnx" / "model.onnx")
    assert hierarchy.tree.root.class_name.endswith("ViTForImageClassification")
    assert all(n.module is not None for n in hierarchy.nodes)
    page = (tmp_path / "model.html").read_text()
    assert "ViTForImageClassification" in page and "hierarchy-data" in page
    # The glob the demo suggests finds the attention modules of the model (from named_modules()).
    import transformers

    from optimum_hierarchy.retriever import HierarchyRetriever

    model = transformers.ViTForImageClassification.from_pretrained(tmp_path / "pytorch")
    attention = [p for p, _ in model.named_modules() if p.rsplit(".", 1)[-1] == "attention"]
    retriever = HierarchyRetriever(tmp_path / "onnx" / "model.onnx")
    assert "'**.attention'" in completed.stdout.replace("\n", "")
    assert sorted(m.path for m in retriever.find_modules("**.attention")) == sorted(attention)
