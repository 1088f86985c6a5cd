"""Generation: greedy continuations of many prompts with a KerasHub `CausalLM`."""

from __future__ import annotations

from typing import Sequence

import keras_hub


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
) -> list[str]:
    """Greedy generations for many prompts, in fixed-shape batches.

    Prompts are batched by length, and every batch has the same shape (the
    last one is padded with repeats of its first prompt), so the generate
    function compiles once.

    Args:
        model: a KerasHub `CausalLM` with a preprocessor.
        prompts: formatted prompts.
        max_new_tokens: generation budget beyond the longest prompt.
        batch_size: prompts per batch.

    Returns:
        The generated continuations (prompt stripped), in prompt order.

    Example:
    >>> generate_responses(model, ["Water boils at"], 8, batch_size=1)
    """
    use_greedy_sampling(model)
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
    return [outputs[i] for i in range(len(prompts))]
