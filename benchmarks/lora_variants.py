"""LoRA variants on the offline default: targets at equal budget, float vs quantized base.

Each variant fine-tunes the real Gemma 3 270M (the PyPI GGUF preset) on the
shipped order-extraction data with the package's own training loop, then
scores it on the first `--test-examples` of the held-out test split. Every
variant runs in its own process, so its peak memory is its own, with the
same data, split, seed, steps and learning rate.

A variant is `BASE:TARGETS:RANK`:
- `BASE`: `float32` or `bfloat16` (the preset in that dtype), or `int8` /
  `int4` (the float32 preset quantized with Keras' own quantization: QLoRA);
- `TARGETS`: `qv` (query, value: KerasHub's default) or `all-linear` (all 7
  projections);
- `RANK`: the LoRA rank. On Gemma 3 270M, `qv` costs 66,816 parameters per
  unit of rank and `all-linear` 258,048, so `qv:8` (534,528) and
  `all-linear:2` (516,096) are an equal budget.

Columns: trainable parameters; the model's weights in memory (sum of its
variables' sizes); the process's peak RSS (includes loading the float32
preset before quantizing); training time (compilation and the validation
passes before and after included); loss per response token and exact match
on the test examples.

Example (the README's table):
    python benchmarks/lora_variants.py --steps 60 --test-examples 50 \\
        --variants float32:qv:8 float32:all-linear:2 bfloat16:qv:8 int8:qv:8 int4:qv:8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

BASES = ("float32", "bfloat16", "int8", "int4")
TARGETS = {"qv": ("query", "value"), "all-linear": ("all-linear",)}


def parse_variant(text: str) -> tuple[str, str, int]:
    """`"int8:qv:8"` -> `("int8", "qv", 8)`, with a clear message for anything else."""
    parts = text.split(":")
    if (len(parts) != 3 or parts[0] not in BASES or parts[1] not in TARGETS
            or not parts[2].isdigit() or int(parts[2]) < 1):
        raise SystemExit(f"A variant is BASE:TARGETS:RANK with BASE in {BASES}, TARGETS in "
                         f"{tuple(TARGETS)} and RANK >= 1 (e.g. int8:qv:8); got {text!r}.")
    return parts[0], parts[1], int(parts[2])


def run_variant(variant: str, steps: int, test_examples: int, learning_rate: float) -> dict:
    """Train and score one variant in this process; returns its row."""
    import numpy as np

    from gemma_lora import data, tasks, lora, models, training
    from gemma_lora.config import RunConfig

    base, targets, rank = parse_variant(variant)
    dtype = "bfloat16" if base == "bfloat16" else "float32"
    with tempfile.TemporaryDirectory() as run_dir:
        config = RunConfig(preset="gemma3_270m_pypi", dtype=dtype, rank=rank, alpha=4 * rank,
                           target_layers=TARGETS[targets], max_steps=steps, eval_every=steps,
                           learning_rate=learning_rate, run_dir=run_dir)
        model = models.load_causal_lm(config.preset, dtype=config.dtype)
        if base in ("int8", "int4"):
            models.quantize_base(model, base)
        summary = lora.enable_lora(model, lora.LoraConfig.from_run(config))
        splits = data.load_splits(config)
        examples = {name: data.to_prompt_response(getattr(splits, name), config.template)
                    for name in ("train", "validation", "test")}
        test = {key: values[:test_examples] for key, values in examples["test"].items()}
        result = training.train(model, config, examples["train"], examples["validation"],
                             log=lambda line: print(f"  [{variant}] {line}", file=sys.stderr))
        scores = tasks.evaluate(model, test, config.max_new_tokens,
                                         config.eval_batch_size, config.sequence_length)
    weights = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights)
    return {
        "variant": variant,
        "trainable": summary.trainable,
        "weights_gib": weights / 2**30,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "train_seconds": result.seconds,
        "val_loss": result.best_val_loss,
        "test_loss": scores.loss,
        "exact_match": scores.exact_match,
        "test_examples": scores.num_examples,
    }


def markdown_table(rows: list[dict]) -> str:
    """The rows as the README's markdown table."""
    lines = ["| variant (base:targets:rank) | trainable | weights in memory | peak RSS | "
             "train time | test loss | exact match |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| `{row['variant']}` | {row['trainable']:,} | {row['weights_gib']:.2f} GiB | "
            f"{row['peak_rss_gib']:.2f} GiB | {row['train_seconds'] / 60:.1f} min | "
            f"{row['test_loss']:.4f} | {row['exact_match']:.0%} of {row['test_examples']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+",
                        default=["float32:qv:8", "float32:all-linear:2", "bfloat16:qv:8",
                                 "int8:qv:8", "int4:qv:8"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--test-examples", type=int, default=50)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_variant(args.one, args.steps, args.test_examples,
                                     args.learning_rate)))
        return
    for variant in args.variants:
        parse_variant(variant)
    rows = []
    for variant in args.variants:
        start = time.perf_counter()
        output = subprocess.run(
            [sys.executable, __file__, "--one", variant, "--steps", str(args.steps),
             "--test-examples", str(args.test_examples),
             "--learning-rate", str(args.learning_rate)],
            check=True, stdout=subprocess.PIPE, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(f"{variant}: done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
