"""The real Gemma 3 270M, tuned, in the runtimes that serve it: transformers and llama.cpp.

One module fixture builds everything once: a copy of the shared 270M with a
small non-zero LoRA adapter (rank 4 on query and value, seeded random
factors), merged once; its greedy answers to the 12 shipped requests (16
new tokens, one batch) and its log-probabilities at every step of them;
and the exports (Hugging Face folder in float32, merged F32 GGUF, base F32
GGUF and GGUF LoRA). Each test then loads one artefact in software this
project did not write and compares it with Keras. The F16, BF16 and Q8_0
files are measured by `benchmarks/export_fidelity.py`, not here (README,
"Deploy"). PyTorch and llama.cpp run on one thread: on a shared 2-core
machine more threads mostly wait for each other.

Equal greedy answers are a sharp test only when no step is a near tie:
the adapter's seed was picked (`SEED`) so that at every one of the 192
greedy steps Keras' top token leads the next by at least `MIN_MARGIN`
logits (measured 0.035), far above what the runtimes differ by.
"""

import functools

import numpy as np
import pytest

from gemma_lora import export
from gemma_lora import lora
from gemma_lora.testing.serving import GreedySteps
from gemma_lora.testing.serving import llama_greedy
from gemma_lora.testing.serving import log_softmax
from gemma_lora.testing.serving import lora_copy
from tests.export_helpers import TOLERANCE
from tests.export_helpers import interop_modules

pytestmark = pytest.mark.real_model

REQUESTS = "data/order_requests.jsonl"
MAX_NEW_TOKENS = 16
ADAPTER = lora.LoraConfig(rank=4, alpha=8, target_layers=("query", "value"))
SEED, STD = 2, 0.04  # every LoRA factor ~ N(0, STD), seeded
MIN_MARGIN = 0.02  # logits between Keras' first and second choice at every greedy step


@pytest.fixture(scope="module")
def tuned(real_causal_lm, tmp_path_factory):
    """The 270M with a rank-4 query/value adapter, its Keras results, and its exports."""
    from gemma_lora.data import format_prompt
    from gemma_lora.tasks import decoding, inference

    folder = tmp_path_factory.mktemp("real_export")
    model = lora_copy(real_causal_lm, ADAPTER, SEED, STD)  # the shared model is not changed
    merged = lora.merge_lora(model)

    prompts = [format_prompt(record, "alpaca") for record in inference.read_requests(REQUESTS)]
    tokenizer = real_causal_lm.preprocessor.tokenizer
    prompt_ids = [[tokenizer.start_token_id, *np.asarray(tokenizer(prompt)).tolist()]
                  for prompt in prompts]
    generations = decoding.decode(merged, prompts, MAX_NEW_TOKENS, batch_size=len(prompts))
    steps = GreedySteps(prompt_ids, generations.token_ids)
    logits = steps.keras_logits(merged)
    top_two = np.sort(logits, axis=-1)[:, -2:]
    exports = {
        "hf": export.export_transformers_folder(merged, folder / "hf"),
        "f32": export.export_gguf(merged, folder / "merged-f32.gguf"),
        "base": export.export_gguf(model, folder / "base-f32.gguf", with_lora=False),
        "adapter": export.export_gguf_lora(model, folder / "adapter.gguf"),
    }
    return {"prompts": prompts, "prompt_ids": prompt_ids, "steps": steps,
            "answers": generations.texts, "answer_ids": generations.token_ids,
            "log_probs": log_softmax(logits), "margins": top_two[:, 1] - top_two[:, 0],
            "base_choices": steps.keras_logits(real_causal_lm).argmax(-1), **exports}


@pytest.fixture(scope="module")
def torch_stack():
    """(torch, transformers), PyTorch on one thread for this module's tests."""
    torch, transformers = interop_modules("torch", "transformers")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch, transformers
    torch.set_num_threads(threads)


def test_the_adapter_changes_the_answers_and_no_step_is_a_near_tie(tuned):
    steps = tuned["steps"]
    assert (tuned["log_probs"].argmax(-1) == steps.tokens).all()  # the steps are greedy
    # Where the base model would choose otherwise, its greedy answer differs.
    changed = {int(row) for row in steps.rows[tuned["base_choices"] != steps.tokens]}
    print(f"270M, rank-4 q/v adapter (seed {SEED}): {len(changed)}/12 answers differ from the "
          f"base model's; smallest lead of the greedy choice {tuned['margins'].min():.3f} "
          f"logits over {len(steps.tokens)} steps")
    assert len(changed) >= 6
    assert tuned["margins"].min() >= MIN_MARGIN


def test_hf_folder_gives_keras_log_probs_and_answers_in_transformers(torch_stack, tuned):
    torch, transformers = torch_stack
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(tuned["hf"]), attn_implementation="eager").eval()
    assert hf.dtype == torch.float32
    difference = np.abs(tuned["steps"].torch_log_probs(torch, hf) - tuned["log_probs"]).max()
    print(f"270M HF folder (float32) in transformers: max |Δ log p| over the vocabulary at the "
          f"{len(tuned['steps'].tokens)} greedy steps = {difference:.2e}")
    assert difference <= TOLERANCE

    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(tuned["hf"]))
    batch = hf_tokenizer(tuned["prompts"], return_tensors="pt", padding=True,
                         padding_side="left")
    assert [ids[mask.bool()].tolist() for ids, mask in zip(batch.input_ids,
            batch.attention_mask)] == tuned["prompt_ids"]
    with torch.no_grad():  # all 12 at once, left-padded, greedy
        out = hf.generate(**batch, do_sample=False, max_new_tokens=MAX_NEW_TOKENS)
    answers = hf_tokenizer.batch_decode(out[:, batch.input_ids.shape[1]:],
                                        skip_special_tokens=True)
    assert answers == tuned["answers"]


def test_f32_gguf_gives_keras_log_probs_in_transformers_gguf_loader(torch_stack, tuned,
                                                                   monkeypatch):
    import gguf

    torch, transformers = torch_stack
    path = tuned["f32"]
    # transformers parses the file twice (config, then weights), 15 s each for the
    # 262,144-token vocabulary; the reader is read-only, so once is enough.
    monkeypatch.setattr(gguf, "GGUFReader", functools.cache(gguf.GGUFReader))
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32,
        attn_implementation="eager").eval()
    difference = np.abs(tuned["steps"].torch_log_probs(torch, hf) - tuned["log_probs"]).max()
    print(f"270M F32 GGUF in transformers' GGUF loader: max |Δ log p| = {difference:.2e}")
    assert difference <= TOLERANCE


def test_gguf_metadata_and_vocabulary_are_the_pypi_files(tuned, tmp_path):
    from gemma_lora.models.gguf import assemble_gguf

    llama_cpp = interop_modules("llama_cpp")
    ours = llama_cpp.Llama(model_path=str(tuned["base"]), vocab_only=True, verbose=False)
    pypi = llama_cpp.Llama(model_path=str(assemble_gguf(tmp_path)), vocab_only=True,
                           verbose=False)
    model_card = {"general.basename", "general.license", "general.size_label", "general.name",
                  "general.file_type"}  # the model card's and the file's, not the model's
    # Every key of the PyPI file is written, with its value (llama.cpp's metadata: the scalars).
    assert {key: ours.metadata.get(key) for key in pypi.metadata if key not in model_card} == {
        key: value for key, value in pypi.metadata.items() if key not in model_card}
    vocabularies = []
    for llm in (ours, pypi):
        vocab = llm._model.vocab
        vocabularies.append([(llama_cpp.llama_vocab_get_text(vocab, token),
                              llama_cpp.llama_vocab_get_score(vocab, token),
                              llama_cpp.llama_vocab_get_attr(vocab, token))
                             for token in range(llama_cpp.llama_vocab_n_tokens(vocab))])
        llm.close()
    assert len(vocabularies[0]) == 262_144 and vocabularies[0] == vocabularies[1]


def test_f32_gguf_and_gguf_lora_answer_in_llama_cpp_as_keras(tuned):
    llama_cpp = interop_modules("llama_cpp")
    prompt_ids, ids, texts = llama_greedy(llama_cpp, tuned["f32"], tuned["prompts"],
                                          MAX_NEW_TOKENS)
    assert prompt_ids == tuned["prompt_ids"]  # llama.cpp's own tokenizer
    print(f"llama.cpp, merged F32 GGUF: {sum(map(str.__eq__, texts, tuned['answers']))}/12 "
          "answers equal to Keras'")
    assert ids == tuned["answer_ids"] and texts == tuned["answers"]
    assert llama_greedy(llama_cpp, tuned["base"], tuned["prompts"], MAX_NEW_TOKENS,
                        lora_path=tuned["adapter"])[1:] == (ids, texts)
