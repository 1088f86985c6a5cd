"""Generation speed: KerasHub's `generate` against gemma_lora's decoder, on the same prompts.

Rows (each in its own process, so peak memory is its own):

- `keras_hub`: `tasks.generate_with_keras_hub`, the path evaluation used
  before the decoder (KerasHub `generate`, greedy, one `max_length` for the
  whole split: longest prompt + 1 + `--max-new-tokens`);
- `ours`: `tasks.decoding.decode` (prefill once, new tokens only, per-row
  stops on end tokens and the template's next `###` section);
- with `--adapter FOLDER`, both again with the adapter loaded (`+tuned`).

Prompts are the first `--prompts` of the default run's test split
(`data.load_splits(RunConfig())`), or synthetic ones with `--tiny` (a tiny
random model, for a smoke run). Both rows decode greedily with batches of
`--batch-size`.

Columns: answer tokens/s = tokens of the answers (each generation cut at
the next section, re-tokenized, +1 for its end token when it stopped on
one; the same count for both rows when their answers agree) per second of
generation after compiling; wall s = that generation time; compile s =
compile time (ours: measured exactly; KerasHub: its warm-up batch minus the
average batch time after); peak RSS of the process; early = prompts that
stopped before their token budget (KerasHub decodes a batch until every row
ended); same = prompts whose answer equals the `keras_hub` row's (ours is
cut at `--max-new-tokens`, so a budget-limited answer counts when it is a
prefix of KerasHub's).

Example (CPU, the real Gemma 3 270M):
    python benchmarks/generation_speed.py --prompts 64
Example (smoke run):
    python benchmarks/generation_speed.py --tiny --prompts 6
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")


def load_model(args):
    """The model (with the adapter when `args.tuned`) and the prompts."""
    if args.tiny:
        from gemma_lora.testing import tiny_causal_lm

        model = tiny_causal_lm()
        colors, items = ("red", "blue", "green"), ("mug", "hat", "lamp", "scarf")
        prompts = [
            "### Instruction:\nWhich color is wanted?\n\n### Input:\nPlease send "
            f"{i % 4 + 1} {colors[i % 3]} {items[i % 4]}{' to Paris' * (i % 3)}.\n\n### Response:\n"
            for i in range(args.prompts)
        ]
        return model, prompts
    from gemma_lora import data
    from gemma_lora.config import RunConfig
    from gemma_lora.lora import load_adapter
    from gemma_lora.models import load_causal_lm

    model = load_causal_lm(args.preset, dtype="float32")
    if args.tuned:
        load_adapter(model, args.adapter)
    splits = data.load_splits(RunConfig())
    return model, data.to_prompt_response(splits.test)["prompts"][:args.prompts]


def answer_tokens(model, texts, ended):
    """Tokens of each answer (cut at the next section), +1 where it ended on an end token."""
    from gemma_lora.tasks import stopping

    answers = [stopping.SECTION_HEADER.split(text, maxsplit=1)[0] for text in texts]
    ids = model.preprocessor.tokenizer(answers)
    ids = ids.to_list() if hasattr(ids, "to_list") else ids
    return answers, [len(row) + int(end) for row, end in zip(ids, ended)]


def run_variant(args) -> dict:
    """Time one row in this process; returns its measurements and answers."""
    from gemma_lora import tasks
    from gemma_lora.tasks import decoding

    start = time.perf_counter()
    model, prompts = load_model(args)
    load_seconds = time.perf_counter() - start
    batch = args.batch_size
    if args.variant == "ours":
        decoder = decoding.decoder_for(model)
        compile_seconds = decoder.compile(prompts, args.max_new_tokens, batch, stop_at_section=True)
        decoder.decode(prompts[:batch], args.max_new_tokens, batch, stop_at_section=True)  # warm-up, as KerasHub's
        start = time.perf_counter()
        result = decoder.decode(prompts, args.max_new_tokens, batch, stop_at_section=True)
        seconds = time.perf_counter() - start
        ended = [reason == decoding.END_TOKEN for reason in result.stop_reasons]
        texts, early, programs = result.texts, result.stopped_early, result.programs
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    else:
        # Warm up on one batch holding the longest prompt: the same max_length as the run.
        lengths = [len(ids) for ids in decoding.decoder_for(model).token_ids(prompts)]
        longest = prompts[lengths.index(max(lengths))]
        start = time.perf_counter()
        tasks.generate_with_keras_hub(model, [longest] + prompts[:batch - 1], args.max_new_tokens, batch)
        warm_up = time.perf_counter() - start
        start = time.perf_counter()
        texts = tasks.generate_with_keras_hub(model, prompts, args.max_new_tokens, batch)
        seconds = time.perf_counter() - start
        batches = -(-len(prompts) // batch)
        compile_seconds = max(0.0, warm_up - seconds / batches)
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before ours runs below
        # Rows that end on an end token: where ours ends on one (same greedy tokens).
        reference = decoding.decode(model, prompts, args.max_new_tokens, batch, stop_at_section=True)
        ended = [reason == decoding.END_TOKEN for reason in reference.stop_reasons]
        early, programs = 0, 1
    answers, counts = answer_tokens(model, texts, ended)
    return {"variant": args.variant + ("+tuned" if args.tuned else ""), "prompts": len(prompts),
            "answer_tokens": sum(counts), "seconds": seconds, "compile_seconds": compile_seconds,
            "load_seconds": load_seconds, "peak_rss_mb": peak_rss,
            "early": early, "programs": programs, "answers": answers}


def same_answers(ours: list[str], reference: list[str]) -> int:
    """Answers equal to the reference's, or a prefix of it (ours stops at its budget)."""
    return sum(a == b or (a and b.startswith(a)) for a, b in zip(ours, reference))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64, help="test prompts to generate for")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--preset", default="gemma3_270m_pypi")
    parser.add_argument("--adapter", default=None, help="an adapter folder: adds the tuned rows")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (smoke run)")
    parser.add_argument("--variant", choices=("keras_hub", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--tuned", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    common = [sys.executable, __file__, "--prompts", str(args.prompts), "--max-new-tokens",
              str(args.max_new_tokens), "--batch-size", str(args.batch_size), "--preset", args.preset]
    common += ["--tiny"] * args.tiny + (["--adapter", args.adapter] if args.adapter else [])
    rows = []
    for tuned in ([False, True] if args.adapter else [False]):
        for variant in ("keras_hub", "ours"):
            command = common + ["--variant", variant] + ["--tuned"] * tuned
            completed = subprocess.run(command, capture_output=True, text=True)
            if completed.returncode:
                sys.exit(f"{variant} failed:\n{completed.stderr[-3000:]}")
            rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    source = "tiny random Gemma 3" if args.tiny else args.preset
    print(f"\n{source}, {rows[0]['prompts']} prompts, batch {args.batch_size}, "
          f"max_new_tokens {args.max_new_tokens}, greedy\n")
    print("| row | answer tokens/s | wall s | compile s | peak RSS MB | early | same | programs |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        reference = next(r for r in rows if r["variant"] == row["variant"].replace("ours", "keras_hub"))
        same = same_answers(row["answers"], reference["answers"])
        print(f"| {row['variant']} | {row['answer_tokens'] / row['seconds']:,.1f} | {row['seconds']:.2f} | "
              f"{row['compile_seconds']:.2f} | {row['peak_rss_mb']:,.0f} | {row['early']}/{row['prompts']} | "
              f"{same}/{row['prompts']} | {row['programs']} |")
    for tuned in ("", "+tuned"):
        pair = [r for r in rows if r["variant"] in (f"keras_hub{tuned}", f"ours{tuned}")]
        if len(pair) == 2:
            print(f"\nwall time keras_hub{tuned}/ours{tuned}: {pair[0]['seconds'] / pair[1]['seconds']:.2f}x")


if __name__ == "__main__":
    main()
