"""Generation: continuations of many prompts with a KerasHub `CausalLM`.

A text-only Gemma 3 runs through `decoding` (one prefill per batch, then new
tokens only in one compiled loop that stops each row at its end); other
models go through KerasHub's `generate` (`generate_with_keras_hub`).
"""

from __future__ import annotations

from typing import Sequence

import keras_hub

from gemma_lora.progress import Progress
from gemma_lora.tasks import decoding
from gemma_lora.tasks import stopping
from gemma_lora.validation import check_int
from gemma_lora.validation import check_sampling


def use_greedy_sampling(model: keras_hub.models.CausalLM) -> None:
    """Make `generate` decode greedily without touching the compiled loss.

    `CausalLM.compile(sampler=...)` would also reset the optimizer, so the
    sampler is swapped directly; the generate function is rebuilt lazily.
    """
    model.sampler = keras_hub.samplers.GreedySampler()
    model.generate_function = None


def generate_responses(
    model: keras_hub.models.CausalLM,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    stop_at_section: bool = True,
    progress: str | None = None,
) -> list[str]:
    """Generations for many prompts, greedy unless a temperature is given.

    Prompts are batched by length in batches of `batch_size` rows. A
    text-only Gemma 3 decodes with `decoding.decode`: each prompt gets up to
    `max_new_tokens` new tokens, stops at an end token (or the next template
    section), and the batch ends when its last row has stopped; greedy
    output is token for token that of KerasHub's `generate`. Other models
    use `generate_with_keras_hub`.

    Args:
        model: a KerasHub `CausalLM` with a preprocessor.
        prompts: formatted prompts.
        max_new_tokens: generation budget per prompt.
        batch_size: prompts per batch.
        temperature: 0 or None decodes greedily; above 0, tokens are sampled
            from the softmax of `logits / temperature`.
        top_k: when sampling, only among the `top_k` most likely tokens.
        top_p: when sampling, only among the most likely tokens that together
            hold probability `top_p` (nucleus sampling).
        seed: seed of the sampling (one key per prompt and step, so a
            prompt's sample does not depend on its batch).
        stop_at_section: stop a prompt where its text starts the template's
            next `### ...` section, and cut the text there.
        progress: when given, the description of a progress bar over the
            prompts (a plain line every few seconds in a headless log; see
            `gemma_lora.progress`), e.g. `"generate (tuned)"`.

    Returns:
        The generated continuations (prompt and end token stripped), in
        prompt order.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()  # random weights: it generates gibberish
    >>> answers = generate_responses(model, ["Which color?", "A red mug."], 4, batch_size=2)
    >>> len(answers), all(isinstance(answer, str) for answer in answers)
    (2, True)
    """
    check_int("max_new_tokens", max_new_tokens, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    check_sampling(temperature, top_k, top_p)
    if not prompts:
        return []
    with Progress(len(prompts), progress or "generate", unit="prompt",
                  mode=None if progress else "off") as bar:
        if decoding.supports_fast_decoding(model):
            sampling = decoding.Sampling(temperature or None, top_k, top_p, seed)
            return decoding.decode(model, prompts, max_new_tokens, batch_size, sampling,
                                   stop_at_section=stop_at_section, progress=bar).texts
        texts = generate_with_keras_hub(model, prompts, max_new_tokens, batch_size,
                                        temperature, top_k, top_p, seed, progress=bar)
    if stop_at_section:
        texts = [stopping.SECTION_HEADER.split(text, maxsplit=1)[0] for text in texts]
    return texts


def generate_with_keras_hub(
    model: keras_hub.models.CausalLM,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[str]:
    """Generations through KerasHub's `generate`, in fixed-shape batches.

    Every batch has the same shape (the last one is padded with repeats of
    its first prompt) and the same `max_length` (the longest prompt + 1 +
    `max_new_tokens`), so the generate function compiles once; KerasHub
    stops a batch only when every row has emitted an end token. Sampling
    uses KerasHub's samplers (`RandomSampler`, `TopKSampler`, `TopPSampler`).

    Args:
        model: a KerasHub `CausalLM` with a preprocessor.
        prompts: formatted prompts.
        max_new_tokens: generation budget beyond the longest prompt.
        batch_size: prompts per batch.
        temperature: 0 or None decodes greedily.
        top_k: when sampling, the number of most likely tokens kept.
        top_p: when sampling, the probability mass kept.
        seed: the sampler's seed.
        progress: counts each batch's prompts as done.

    Returns:
        The generated continuations (prompt stripped), in prompt order.
    """
    if not temperature:
        if not isinstance(getattr(model, "sampler", None), keras_hub.samplers.GreedySampler):
            use_greedy_sampling(model)  # else keep the compiled generate function
    else:
        options = {"temperature": temperature, "seed": seed}
        if top_p is not None:
            model.sampler = keras_hub.samplers.TopPSampler(p=top_p, k=top_k, **options)
        elif top_k is not None:
            model.sampler = keras_hub.samplers.TopKSampler(k=top_k, **options)
        else:
            model.sampler = keras_hub.samplers.RandomSampler(**options)
        model.generate_function = None
    token_ids = model.preprocessor.tokenizer(list(prompts))
    if hasattr(token_ids, "to_list"):  # a tf.RaggedTensor under TensorFlow.
        token_ids = token_ids.to_list()
    lengths = [len(ids) for ids in token_ids]
    max_length = max(lengths) + 1 + max_new_tokens  # +1 for the start token.
    # Decoding runs from the shortest prompt of a batch to max_length, so
    # batching prompts of similar length saves steps; the order is restored.
    order = sorted(range(len(prompts)), key=lengths.__getitem__)
    outputs: dict[int, str] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = [prompts[i] for i in chunk]
        padded = batch + [batch[0]] * (batch_size - len(batch))
        generated = model.generate(padded, max_length=max_length, strip_prompt=True)
        outputs.update(zip(chunk, generated))
        if progress is not None:
            progress.update(len(chunk))
    return [outputs[i] for i in range(len(prompts))]
