"""Truncation: how many examples do not fit in the training sequence length.

A KerasHub `CausalLMPreprocessor` cuts the end of an example longer than its
sequence length, so part of (or all of) its response is lost. This module
counts tokens and reports, before anything trains, how many examples that
affects and how long the longest one is.

Example:
>>> def words(texts):  # a stand-in tokenizer: one token per word
...     return [text.split() for text in texts]
>>> print(truncation_report(words, {"prompts": ["Say hi."], "responses": ["Hi there!"]}, 4))
1 of 1 examples (100.0%) exceed sequence_length=4 and will be truncated (longest: 5 tokens).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from gemma_lora.errors import DataError


@dataclasses.dataclass(frozen=True)
class TruncationReport:
    """How many examples do not fit in the training sequence length.

    Args:
        total: number of examples measured.
        truncated: examples longer than `sequence_length`; the preprocessor
            cuts their end, so part of (or all of) their response is lost.
        max_tokens: the longest example in model positions, i.e. the smallest
            `sequence_length` that truncates nothing (start token + prompt +
            response; the end token is only ever a label).
        sequence_length: the sequence length measured against.

    Example:
    >>> print(TruncationReport(total=200, truncated=3, max_tokens=141,
    ...                        sequence_length=128))
    3 of 200 examples (1.5%) exceed sequence_length=128 and will be truncated (longest: 141 tokens).
    """

    total: int
    truncated: int
    max_tokens: int
    sequence_length: int

    def __str__(self) -> str:
        share = 100 * self.truncated / self.total if self.total else 0.0
        return (
            f"{self.truncated} of {self.total} examples ({share:.1f}%) exceed "
            f"sequence_length={self.sequence_length} and will be truncated "
            f"(longest: {self.max_tokens} tokens)."
        )


def truncation_report(
    tokenizer: Any,
    examples: Mapping[str, Sequence[str]],
    sequence_length: int,
) -> TruncationReport:
    """Count the examples that do not fit in `sequence_length` tokens.

    A KerasHub `CausalLMPreprocessor` packs start token + prompt + response +
    end token into `sequence_length + 1` tokens and shifts them by one into
    inputs and labels, cutting the end of longer examples. So an example
    needs `1 + len(prompt) + len(response)` positions (its end token is only
    a label) and is truncated when that exceeds `sequence_length`. Truncated
    examples still train, on whatever part of their response fits.

    Args:
        tokenizer: a KerasHub tokenizer (e.g. the model's
            `preprocessor.tokenizer`) without a fixed sequence length.
        examples: `{"prompts": [...], "responses": [...]}` as made by
            `to_prompt_response`.
        sequence_length: the training sequence length.

    Returns:
        A `TruncationReport`; `str()` of it is a one-line summary.

    Raises:
        DataError: `examples` has not as many prompts as responses.

    Example:
    >>> def words(texts):  # a stand-in tokenizer: one token per word
    ...     return [text.split() for text in texts]
    >>> examples = {"prompts": ["Add 2 and 3.", "Hi."], "responses": ["5", "Hello."]}
    >>> report = truncation_report(words, examples, sequence_length=4)
    >>> report.truncated, report.max_tokens
    (1, 6)
    """
    prompts, responses = examples["prompts"], examples["responses"]
    if len(prompts) != len(responses):
        raise DataError(
            f"examples has {len(prompts)} prompts but {len(responses)} responses."
        )
    prompt_lengths = token_counts(tokenizer, prompts)
    response_lengths = token_counts(tokenizer, responses)
    needed = [1 + prompt + response for prompt, response in zip(prompt_lengths, response_lengths)]
    return TruncationReport(
        total=len(needed),
        truncated=sum(length > sequence_length for length in needed),
        max_tokens=max(needed, default=0),
        sequence_length=sequence_length,
    )


def token_counts(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """The number of tokens of each text.

    Args:
        tokenizer: a KerasHub tokenizer without a fixed sequence length, or
            any callable that maps a list of texts to one sequence of ids
            per text (a `tf.RaggedTensor` is measured by its row lengths).
        texts: the texts to measure.

    Returns:
        One count per text, in order; `[]` for no texts (the tokenizer is
        not called).

    Example:
    >>> token_counts(lambda texts: [text.split() for text in texts], ["a b c", "d"])
    [3, 1]
    """
    if not texts:
        return []
    ids = tokenizer(list(texts))
    if hasattr(ids, "row_lengths"):  # a tf.RaggedTensor
        return [int(length) for length in ids.row_lengths().numpy()]
    return [len(row) for row in ids]
