"""Training throughput: stock KerasHub LoRA + `fit` against gemma_lora's step.

Models are built at real size with random weights from a KerasHub config
(no download; exact for speed and memory). Both paths train on the same
batches of token ids drawn from a length distribution:

- `full`: every row is `--max-length` real tokens, half prompt;
- `data:PATH`: prompt/response lengths of an Alpaca-style file, tokenized
  with the Gemma 3 tokenizer of the offline preset (needs TensorFlow);
- `parametric:MEAN`: lengths uniform in [0.1, 2·MEAN - 0.1] of the maximum,
  prompt half of each example (`MEAN` e.g. 0.33).

Variants: `stock` is KerasHub's `backbone.enable_lora` + `fit` on batches
padded to `--max-length`; `ours` is gemma_lora's compiled step with length
buckets; `--packing` adds `ours+packing`, the same step on the same examples
packed into rows of `--max-length` (`RunConfig.packing`). When torch,
transformers and peft are importable (and unless `--no-hf`), the peer rows
`hf_peft_float32` and `hf_peft_bfloat16` run too: transformers'
`Gemma3ForCausalLM` (`Gemma2ForCausalLM` for `gemma2_2b`) built from the same
shapes with random weights, PEFT LoRA of the same rank, alpha and targets
(`KERAS_TO_PEFT` names: q_proj, v_proj for `qv`), dropout 0, torch AdamW with
the same learning rate, weight decay and global-norm clipping, on the same
examples in the same batches, each padded to its longest row (dynamic
padding, as transformers' collators do) with prompt and padding labels
-100, and the model's own loss over logits at every position. In
bfloat16 the base weights are bfloat16 and PEFT keeps the LoRA weights in
float32 (as Keras does). `--loss-chunk N`
sets our steps' `loss_chunk_size` (0: all logits at once; default: the
library's default). Each variant runs in its own process (so peak memory is
its own), warms up, then times `--steps` steps, synchronising on the loss
every step.

Columns: effective tokens/s counts loss-bearing (response) tokens; processed
tokens/s counts the positions the step computes (padding included); MFU =
FLOPs the step performs per second / peak. Per processed token: 4·N_body
(forward plus activation gradients over every multiplied weight of the
blocks) + 3 x attention forward (2·2·L·T_avg·H·d) + 6·r·(d_in + d_out) per
LoRA module; plus 4·V·d for each position whose logits the step computes
(every position for stock KerasHub and transformers, the gathered loss positions for ours).
The peak is measured with a large matmul on the same device. On CPU, peak memory is the process's peak
RSS; on GPU, JAX's `peak_bytes_in_use`.

Example (CPU, the default notebook's data and settings):
    python benchmarks/train_throughput.py --arch gemma3_270m --batch 4 \\
        --max-length 128 --lengths data:data/order_extraction.jsonl
Example (stock vs buckets vs packing, short varied examples):
    python benchmarks/train_throughput.py --arch gemma3_1b --batch 16 \\
        --max-length 512 --lengths parametric:0.2 --dtype bfloat16 --packing
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

from gemma_lora.config import DEFAULT_LOSS_CHUNK_SIZE  # noqa: E402 (after the backend is chosen)

ARCHS = {
    # A toy size for smoke tests; the others are the real presets' shapes.
    "tiny": dict(cls="Gemma3Backbone", vocabulary_size=512, num_layers=2, num_query_heads=2,
                 num_key_value_heads=1, hidden_dim=32, intermediate_dim=64, head_dim=16,
                 query_head_dim_normalize=True, use_post_ffw_norm=True, use_post_attention_norm=True,
                 use_sliding_window_attention=True, sliding_window_size=16, image_size=None),
    "gemma3_270m": dict(cls="Gemma3Backbone", vocabulary_size=262144, num_layers=18, num_query_heads=4,
                        num_key_value_heads=1, hidden_dim=640, intermediate_dim=2048, head_dim=256,
                        query_head_dim_normalize=True, use_post_ffw_norm=True, use_post_attention_norm=True,
                        use_sliding_window_attention=True, sliding_window_size=512, image_size=None),
    "gemma3_1b": dict(cls="Gemma3Backbone", vocabulary_size=262144, num_layers=26, num_query_heads=4,
                      num_key_value_heads=1, hidden_dim=1152, intermediate_dim=6912, head_dim=256,
                      query_head_dim_normalize=True, use_post_ffw_norm=True, use_post_attention_norm=True,
                      use_sliding_window_attention=True, sliding_window_size=512, image_size=None),
    "gemma2_2b": dict(cls="GemmaBackbone", vocabulary_size=256000, num_layers=26, num_query_heads=8,
                      num_key_value_heads=4, hidden_dim=2304, intermediate_dim=18432, head_dim=256,
                      query_head_dim_normalize=True, use_post_ffw_norm=True, use_post_attention_norm=True,
                      final_logit_soft_cap=30.0, attention_logit_soft_cap=50.0,
                      use_sliding_window_attention=True, sliding_window_size=4096),
}
HF_VARIANTS = ("hf_peft_float32", "hf_peft_bfloat16")
VARIANTS = ("stock", "ours", "ours+packing", *HF_VARIANTS)
TARGETS = {"qv": ("query", "value"),
           "all": ("query", "key", "value", "attention_output", "ffw_gating", "ffw_gating_2", "ffw_linear")}


def sample_lengths(spec: str, count: int, max_length: int, seed: int):
    """(prompt_length, response_length) pairs, each total <= max_length."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if spec == "full":
        half = max_length // 2
        return [(half, max_length - half)] * count
    if spec.startswith("parametric:"):
        mean = float(spec.split(":", 1)[1])
        totals = rng.uniform(0.1, 2 * mean - 0.1, size=count) * max_length
        totals = np.clip(totals.astype(int), 4, max_length)
        return [(int(t) // 2, int(t) - int(t) // 2) for t in totals]
    if spec.startswith("data:"):
        from gemma_lora import data
        from gemma_lora.models import gemma3_270m_preset
        import keras_hub

        examples = data.to_prompt_response(data.read_records(spec.split(":", 1)[1]))
        tokenizer = keras_hub.models.Gemma3Tokenizer.from_preset(str(gemma3_270m_preset()))
        prompts = [len(ids) + 1 for ids in tokenizer(examples["prompts"])]  # + start token
        responses = [len(ids) + 1 for ids in tokenizer(examples["responses"])]  # + end token
        order = rng.integers(0, len(prompts), size=count)
        pairs = []
        for i in order:
            prompt = min(prompts[i], max_length - 1)
            pairs.append((prompt, min(responses[i], max_length - prompt)))
        return pairs
    raise SystemExit(f"--lengths must be 'full', 'data:PATH' or 'parametric:MEAN'; got {spec!r}")


def make_split(pairs, vocabulary_size: int, max_length: int, seed: int):
    """A TokenizedSplit of random token ids with the given prompt/response lengths."""
    import numpy as np
    from gemma_lora.training.batching import TokenizedSplit

    rng = np.random.default_rng(seed)
    count = len(pairs)
    ids = rng.integers(10, vocabulary_size, size=(count, max_length + 1)).astype("int32")
    mask = np.zeros((count, max_length + 1), bool)
    weights = np.zeros((count, max_length), "float32")
    for row, (prompt, response) in enumerate(pairs):
        mask[row, : prompt + response] = True
        weights[row, prompt - 1: prompt + response - 1] = 1.0
    ids[~mask] = 0
    return TokenizedSplit(ids[:, :-1], mask[:, :-1], ids[:, 1:], weights * mask[:, 1:])


def flops_per_token(config: dict, rank: int, targets, avg_context: float) -> tuple[float, float]:
    """Training FLOPs (per processed token, per logits position) with a frozen base."""
    d, f, h, kv, hd, v, n = (config[k] for k in ("hidden_dim", "intermediate_dim", "num_query_heads",
                                                "num_key_value_heads", "head_dim", "vocabulary_size",
                                                "num_layers"))
    shapes = {"query": (d, h * hd), "key": (d, kv * hd), "value": (d, kv * hd),
              "attention_output": (h * hd, d), "ffw_gating": (d, f), "ffw_gating_2": (d, f),
              "ffw_linear": (f, d)}
    body = n * sum(a * b for a, b in shapes.values())
    attention = n * 2 * 2 * avg_context * h * hd
    lora = n * sum(6 * rank * sum(shapes[t]) for t in targets)
    return 4 * body + 3 * attention + lora, 4 * v * d


def peak_memory_gib(torch_device=None) -> float:
    """Peak accelerator memory of this process (JAX's, or torch's), else its peak RSS."""
    import jax

    device = jax.devices()[0]
    if torch_device is not None and torch_device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(torch_device) / 2**30
    if torch_device is None and device.platform != "cpu":
        return device.memory_stats()["peak_bytes_in_use"] / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def hf_stack_missing() -> str | None:
    """The first of torch, transformers, peft that cannot be imported, or None."""
    import importlib.util

    return next((name for name in ("torch", "transformers", "peft")
                 if importlib.util.find_spec(name) is None), None)


def build_hf_model(arch: str, dtype: str, rank: int, targets):
    """transformers' causal LM of `arch`'s shapes (random weights) with PEFT LoRA on `targets`."""
    import peft
    import torch
    import transformers
    from gemma_lora.lora.peft_layout import KERAS_TO_PEFT

    config = dict(ARCHS[arch])
    gemma2 = config.pop("cls") == "GemmaBackbone"
    common = dict(vocab_size=config["vocabulary_size"], hidden_size=config["hidden_dim"],
                  intermediate_size=config["intermediate_dim"], num_hidden_layers=config["num_layers"],
                  num_attention_heads=config["num_query_heads"],
                  num_key_value_heads=config["num_key_value_heads"], head_dim=config["head_dim"],
                  query_pre_attn_scalar=config["head_dim"], sliding_window=config["sliding_window_size"])
    if gemma2:
        hf_config = transformers.Gemma2Config(
            **common, final_logit_softcapping=config["final_logit_soft_cap"],
            attn_logit_softcapping=config["attention_logit_soft_cap"])
        cls = transformers.Gemma2ForCausalLM
    else:
        hf_config, cls = transformers.Gemma3TextConfig(**common), transformers.Gemma3ForCausalLM
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = cls(hf_config).to(device=device, dtype=getattr(torch, dtype))
    lora_config = peft.LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0,
                                  target_modules=[KERAS_TO_PEFT[t][1] for t in targets])
    return peft.get_peft_model(model, lora_config), device


def hf_batch(split, indices) -> dict:
    """One transformers batch of `split`'s rows: padded to its longest row, labels -100 off the loss.

    transformers' causal-LM loss predicts `labels[t + 1]` from position `t`,
    so the split's label at `t` (weighted by its loss weight) goes to `t + 1`.
    """
    import numpy as np
    import torch

    length = int(split.padding_mask[indices].sum(axis=1).max())
    labels = np.full((len(indices), length), -100, dtype=np.int64)
    labels[:, 1:] = np.where(split.loss_weights[indices, :length - 1] > 0,
                             split.labels[indices, :length - 1], -100)
    return {"input_ids": torch.from_numpy(split.token_ids[indices, :length].astype(np.int64)),
            "attention_mask": torch.from_numpy(split.padding_mask[indices, :length].astype(np.int64)),
            "labels": torch.from_numpy(labels)}


def run_hf_variant(args, split, batches_idx, config) -> tuple[list, list, list, str, object]:
    """Time transformers + PEFT training steps; (step times, processed, logit positions, device, torch device)."""
    import torch

    model, device = build_hf_model(args.arch, args.variant.rsplit("_", 1)[1], args.rank, TARGETS[args.targets])
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=config.learning_rate, weight_decay=config.weight_decay)
    step_times, processed = [], []
    for indices in batches_idx:
        batch = {key: value.to(device) for key, value in hf_batch(split, indices).items()}
        processed.append(batch["input_ids"].numel())
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        if config.gradient_clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.gradient_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        step_times.append(time.perf_counter() - start)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return step_times, processed, processed, name, device


def matmul_peak_flops() -> float:
    import jax
    import jax.numpy as jnp

    size = 2048 if jax.devices()[0].platform == "cpu" else 8192
    dtype = "float32" if jax.devices()[0].platform == "cpu" else "bfloat16"
    a = jnp.ones((size, size), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(5):
        f(a).block_until_ready()
    return 5 * 2 * size**3 / (time.perf_counter() - start)


def build_model(args):
    import keras
    import keras_hub

    config = dict(ARCHS[args.arch])
    cls = getattr(keras_hub.models, config.pop("cls"))
    if cls is keras_hub.models.GemmaBackbone:
        for key in ("use_post_ffw_norm", "use_post_attention_norm", "image_size"):
            config.pop(key, None)
    keras.utils.set_random_seed(0)
    backbone = cls(dtype=args.dtype, **config)
    task = (keras_hub.models.Gemma3CausalLM if cls is keras_hub.models.Gemma3Backbone
            else keras_hub.models.GemmaCausalLM)
    return task(backbone=backbone, preprocessor=None)


def run_variant(args) -> dict:
    import jax
    import numpy as np
    from gemma_lora import lora, training
    from gemma_lora.training import batching
    from gemma_lora.config import RunConfig

    pairs = sample_lengths(args.lengths, args.batch * (args.steps + args.warmup), args.max_length, args.seed)
    split = make_split(pairs, ARCHS[args.arch]["vocabulary_size"], args.max_length, args.seed)
    model = None if args.variant in HF_VARIANTS else build_model(args)
    targets = TARGETS[args.targets]
    config = RunConfig(rank=args.rank, learning_rate=1e-4, warmup_steps=0, max_steps=10_000)
    step_times = []
    order = np.arange(len(split))
    batches_idx = [order[i * args.batch:(i + 1) * args.batch] for i in range(args.steps + args.warmup)]
    device_name, torch_device = str(jax.devices()[0].device_kind), None

    if args.variant in HF_VARIANTS:
        step_times, processed, logit_positions, device_name, torch_device = run_hf_variant(
            args, split, batches_idx, config)
    elif args.variant == "stock":
        import keras

        model.backbone.enable_lora(args.rank, target_layer_names=list(targets))
        model.compile(optimizer=training.make_optimizer(config, 10_000),
                      loss=keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True, reduction="mean_with_sample_weight"),
                      weighted_metrics=[])
        processed = [args.batch * args.max_length] * len(batches_idx)
        logit_positions = processed

        class Clock(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                self.start = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                float(logs["loss"])
                step_times.append(time.perf_counter() - self.start)

        x = {"token_ids": split.token_ids, "padding_mask": split.padding_mask}
        model.fit(x, split.labels, sample_weight=split.loss_weights, batch_size=args.batch,
                  epochs=1, shuffle=False, verbose=0, callbacks=[Clock()])
    else:
        from gemma_lora.training import CompiledSteps

        lora.enable_lora(model, lora.LoraConfig(rank=args.rank, target_layers=targets))
        steps = CompiledSteps(model, training.make_optimizer(config, 10_000),
                              loss_chunk_size=args.loss_chunk)
        buckets = batching.bucket_lengths(args.max_length)
        buffer = batching.loss_buffer_size(split)
        processed, logit_positions = [], []
        for indices in batches_idx:
            if args.variant == "ours+packing":
                batch = batching.make_packed_batch(split, indices, args.max_length, buffer, args.batch)
            else:
                batch = batching.make_batch(split, indices, buckets, buffer)
            processed.append(batch["token_ids"].size)
            logit_positions.append(batch["loss_positions"].size)
            start = time.perf_counter()
            steps.train_step(batch)
            step_times.append(time.perf_counter() - start)

    timed = step_times[args.warmup:]
    effective = [float(split.loss_weights[i].sum()) for i in batches_idx][args.warmup:]
    real = [int(split.padding_mask[i].sum()) for i in batches_idx][args.warmup:]
    seconds = sum(timed)
    avg_context = float(np.mean([p + r for p, r in pairs])) / 2
    peak = matmul_peak_flops()
    processed_timed = processed[args.warmup:]
    token_flops, logit_flops = flops_per_token(ARCHS[args.arch], args.rank, targets, avg_context)
    flops = sum(processed_timed) * token_flops + sum(logit_positions[args.warmup:]) * logit_flops
    return {
        "variant": args.variant,
        "device": device_name,
        "median_step_s": float(np.median(timed)),
        "effective_tokens_per_s": sum(effective) / seconds,
        "processed_tokens_per_s": sum(processed_timed) / seconds,
        "padding_fraction": 1 - sum(real) / sum(processed_timed),
        "peak_memory_gib": peak_memory_gib(torch_device),
        "mfu": flops / seconds / peak,
        "first_step_s": step_times[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="gemma3_270m")
    parser.add_argument("--targets", choices=sorted(TARGETS), default="qv")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lengths", default="full")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="stock,ours",
                        help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--packing", action="store_true", help="also run ours+packing")
    parser.add_argument("--no-hf", action="store_true",
                        help="skip the transformers + PEFT rows (they run when torch, transformers and peft import)")
    parser.add_argument("--loss-chunk", type=int, default=DEFAULT_LOSS_CHUNK_SIZE,
                        help="our steps' loss_chunk_size; 0 builds all logits at once")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print("RESULT " + json.dumps(run_variant(args)), flush=True)
        return
    variants = args.variants.split(",") + (["ours+packing"] if args.packing else [])
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants must be among {', '.join(VARIANTS)}; got {unknown}")
    missing = hf_stack_missing()
    if not args.no_hf and missing is None:
        variants += HF_VARIANTS
    elif not args.no_hf:
        print(f"{missing} is not installed: skipping the transformers + PEFT rows "
              f"({', '.join(HF_VARIANTS)}); `make setup-interop` installs them")
    variants = [v for v in variants if v not in HF_VARIANTS or missing is None]
    results = []
    for variant in dict.fromkeys(variants):
        command = [sys.executable, __file__, *sys.argv[1:], "--variant", variant]
        output = subprocess.run(command, capture_output=True, text=True)
        lines = [l for l in output.stdout.splitlines() if l.startswith("RESULT ")]
        if output.returncode or not lines:
            sys.stderr.write(output.stderr[-3000:])
            raise SystemExit(f"variant {variant} failed")
        results.append(json.loads(lines[-1][7:]))
    print(f"\n{args.arch}, LoRA {args.targets} r={args.rank}, batch {args.batch}, max length "
          f"{args.max_length}, lengths {args.lengths}, dtype {args.dtype}, loss chunk "
          f"{args.loss_chunk or 'off'}, {args.steps} timed steps on {results[0]['device']}")
    header = ("variant", "step s", "eff tok/s", "proc tok/s", "padding", "peak GiB", "MFU", "1st step s")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in results:
        print(f"| {r['variant']} | {r['median_step_s']:.3f} | {r['effective_tokens_per_s']:,.0f} | "
              f"{r['processed_tokens_per_s']:,.0f} | {r['padding_fraction']:.0%} | "
              f"{r['peak_memory_gib']:.2f} | {r['mfu']:.1%} | {r['first_step_s']:.1f} |")
    references = [r for r in results if r["variant"] == "stock" or r["variant"] in HF_VARIANTS]
    for reference in references:
        for r in results:
            if r["variant"].startswith("ours"):
                print(f"\nstep time {r['variant']}/{reference['variant']}: "
                      f"{r['median_step_s'] / reference['median_step_s']:.2f}x; effective tokens/s "
                      f"{r['variant']}/{reference['variant']}: "
                      f"{r['effective_tokens_per_s'] / reference['effective_tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
