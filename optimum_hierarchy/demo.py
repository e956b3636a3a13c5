"""``optimum-hierarchy-demo``: export a tiny model built from a shipped config, with the hierarchy.

No hub and no network: the model is built from a config below with seeded random weights, saved
with ``save_pretrained``, and exported by the real ``optimum-cli``. By default that is the path
recommended on today's stack, ``optimum-cli hierarchy export``: a generative model (the default, a
tiny Llama) through transformers' own exporter (``prefill`` and ``decode`` with the KV cache,
transformers >= 5.23), an encoder (``--model vit``, ``bert``) through torch's dynamo exporter.
``--exporter optimum`` takes Optimum's exporter instead (``export onnx --hierarchy``, the ``onnx`` extra).
"""

from __future__ import annotations

__all__ = ["GENERATIVE", "TINY_MODELS", "build_tiny_model", "export_command", "main"]

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


GENERATIVE = frozenset({"gpt2", "llama"})
"""The causal language models of :data:`TINY_MODELS`: exported with their KV cache where transformers' exporter is."""


def export_command(name: str, source: Path, output: Path, exporter: str) -> list[str]:
    """The ``optimum-cli`` command that exports the tiny model ``name`` saved in ``source`` to ``output``.

    ``exporter``: ``hierarchy`` (``optimum-cli hierarchy export``; for a generative model the task with
    past key values, which that command gives transformers' own exporter, where transformers has it; else
    the task without them, torch's dynamo exporter) or ``optimum`` (``export onnx --hierarchy``).
    """
    import importlib.util

    cli = str(Path(sys.executable).with_name("optimum-cli"))
    task = TINY_MODELS[name][2]
    if exporter == "optimum":
        return [cli, "export", "onnx", "--model", str(source), "--task", task, "--hierarchy", str(output)]
    task = task.removesuffix("-with-past")
    if name in GENERATIVE and importlib.util.find_spec("transformers.exporters") is not None:
        task += "-with-past"
    return [cli, "hierarchy", "export", "--model", str(source), "--task", task, str(output)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="optimum-hierarchy-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(TINY_MODELS), default="llama", help="tiny model to build (llama)")
    parser.add_argument("--output", type=Path, default=Path("hierarchy-demo"), help="output directory")
    parser.add_argument(
        "--exporter",
        choices=["hierarchy", "optimum"],
        default="hierarchy",
        help=(
            "hierarchy (default): `optimum-cli hierarchy export`, transformers' own exporter for a generative "
            "model (with its KV cache, transformers >= 5.23), torch's dynamo exporter otherwise; optimum: "
            "`optimum-cli export onnx --hierarchy` (needs the onnx extra)"
        ),
    )
    args = parser.parse_args(argv)
    from optimum_hierarchy.errors import has_optimum_onnx

    if args.exporter == "optimum" and not has_optimum_onnx():
        print('error: --exporter optimum needs optimum-onnx: pip install "optimum-hierarchy[onnx]"', file=sys.stderr)
        return 1

    source = args.output / "pytorch"
    onnx_dir = args.output / "onnx"
    print(f"Building a tiny {args.model} from its config in {source} ...", flush=True)
    build_tiny_model(args.model, source)
    if onnx_dir.exists():
        shutil.rmtree(onnx_dir)
    command = export_command(args.model, source, onnx_dir, args.exporter)
    print("$ " + " ".join(command), flush=True)
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        return completed.returncode

    from optimum_hierarchy.cli.output import console as make_console
    from optimum_hierarchy.cli.views import render_tree, tree_data
    from optimum_hierarchy.html import write_html
    from optimum_hierarchy.retriever import HierarchyRetriever

    # The file that runs for every new token where there are several (decode.onnx beside prefill.onnx).
    files = sorted(onnx_dir.glob("*.onnx"))
    model = next((f for f in files if f.stem == "decode"), files[0])
    retriever = HierarchyRetriever(model)
    console = make_console()
    console.print(render_tree(tree_data(retriever, depth=2)))
    page = write_html(retriever, args.output / "model.html", title=model.name)
    console.print(f"Annotated model: {model}", highlight=False)
    if len(files) > 1:
        console.print(f"Also annotated: {', '.join(str(f) for f in files if f != model)}", highlight=False)
    console.print(f"Interactive view: {page}", highlight=False)
    console.print(
        f"Explore it: optimum-cli hierarchy tree {model} --depth 4 | nodes {model} '**.{_attention(args.model)}' "
        f"| stats {model} --by op",
        highlight=False,
    )
    return 0


def _attention(name: str) -> str:
    """The last path segment of the tiny model's attention modules, for the glob the demo suggests."""
    return {"gpt2": "attn", "llama": "self_attn"}.get(name, "attention")


if __name__ == "__main__":
    sys.exit(main())
