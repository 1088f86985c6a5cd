"""Temporary memory of the compiled loss-and-gradient step, per `loss_chunk_size`.

Prints the table of docs/performance.md ("Chunked cross-entropy"): for each
chunk size, the temporary (scratch) memory XLA's compile-time memory analysis
reports for `jax.jit(jax.value_and_grad(CompiledSteps.loss_fn))`: the loss
and gradients, the part of the training step that chunking changes (the
AdamW update of the LoRA matrices is left out). It is a property of the
compiled program, so it does not depend on the machine's load; nothing is
run, only compiled.

The model is built at real size with random weights (`train_throughput.py`'s
`--arch` shapes; no download), LoRA on `--targets` at `--rank`, and one batch
of `--batch` rows of `--max-length` random tokens whose first
`--loss-positions / --batch` positions of every row carry the loss.

Example (the table in docs/performance.md; one compilation per chunk size):
    python benchmarks/memory.py --arch gemma3_270m --batch 8 --max-length 256 \\
        --loss-positions 1024 --chunks 0 1024 512 256
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

from train_throughput import ARCHS  # noqa: E402 (after the backend is chosen)
from train_throughput import TARGETS  # noqa: E402
from train_throughput import build_model  # noqa: E402


def step_temp_bytes(model, batch: dict, chunk: int) -> int:
    """Temporary bytes of the compiled loss-and-gradient step with `loss_chunk_size=chunk`."""
    import jax

    from gemma_lora.training import CompiledSteps

    steps = CompiledSteps(model, loss_chunk_size=chunk or None)
    step = jax.jit(jax.value_and_grad(steps.loss_fn))
    compiled = step.lower(steps.trainable, steps.non_trainable, batch).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def random_batch(vocabulary_size: int, rows: int, length: int, loss_positions: int) -> dict:
    """Random tokens; the first `loss_positions / rows` positions of each row carry the loss."""
    import numpy as np

    per_row = loss_positions // rows
    rng = np.random.default_rng(0)
    return {"token_ids": rng.integers(0, vocabulary_size, (rows, length)).astype("int32"),
            "padding_mask": np.ones((rows, length), bool),
            "loss_positions": np.tile(np.arange(per_row, dtype="int32"), (rows, 1)),
            "loss_labels": rng.integers(0, vocabulary_size, (rows, per_row)).astype("int32"),
            "loss_weights": np.ones((rows, per_row), "float32")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="gemma3_270m")
    parser.add_argument("--targets", choices=sorted(TARGETS), default="qv")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--loss-positions", type=int, default=1024)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--chunks", type=int, nargs="+", default=[0, 512, 256],
                        help="loss_chunk_size values; 0 builds all logits at once")
    args = parser.parse_args()
    if args.loss_positions % args.batch or not 0 < args.loss_positions // args.batch <= args.max_length:
        raise SystemExit(f"--loss-positions must be a multiple of --batch ({args.batch}) and at most "
                         f"--batch x --max-length; got {args.loss_positions}")
    from gemma_lora import lora

    model = build_model(argparse.Namespace(arch=args.arch, dtype=args.dtype))
    lora.enable_lora(model, lora.LoraConfig(rank=args.rank, target_layers=TARGETS[args.targets]))
    batch = random_batch(ARCHS[args.arch]["vocabulary_size"], args.batch, args.max_length,
                         args.loss_positions)
    print(f"{args.arch}, {args.dtype}, LoRA {args.targets} r={args.rank}, batch {args.batch} x "
          f"{args.max_length} tokens with {args.loss_positions:,} loss positions: temporary memory "
          f"of the compiled loss-and-gradient step (XLA memory analysis)")
    print("| `loss_chunk_size` | temporary memory of the step |\n|---|---|")
    for chunk in args.chunks:
        name = f"{chunk}" if chunk else "`None`"
        name += "" if 0 < chunk < args.loss_positions else " (not chunked)"
        size = step_temp_bytes(model, batch, chunk)
        shown = f"{size / 2**30:.2f} GiB" if size >= 2**28 else f"{size / 2**20:.2f} MiB"
        print(f"| {name} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
