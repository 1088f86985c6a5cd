"""Matrix multiplies in float32 and bfloat16 on the CPU: PyTorch (oneDNN) against JAX/XLA.

Every case computes `x @ w.T` with `w` laid out like Gemma's tied embedding
(`[n, k]`, the LM head's `[262144, 640]`), on the same random float32 values:

- `square`: 2048 x 2048 x 2048, the figure usually quoted;
- `lm_head_decode`: `[16, 640] x [640, 262144]`, the vocabulary projection of
  one decode step at batch 16 (`gemma_lora.tasks.decoding`);
- `lm_head_train`: `[128, 640] x [640, 262144]`, the projection at 128
  gathered loss positions (`gemma_lora.training.steps`).

Rows (`--variants`, comma-separated; default all):

- `torch_f32`, `torch_bf16`: `torch.matmul` (bf16 in and out: oneDNN, AMX
  where the CPU has it);
- `jax_f32`: `lax.dot_general` in float32 (XLA:CPU hands it to YNNPACK);
- `jax_f32_onednn`: the same under `ONEDNN_XLA_FLAGS` (XLA's oneDNN dot
  fusion, strict float32);
- `jax_f32_onednn_bf16math`: the same plus `ONEDNN_DEFAULT_FPMATH_MODE=BF16`
  (oneDNN may compute float32 matmuls with bf16 inputs: AMX);
- `jax_bf16`: bf16 in and out, which is what Keras' `ops.matmul`/`einsum`
  emit for a bfloat16 model: XLA:CPU upcasts such a dot to float32
  (FloatNormalization), converting the whole weight on every call;
- `jax_bf16_f32out`: bf16 in, `preferred_element_type=float32` out, the one
  bf16 form XLA:CPU hands to YNNPACK as bf16 (its AMX-BF16 kernels); its
  backward pass is JAX's default (which upcasts, see fwd+bwd);
- `jax_bf16_f32out_vjp`: float32 `x`, a bf16 copy of `w` made once, the same
  forward, and a `jax.custom_vjp` whose backward is also bf16 in, float32 out
  (`bf16_dot_f32out`);
- `jax_torch_callback`: JAX calls `torch_bf16` through `jax.pure_callback`
  (weights held on the PyTorch side; the float32 result comes back).

One worker process per environment (`VARIANTS`); the parent asks one
worker at a time for one timing, cycling through every row and shape
`--rounds` times, so rows are interleaved in time and share the same load.
Each timing is the median of `--reps` calls, after one untimed warm-up call
per row. Columns: median over rounds of the forward (`fwd ms`) and of
forward plus the gradient with respect to `x` (`fwd+bwd ms`, what LoRA
training needs through a frozen weight), GFLOP/s of the forward, the forward
time relative to `jax_f32`, and the forward's error: max |y - y64| / max |y64|
against float64 (first 2,048 output columns), so rounding float32 inputs to
bf16 counts.

Before the table it prints what XLA compiles a bf16 `lm_head_decode` dot to
(bf16 out, and float32 out) under each of `FLAG_SETS`, each in its own
process: the dtypes the dot runs in, its library fusion, and the converts
around it.

`--real-model N` instead checks the real Gemma 3 270M (offline preset,
float32) on the first N examples of the default run's test split (prompt +
response): in the default environment it projects the final hidden states
with the float32 embedding and with `bf16_dot_f32out` (bf16 embedding and
activations, float32 accumulation and logits), and it runs the whole model
again under `jax_f32_onednn_bf16math`'s environment; it prints, against the
float32 reference, the top-1 agreement over all positions, the largest logit
difference and the response-token cross-entropy.

Example (all rows):
    python benchmarks/matmul_dtypes.py
Example (the LM-head shapes, 5 rounds):
    python benchmarks/matmul_dtypes.py --shapes lm_head_decode,lm_head_train --rounds 5
Example (the real model's logits with bf16 matmuls):
    python benchmarks/matmul_dtypes.py --real-model 32
Example (smoke run, small shapes):
    python benchmarks/matmul_dtypes.py --tiny
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SHAPES = {"square": (2048, 2048, 2048), "lm_head_decode": (16, 640, 262144),
          "lm_head_train": (128, 640, 262144)}
TINY_SHAPES = {"square": (64, 64, 64), "lm_head_decode": (4, 32, 512), "lm_head_train": (8, 32, 512)}
ONEDNN_XLA_FLAGS = "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot"
BF16_MATH = {"XLA_FLAGS": ONEDNN_XLA_FLAGS, "ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}
FLAG_SETS = {
    "default": "",
    "oneDNN": ONEDNN_XLA_FLAGS + " --xla_cpu_experimental_onednn_custom_call=true",
    "YNN dot fusion": "--xla_cpu_experimental_ynn_fusion_type=dot",
    "no YNN": "--xla_cpu_experimental_ynn_fusion_type=",
}
VARIANTS = {  # name -> the environment of its worker process
    "torch_f32": {}, "torch_bf16": {}, "jax_f32": {}, "jax_f32_onednn": {"XLA_FLAGS": ONEDNN_XLA_FLAGS},
    "jax_f32_onednn_bf16math": BF16_MATH, "jax_bf16": {}, "jax_bf16_f32out": {},
    "jax_bf16_f32out_vjp": {}, "jax_torch_callback": {},
}
ERROR_COLUMNS = 2048


def activations(m: int, k: int):
    """Float32 `x [m, k]`."""
    import numpy as np

    return np.random.default_rng(m * k).standard_normal((m, k), dtype=np.float32)


@functools.lru_cache(maxsize=None)
def weight(k: int, n: int, library: str = "numpy", dtype: str = "float32"):
    """`w [n, k]` (scaled like a trained embedding), one copy per library and dtype.

    Args:
        k, n: its shape is `[n, k]`.
        library: "numpy", "jax" or "torch".
        dtype: "float32" or "bfloat16".

    Returns:
        The same values in every library (rounded to bf16 for "bfloat16").
    """
    import numpy as np

    if library == "numpy":
        return np.random.default_rng(n * k).standard_normal((n, k), dtype=np.float32) * np.float32(0.02)
    if library == "jax":
        import jax.numpy as jnp

        return jnp.asarray(weight(k, n), dtype)
    import torch

    return torch.from_numpy(weight(k, n)).to(getattr(torch, dtype))


def bf16_dot_f32out():
    """`x @ w.T` with bf16 inputs and float32 output, backward in the same form.

    Returns:
        A function `(x, w) -> float32 [m, n]` whose gradient with respect to
        `x` is a bf16 x bf16 -> float32 dot too (`w` gets no gradient).
    """
    import jax
    import jax.numpy as jnp

    def forward(x, w):
        return jax.lax.dot_general(x.astype(jnp.bfloat16), w, (((1,), (1,)), ((), ())),
                                   preferred_element_type=jnp.float32)

    @jax.custom_vjp
    def dot(x, w):
        return forward(x, w)

    def backward(w, cotangent):
        dx = jax.lax.dot_general(cotangent.astype(jnp.bfloat16), w, (((1,), (0,)), ((), ())),
                                 preferred_element_type=jnp.float32)
        return dx, None

    dot.defvjp(lambda x, w: (forward(x, w), w), backward)
    return dot


def jax_case(variant: str, x, k: int, n: int):
    """Jitted forward and forward+backward of one JAX row, and its prepared arguments."""
    import jax
    import jax.numpy as jnp

    def dot(a, b, **kwargs):
        return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), **kwargs)

    if variant.startswith("jax_f32"):  # the environment makes the _onednn variants
        args, forward = (jnp.asarray(x), weight(k, n, "jax")), dot
    elif variant == "jax_bf16":
        args, forward = (jnp.asarray(x, jnp.bfloat16), weight(k, n, "jax", "bfloat16")), dot
    elif variant == "jax_bf16_f32out":
        args = (jnp.asarray(x, jnp.bfloat16), weight(k, n, "jax", "bfloat16"))
        forward = lambda a, b: dot(a, b, preferred_element_type=jnp.float32)  # noqa: E731
    else:  # jax_bf16_f32out_vjp: float32 activations, bf16 weight
        args, forward = (jnp.asarray(x), weight(k, n, "jax", "bfloat16")), bf16_dot_f32out()

    def forward_backward(a, b):
        out, pull = jax.vjp(lambda a: forward(a, b), a)
        return pull(jnp.ones_like(out))[0]

    return jax.jit(forward), jax.jit(forward_backward), args


def torch_case(variant: str, x, k: int, n: int):
    """Forward and forward+backward of one PyTorch row (or the callback row)."""
    import numpy as np
    import torch

    dtype = "float32" if variant == "torch_f32" else "bfloat16"
    tw = weight(k, n, "torch", dtype)
    tx = torch.from_numpy(x).to(tw.dtype)

    def forward():
        with torch.no_grad():
            return tx @ tw.T

    def forward_backward():
        leaf = tx.detach().requires_grad_()
        out = leaf @ tw.T
        out.backward(torch.ones_like(out))
        return leaf.grad

    if variant != "jax_torch_callback":
        return forward, forward_backward, ()
    import jax
    import jax.numpy as jnp

    def head(a):
        with torch.no_grad():
            return (torch.from_numpy(np.array(a)).to(tw.dtype) @ tw.T).float().numpy()

    out = jax.ShapeDtypeStruct((x.shape[0], n), jnp.float32)
    return jax.jit(lambda a: jax.pure_callback(head, out, a)), None, (jnp.asarray(x),)


def time_call(function, args, reps: int) -> float:
    """Median seconds of `reps` synchronous calls."""
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        result = function(*args)
        if hasattr(result, "block_until_ready"):
            result.block_until_ready()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def relative_error(result, x, k: int, n: int) -> float:
    """max |result - x @ w.T| / max |x @ w.T| over the first columns, in float64."""
    import numpy as np

    reference = x.astype(np.float64) @ weight(k, n)[:ERROR_COLUMNS].astype(np.float64).T
    if hasattr(result, "detach"):  # a torch tensor (numpy has no bfloat16)
        result = result.detach().float().numpy()
    got = np.asarray(result).astype(np.float64)[:, :ERROR_COLUMNS]
    return float(np.abs(got - reference).max() / np.abs(reference).max())


def worker(shapes: dict, reps: int) -> None:
    """Serve `variant shape mode` lines on stdin with one timing (JSON) each."""
    cases = {}
    print("READY", flush=True)
    for line in sys.stdin:
        variant, shape, mode = line.split()
        m, k, n = shapes[shape]
        if (variant, shape) not in cases:
            maker = jax_case if variant.startswith("jax_") and variant != "jax_torch_callback" else torch_case
            cases[(variant, shape)] = maker(variant, activations(m, k), k, n)
        forward, forward_backward, args = cases[(variant, shape)]
        if mode == "error":
            reply = {"error": relative_error(forward(*args), activations(m, k), k, n)}
        elif mode.endswith("fwd+bwd") and forward_backward is None:
            reply = {"seconds": None}
        else:
            function = forward_backward if mode.endswith("fwd+bwd") else forward
            reply = {"seconds": time_call(function, args, 1 if mode.startswith("warm") else reps)}
        print(json.dumps(reply), flush=True)


def compiled_dot(preferred_element_type) -> str:
    """What XLA compiles a bf16 `lm_head_decode` dot to, under this process's `XLA_FLAGS`."""
    import re

    import jax
    import jax.numpy as jnp

    m, k, n = SHAPES["lm_head_decode"]
    x, w = jax.ShapeDtypeStruct((m, k), jnp.bfloat16), jax.ShapeDtypeStruct((n, k), jnp.bfloat16)
    text = jax.jit(lambda a, b: jax.lax.dot_general(
        a, b, (((1,), (1,)), ((), ())), preferred_element_type=preferred_element_type)).lower(x, w)
    text = text.compile().as_text()
    dot = re.search(r"= (\w+)\[[\d,]*\]\{[\d,]*\} dot\(%([\w.]+), %([\w.]+)\)", text)
    output, operands = dot[1], (dot[2], dot[3])
    inputs = [re.search(rf"%{re.escape(name)} = (\w+)\[", text)[1] for name in operands]
    entry = text[text.index("\nENTRY"):]
    kinds = re.findall(r'"kind":"(\w+)"', entry) or ["none (XLA's own dot)"]
    converts = len(re.findall(r"calls=%wrapped_convert", entry))
    return f"dot {' x '.join(inputs)} -> {output} via {', '.join(kinds)}, {converts} convert(s) around it"


def callback_overhead(reps: int) -> float:
    """Seconds of a `jax.pure_callback` round trip on a [16, 640] float32 identity."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    x = jnp.ones((16, 640), jnp.float32)
    f = jax.jit(lambda a: jax.pure_callback(np.asarray, jax.ShapeDtypeStruct(a.shape, a.dtype), a))
    time_call(f, (x,), 3)
    return time_call(f, (x,), reps * 10)


def logits_summary(logits, ids, response_start: int) -> dict:
    """What `compare_real_model` compares: top-1 ids, the response tokens' log-probs, a logits slice."""
    import numpy as np

    shifted = logits[response_start - 1:-1].astype(np.float64)
    peak = shifted.max(-1, keepdims=True)
    log_z = np.log(np.exp(shifted - peak).sum(-1)) + peak[:, 0]
    targets = shifted[np.arange(len(shifted)), ids[response_start:]]
    return {"top1": logits.argmax(-1), "log_probs": targets - log_z, "logits": logits[:, :ERROR_COLUMNS * 4]}


def real_model_logits(count: int, folder: str) -> None:
    """Save the real 270M's logits summaries on `count` test examples to `folder` (one .npz each).

    Each file holds `logits_summary` of the model as Keras computes it in this
    process's environment (`float32_*`) and of the same hidden states through
    `bf16_dot_f32out` (`bf16_head_*`).
    """
    import jax.numpy as jnp
    import numpy as np
    from gemma_lora import data
    from gemma_lora.config import RunConfig
    from gemma_lora.models import load_causal_lm

    model = load_causal_lm("gemma3_270m_pypi", dtype="float32")
    examples = data.to_prompt_response(data.load_splits(RunConfig()).test)
    tokenizer = model.preprocessor.tokenizer
    embedding = model.backbone.token_embedding
    bf16_embedding, head = jnp.asarray(embedding.embeddings, jnp.bfloat16), bf16_dot_f32out()
    for index, (prompt, response) in enumerate(list(zip(examples["prompts"], examples["responses"]))[:count]):
        prompt_ids = [tokenizer.start_token_id, *np.asarray(tokenizer(prompt)).tolist()]
        ids = np.asarray(prompt_ids + np.asarray(tokenizer(response)).tolist() + [tokenizer.end_token_id])
        hidden = model.backbone({"token_ids": ids[None], "padding_mask": np.ones((1, len(ids)), bool)})[0]
        summaries = {"float32": np.asarray(embedding(hidden, reverse=True)),
                     "bf16_head": np.asarray(head(jnp.asarray(hidden), bf16_embedding))}
        np.savez(os.path.join(folder, f"{index}.npz"), **{
            f"{name}_{key}": value for name, logits in summaries.items()
            for key, value in logits_summary(logits, ids, len(prompt_ids)).items()})


def compare_real_model(count: int) -> None:
    """Print how bf16 matmuls change the real 270M's logits against float32 (see the docstring)."""
    import numpy as np

    with tempfile.TemporaryDirectory() as default_dir, tempfile.TemporaryDirectory() as bf16_dir:
        for folder, env in ((default_dir, {}), (bf16_dir, BF16_MATH)):
            subprocess.run([sys.executable, __file__, "--worker", f"real:{count}:{folder}"], check=True,
                           env={**os.environ, "XLA_FLAGS": "", **env})
        pairs = []
        for index in range(count):
            default = dict(np.load(os.path.join(default_dir, f"{index}.npz")))
            other = dict(np.load(os.path.join(bf16_dir, f"{index}.npz")))
            pairs.append((default, default, other))
    reference = np.concatenate([d["float32_log_probs"] for d, _, _ in pairs])
    print(f"\nreal Gemma 3 270M, {count} test examples, "
          f"{sum(len(d['float32_top1']) for d, _, _ in pairs)} positions; float32 response "
          f"cross-entropy {-reference.mean():.5f}")
    for name, column, prefix in (("bf16 LM head only (bf16_dot_f32out)", 1, "bf16_head"),
                                 ("whole model, oneDNN BF16 math", 2, "float32")):
        agree = sum(int((p[0]["float32_top1"] == p[column][f"{prefix}_top1"]).sum()) for p in pairs)
        positions = sum(len(p[0]["float32_top1"]) for p in pairs)
        largest = max(float(np.abs(p[0]["float32_logits"] - p[column][f"{prefix}_logits"]).max())
                      for p in pairs)
        log_probs = np.concatenate([p[column][f"{prefix}_log_probs"] for p in pairs])
        print(f"- {name}: top-1 agreement {agree}/{positions} ({agree / positions:.2%}), max |logit "
              f"difference| {largest:.3f} (first {ERROR_COLUMNS * 4} vocabulary ids), response "
              f"cross-entropy {-log_probs.mean():.5f} (relative difference "
              f"{abs(log_probs.mean() - reference.mean()) / abs(reference.mean()):.1e}), max |log-prob "
              f"difference| at response tokens {np.abs(log_probs - reference).max():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="small shapes (smoke run)")
    parser.add_argument("--real-model", type=int, metavar="N",
                        help="compare the real 270M's logits with bf16 matmuls on N test examples instead")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    table = TINY_SHAPES if args.tiny else SHAPES
    if args.worker == "hlo":
        print(json.dumps([compiled_dot(None), compiled_dot("float32")]))
    elif args.worker and args.worker.startswith("real:"):
        _, count, folder = args.worker.split(":", 2)
        real_model_logits(int(count), folder)
    elif args.worker is not None:
        worker(table, args.reps)
    elif args.real_model:
        compare_real_model(args.real_model)
    else:
        run_table(args, table)


def run_table(args, table: dict) -> None:
    """Print the compiled-dot summary and the interleaved timing table."""
    variants, shapes = args.variants.split(","), args.shapes.split(",")
    unknown = sorted(set(variants) - set(VARIANTS)) + sorted(set(shapes) - set(table))
    if unknown:
        raise SystemExit(f"unknown variants/shapes {unknown}; variants: {', '.join(VARIANTS)}; "
                         f"shapes: {', '.join(table)}")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("PyTorch is not installed: skipping the torch_* and jax_torch_callback rows")
        variants = [v for v in variants if "torch" not in v]
    print("What XLA:CPU compiles a bf16 x bf16 dot to (lm_head_decode shape), by XLA_FLAGS:")
    for name, flags in FLAG_SETS.items():
        hlo = subprocess.run([sys.executable, __file__, "--worker", "hlo"], capture_output=True, text=True,
                             env={**os.environ, "XLA_FLAGS": flags}, check=True)
        bf16_out, f32_out = json.loads(hlo.stdout.splitlines()[-1])
        print(f"- {name} ({flags or 'no flags'}):\n    bf16 out: {bf16_out}\n    f32 out:  {f32_out}")
    load_before = os.getloadavg()
    workers = {}
    for v in variants:
        key = json.dumps(VARIANTS[v], sort_keys=True)
        if key not in workers:
            command = [sys.executable, __file__, "--worker", "", "--reps", str(args.reps)] + ["--tiny"] * args.tiny
            workers[key] = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                            env={**os.environ, "XLA_FLAGS": "", **VARIANTS[v]})
            if workers[key].stdout.readline().strip() != "READY":
                raise SystemExit(f"the worker for {VARIANTS[v]} did not start")

    def ask(variant, shape, mode):
        process = workers[json.dumps(VARIANTS[variant], sort_keys=True)]
        process.stdin.write(f"{variant} {shape} {mode}\n")
        process.stdin.flush()
        line = process.stdout.readline()
        if not line:
            raise SystemExit(f"{variant} on {shape} ({mode}) failed")
        return json.loads(line)

    cells = [(v, s, mode) for s in shapes for v in variants for mode in ("fwd", "fwd+bwd")]
    errors = {(v, s): ask(v, s, "error")["error"] for v, s, mode in cells if mode == "fwd"}
    for v, s, mode in cells:  # warm-up round, one call each: compiles, first-touch memory
        ask(v, s, "warm" + mode)
    timings = {cell: [] for cell in cells}
    for round_index in range(args.rounds):
        print(f"round {round_index + 1}/{args.rounds}, load average {os.getloadavg()[0]:.1f}",
              file=sys.stderr, flush=True)
        for cell in cells:
            timings[cell].append(ask(*cell)["seconds"])
    for process in workers.values():
        process.stdin.close()
        process.wait()
    load_after = os.getloadavg()

    overhead = callback_overhead(args.reps) if "jax_torch_callback" in variants else None
    print(f"\nx @ w.T, median of {args.rounds} interleaved rounds x {args.reps} calls; "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after ({os.cpu_count()} CPUs)")
    header = ("variant", "shape (m, k, n)", "fwd ms", "fwd GFLOP/s", "fwd+bwd ms", "fwd speed-up vs jax_f32",
              "rel. error")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for s in shapes:
        m, k, n = table[s]
        base = statistics.median(timings[("jax_f32", s, "fwd")]) if "jax_f32" in variants else None
        for v in variants:
            fwd = statistics.median(timings[(v, s, "fwd")])
            both = timings[(v, s, "fwd+bwd")]
            both_text = f"{statistics.median(both) * 1e3:,.1f}" if None not in both else "n/a"
            ratio = f"{base / fwd:.2f}x" if base else ""
            print(f"| {v} | {s} ({m}, {k}, {n}) | {fwd * 1e3:,.1f} | {2 * m * k * n / fwd / 1e9:,.0f} | "
                  f"{both_text} | {ratio} | {errors[(v, s)]:.1e} |")
    if overhead is not None:
        print(f"\njax.pure_callback round trip ([16, 640] float32 identity): {overhead * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
