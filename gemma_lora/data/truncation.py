"""Truncation: how many examples do not fit in the training sequence length.

A KerasHub `CausalLMPreprocessor` cuts the end of an example longer than its
sequence length, so part of (or all of) its response is lost. This module
counts tokens and reports, before anything trains, how many examples that
affects and how long the longest one is.

Examples given as `(text, trains)` segments (conversations, `gemma_chat`) are
cut differently (`fit_segments`, which `training.batching.tokenize` uses): at
the end of the last assistant turn that fits, so no turn is left half; only
when not even the first assistant turn fits is it cut mid-turn. An example
whose every assistant turn lies beyond the sequence length would train on
nothing: `truncation_report` stops with its source.

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
        cut_at_turn: truncated examples given as segments that are cut at a
            turn boundary (after an assistant turn) rather than mid-turn.

    Example:
    >>> print(TruncationReport(total=200, truncated=3, max_tokens=141,
    ...                        sequence_length=128))
    3 of 200 examples (1.5%) exceed sequence_length=128 and will be truncated (longest: 141 tokens).
    """

    total: int
    truncated: int
    max_tokens: int
    sequence_length: int
    cut_at_turn: int = 0

    def __str__(self) -> str:
        share = 100 * self.truncated / self.total if self.total else 0.0
        turns = (f" {self.cut_at_turn} of them are cut after their last assistant turn "
                 "that fits." if self.cut_at_turn else "")
        return (
            f"{self.truncated} of {self.total} examples ({share:.1f}%) exceed "
            f"sequence_length={self.sequence_length} and will be truncated "
            f"(longest: {self.max_tokens} tokens).{turns}"
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

    Examples with `"segments"` (see `to_prompt_response`) need
    `1 + len(all pieces)` tokens (no end token; the last is only a label)
    and are cut as `fit_segments` says.

    Args:
        tokenizer: a KerasHub tokenizer (e.g. the model's
            `preprocessor.tokenizer`) without a fixed sequence length.
        examples: `{"prompts": [...], "responses": [...]}` as made by
            `to_prompt_response`, optionally with `"segments"` and `"sources"`.
        sequence_length: the training sequence length.

    Returns:
        A `TruncationReport`; `str()` of it is a one-line summary.

    Raises:
        DataError: `examples` has not as many prompts as responses, or an
            example given as segments keeps no trained token (every
            assistant turn lies beyond `sequence_length`); the message names
            its source.

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
    segments = examples.get("segments") or [None] * len(prompts)
    plain = [index for index, pieces in enumerate(segments) if pieces is None]
    prompt_lengths = token_counts(tokenizer, [prompts[index] for index in plain])
    response_lengths = token_counts(tokenizer, [responses[index] for index in plain])
    needed = [1 + prompt + response for prompt, response in zip(prompt_lengths, response_lengths)]
    pieces = [piece for example in segments if example is not None for piece in example]
    lengths = iter(token_counts(tokenizer, [text for text, _ in pieces]))
    sources = examples.get("sources") or [f"example {index}" for index in range(len(prompts))]
    cut_at_turn = 0
    for index, example in enumerate(segments):
        if example is None:
            continue
        counts = [next(lengths) for _ in example]
        trains = [train for _, train in example]
        needed.append(sum(counts))
        kept, boundary = fit_segments(counts, trains, sequence_length)
        cut_at_turn += boundary and kept < 1 + sum(counts)
        first = 1 + sum(counts[:trains.index(True)]) if True in trains else kept
        if first >= kept:
            raise DataError(
                f"{sources[index]}: every assistant turn lies beyond sequence_length="
                f"{sequence_length} (the first one starts at token {first + 1}), so nothing "
                "of this example would train; raise sequence_length or shorten the text "
                "before its first assistant turn."
            )
    return TruncationReport(
        total=len(needed),
        truncated=sum(length > sequence_length for length in needed),
        max_tokens=max(needed, default=0),
        sequence_length=sequence_length,
        cut_at_turn=cut_at_turn,
    )


def fit_segments(lengths: Sequence[int], trains: Sequence[bool],
                 sequence_length: int) -> tuple[int, bool]:
    """How many tokens of an example given as segments are kept.

    The example is a start token and then its pieces' tokens, and a row
    holds `sequence_length + 1` of them (inputs and the shifted labels).
    If all fit, all are kept. Otherwise the example is cut at the end of the
    last trained piece (an assistant turn and its `<end_of_turn>`) that fits,
    a turn boundary; if none fits, at `sequence_length + 1`.

    Args:
        lengths: tokens of each piece.
        trains: whether each piece trains.
        sequence_length: the training sequence length.

    Returns:
        `(tokens kept, counting the start token; whether the cut, if any, is
        at a turn boundary)`.

    Example:
    >>> fit_segments([5, 3, 4, 3, 1], [False, True, False, True, False], sequence_length=16)
    (17, True)
    >>> fit_segments([5, 3, 4, 3, 1], [False, True, False, True, False], sequence_length=12)
    (9, True)
    >>> fit_segments([5, 3, 4, 3, 1], [False, True, False, True, False], sequence_length=6)
    (7, False)
    """
    limit = sequence_length + 1
    end, boundary = 1, None
    for length, train in zip(lengths, trains):
        end += length
        if end > limit:
            break
        if train:
            boundary = end
    if end <= limit:
        return end, True
    return (boundary, True) if boundary is not None else (limit, False)


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
