"""``optimum-hierarchy-demo``: export a tiny model built from a shipped config, with the hierarchy.

No hub and no network: the model is built from a config below with seeded random weights, saved
with ``save_pretrained``, and exported by the real ``optimum-cli``: ``export onnx --hierarchy``
(Optimum's exporter) when optimum-onnx (the ``onnx`` extra) is installed, ``hierarchy export``
(torch's dynamo exporter) otherwise or with ``--exporter dynamo``.
"""

from __future__ import annotations

__all__ = ["TINY_MODELS", "build_tiny_model", "main"]

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# name -> (transformers config class, model class, task, config kwargs)
TINY_MODELS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "vit": (
        "ViTConfig",
        "ViTForImageClassification",
        "image-classification",
        {
            "image_size": 32,
            "patch_size": 8,
            "num_hidden_layers": 2,
            "hidden_size": 64,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "num_labels": 3,
        },
    ),
    "bert": (
        "BertConfig",
        "BertModel",
        "feature-extraction",
        {
            "vocab_size": 512,
            "max_position_embeddings": 128,
            "num_hidden_layers": 2,
            "hidden_size": 64,
            "num_attention_heads": 4,
            "intermediate_size": 128,
        },
    ),
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        "text-generation-with-past",
        {"vocab_size": 512, "n_positions": 128, "num_hidden_layers": 2, "n_embd": 64, "n_head": 4},
    ),
    "llama": (
        "LlamaConfig",
        "LlamaForCausalLM",
        "text-generation",
        {
            "vocab_size": 512,
            "max_position_embeddings": 128,
            "num_hidden_layers": 2,
            "hidden_size": 64,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 128,
        },
    ),
}


def build_tiny_model(name: str, directory: str | os.PathLike[str], *, seed: int = 0, **overrides: Any) -> str:
    """Build the tiny model ``name`` with distinct random weights, save it in ``directory``; returns its task.

    ``overrides`` replace entries of its config (``num_hidden_layers=3``).
    """
    import torch
    import transformers

    config_cls, model_cls, task, kwargs = TINY_MODELS[name]
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**{**kwargs, **overrides}))
    with torch.no_grad():
        # Distinct values everywhere: default init makes many tensors equal (zero biases, unit
        # LayerNorm weights), which the exporter would deduplicate into aliases.
        for param in model.parameters():
            param.normal_(0.0, 0.05)
    model.save_pretrained(directory)
    return task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="optimum-hierarchy-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(TINY_MODELS), default="vit", help="tiny model to build (vit)")
    parser.add_argument("--output", type=Path, default=Path("hierarchy-demo"), help="output directory")
    parser.add_argument(
        "--exporter",
        choices=["auto", "optimum", "dynamo"],
        default="auto",
        help=(
            "optimum: `optimum-cli export onnx --hierarchy` (needs the onnx extra); dynamo: `optimum-cli hierarchy "
            "export` (torch's dynamo exporter, no past key values); auto (default): optimum when installed"
        ),
    )
    args = parser.parse_args(argv)
    from optimum_hierarchy.errors import has_optimum_onnx

    exporter = args.exporter
    if exporter == "auto":
        exporter = "optimum" if has_optimum_onnx() else "dynamo"
    elif exporter == "optimum" and not has_optimum_onnx():
        print('error: --exporter optimum needs optimum-onnx: pip install "optimum-hierarchy[onnx]"', file=sys.stderr)
        return 1

    source = args.output / "pytorch"
    onnx_dir = args.output / "onnx"
    print(f"Building a tiny {args.model} from its config in {source} ...", flush=True)
    task = build_tiny_model(args.model, source)
    if onnx_dir.exists():
        shutil.rmtree(onnx_dir)
    cli = Path(sys.executable).with_name("optimum-cli")
    if exporter == "optimum":
        command = [str(cli), "export", "onnx", "--model", str(source), "--task", task, "--hierarchy", str(onnx_dir)]
    else:
        task = task.removesuffix("-with-past")
        command = [str(cli), "hierarchy", "export", "--model", str(source), "--task", task, str(onnx_dir)]
    print("$ " + " ".join(command), flush=True)
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        return completed.returncode

    from rich.console import Console

    from optimum_hierarchy.cli.views import render_tree, tree_data
    from optimum_hierarchy.html import write_html
    from optimum_hierarchy.retriever import HierarchyRetriever

    model = next(iter(sorted(onnx_dir.glob("*.onnx"))))
    retriever = HierarchyRetriever(model)
    console = Console()
    console.print(render_tree(tree_data(retriever, depth=2)))
    page = write_html(retriever, args.output / "model.html", title=model.name)
    console.print(f"Annotated model: {model}", highlight=False)
    console.print(f"Interactive view: {page}", highlight=False)
    console.print(
        f"Explore it: optimum-cli hierarchy tree {model} --depth 4 | nodes {model} '**.attention' "
        f"| stats {model} --by op",
        highlight=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
