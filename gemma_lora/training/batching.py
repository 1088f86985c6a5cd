"""Tokenize once, then cut batches with little padding and a loss buffer.

A split is tokenized a single time by the model's own KerasHub preprocessor
(so prompts, responses, special tokens and truncation are exactly KerasHub's)
into numpy arrays. Batches are then assembled without TensorFlow:

- **length buckets**: each batch is cut to the smallest bucket length that
  holds its longest example, instead of always `sequence_length`, so short
  data does not pay for padding; a few fixed buckets keep the number of
  compiled shapes small;
- **loss positions**: the positions whose next token carries loss (the
  response) are gathered into a fixed-size buffer, so the vocabulary
  projection, by far the largest matrix product of a small Gemma, is computed
  only there.

- **packing** (optional): the examples of a batch are packed first-fit into
  as few rows of `sequence_length` as they fit in, with segment ids (so
  examples sharing a row never attend to each other, see `packed_forward`)
  and positions restarting at 0 for each example. A packed batch holds
  exactly the examples the unpacked batch would, so each step's loss and
  gradients are the same; it only computes fewer padding positions.

None of these changes the loss: padding never reaches a real token (causal
attention with a padding mask, or a segment mask when packed) and the loss
only ever read those positions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import numpy as np

from gemma_lora.data.truncation import fit_segments


@dataclasses.dataclass(frozen=True)
class TokenizedSplit:
    """A split as token arrays, ready to batch.

    Args:
        token_ids: `[N, sequence_length]` int32 model inputs.
        padding_mask: `[N, sequence_length]` bool, True on real tokens.
        labels: `[N, sequence_length]` int32 next-token targets.
        loss_weights: `[N, sequence_length]` float32, 1 where the target is
            a response token (or the end token), else 0.
    """

    token_ids: np.ndarray
    padding_mask: np.ndarray
    labels: np.ndarray
    loss_weights: np.ndarray

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def lengths(self) -> np.ndarray:
        """Real tokens per example."""
        return self.padding_mask.sum(axis=1)

    @property
    def loss_tokens(self) -> np.ndarray:
        """Loss-bearing tokens per example."""
        return (self.loss_weights > 0).sum(axis=1)


def tokenize(preprocessor, examples: dict[str, list], sequence_length: int) -> TokenizedSplit:
    """Run a KerasHub `CausalLMPreprocessor` once over a whole split.

    Examples with `"segments"` (from `data.to_prompt_response`: conversations,
    `gemma_chat`) are tokenized piece by piece instead (`tokenize_segments`),
    the loss on the pieces that train; an example whose segments are `None`
    goes through the preprocessor as without segments.

    Args:
        preprocessor: the model's preprocessor.
        examples: `{"prompts", "responses"}`, optionally with `"segments"`.
        sequence_length: tokens per example (longer ones are truncated;
            segments at a turn boundary where possible, see
            `data.truncation.fit_segments`).

    Returns:
        A `TokenizedSplit`.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> examples = {"prompts": ["Which color? Send 2 red mugs.", "Which color? A blue hat."],
    ...             "responses": ["red", "blue"]}
    >>> split = tokenize(tiny_causal_lm().preprocessor, examples, sequence_length=32)
    >>> split.token_ids.shape, split.loss_tokens.tolist()  # loss on the response + end token
    ((2, 32), [2, 2])
    """
    if examples.get("segments") is not None:
        return _tokenize_mixed(preprocessor, examples, sequence_length)
    preprocessor.sequence_length = sequence_length
    x, y, weights = preprocessor(dict(examples))
    return TokenizedSplit(
        token_ids=np.asarray(x["token_ids"], dtype="int32"),
        padding_mask=np.asarray(x["padding_mask"], dtype=bool),
        labels=np.asarray(y, dtype="int32"),
        loss_weights=np.asarray(weights, dtype="float32"),
    )


def _tokenize_mixed(preprocessor, examples: dict[str, list], sequence_length: int) -> TokenizedSplit:
    """Examples with segments piece by piece, those without through the preprocessor."""
    segments = examples["segments"]
    plain = [index for index, pieces in enumerate(segments) if pieces is None]
    rows = [index for index, pieces in enumerate(segments) if pieces is not None]
    split = tokenize_segments(preprocessor.tokenizer, [segments[i] for i in rows], sequence_length)
    if not plain:
        return split
    rest = tokenize(preprocessor, {key: [examples[key][i] for i in plain]
                                   for key in ("prompts", "responses")}, sequence_length)
    order = np.argsort(np.array(rows + plain), kind="stable")
    return TokenizedSplit(*(np.concatenate([a, b])[order] for a, b in zip(
        dataclasses.astuple(split), dataclasses.astuple(rest))))


def tokenize_segments(tokenizer, segments: list[list[tuple[str, bool]]],
                      sequence_length: int) -> TokenizedSplit:
    """Examples given as `(text, trains)` pieces as token arrays, the loss on trained pieces.

    Each example is the start token, then each piece tokenized on its own
    (so a turn marker is always its own token) and no end token: a rendered
    conversation is exactly Gemma's chat template's text. A target token
    carries loss when it belongs to a piece that trains. Longer examples are
    cut as `data.truncation.fit_segments` says: after the last assistant
    turn that fits.

    Args:
        tokenizer: the model's KerasHub tokenizer.
        segments: per example, its pieces.
        sequence_length: tokens per example.

    Returns:
        A `TokenizedSplit`.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> pieces = [("Which color? A red mug.", False), ("red", True), ("Thanks.", False)]
    >>> split = tokenize_segments(tiny_causal_lm().preprocessor.tokenizer, [pieces], 32)
    >>> split.loss_tokens.tolist()  # the tokens of "red" only
    [1]
    """
    count = len(segments)
    token_ids = np.zeros((count, sequence_length), dtype="int32")
    padding_mask = np.zeros((count, sequence_length), dtype=bool)
    labels = np.zeros((count, sequence_length), dtype="int32")
    weights = np.zeros((count, sequence_length), dtype="float32")
    texts = [text for example in segments for text, _ in example]
    ids = tokenizer(texts) if texts else []
    if hasattr(ids, "to_list"):  # a tf.RaggedTensor
        ids = ids.to_list()
    pieces = iter(ids)
    for row, example in enumerate(segments):
        tokens, trains, lengths = [int(tokenizer.start_token_id)], [False], []
        for _, train in example:
            piece = [int(i) for i in next(pieces)]
            tokens += piece
            trains += [train] * len(piece)
            lengths.append(len(piece))
        kept, _ = fit_segments(lengths, [train for _, train in example], sequence_length)
        tokens, trains = tokens[:kept], trains[:kept]
        real = min(kept, sequence_length)
        token_ids[row, :real] = tokens[:real]
        padding_mask[row, :real] = True
        labels[row, :kept - 1] = tokens[1:]
        weights[row, :kept - 1] = trains[1:]
    return TokenizedSplit(token_ids, padding_mask, labels, weights)


def bucket_lengths(sequence_length: int, num_buckets: int = 4) -> tuple[int, ...]:
    """Evenly spaced bucket lengths up to `sequence_length`, multiples of 8.

    Args:
        sequence_length: the longest bucket.
        num_buckets: how many lengths (each one compiled once).

    Returns:
        Increasing lengths ending with `sequence_length`.

    Example:
    >>> bucket_lengths(128)
    (32, 64, 96, 128)
    """
    step = max(8, math.ceil(sequence_length / num_buckets / 8) * 8)
    lengths = list(range(step, sequence_length, step)) + [sequence_length]
    return tuple(lengths)


def loss_buffer_size(split: TokenizedSplit, multiple: int = 8) -> int:
    """Loss positions to gather per example: the split's maximum, rounded up."""
    most = int(split.loss_tokens.max()) if len(split) else 1
    return max(multiple, math.ceil(most / multiple) * multiple)


def make_batch(
    split: TokenizedSplit,
    indices: np.ndarray,
    buckets: tuple[int, ...],
    loss_buffer: int,
) -> dict[str, np.ndarray]:
    """Assemble one batch, cut to a bucket length, with gathered loss positions.

    Args:
        split: the tokenized split.
        indices: which examples, in batch order.
        buckets: allowed sequence lengths (from `bucket_lengths`).
        loss_buffer: loss positions per example (from `loss_buffer_size`).

    Returns:
        `token_ids`, `padding_mask` (`[B, bucket]`), and `loss_positions`,
        `loss_labels`, `loss_weights` (`[B, loss_buffer]`; unused slots have
        weight 0).
    """
    longest = int(split.lengths[indices].max())
    length = next((b for b in buckets if b >= longest), buckets[-1])
    batch_size = len(indices)
    positions = np.zeros((batch_size, loss_buffer), dtype="int32")
    weights = np.zeros((batch_size, loss_buffer), dtype="float32")
    for row, index in enumerate(indices):
        where = np.flatnonzero(split.loss_weights[index] > 0)[:loss_buffer]
        positions[row, : len(where)] = where
        weights[row, : len(where)] = split.loss_weights[index, where]
    labels = np.take_along_axis(split.labels[indices], positions, axis=1)
    return {
        "token_ids": split.token_ids[indices, :length],
        "padding_mask": split.padding_mask[indices, :length],
        "loss_positions": positions,
        "loss_labels": labels,
        "loss_weights": weights,
    }


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of one pass: a permutation fixed by (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def pack_rows(lengths: np.ndarray, row_length: int) -> list[list[int]]:
    """Pack examples into rows, first-fit decreasing; never splits an example.

    Examples are placed longest first (ties in their given order), each into
    the first row with room for it, or a new row. The result depends only on
    `lengths`, so it is as reproducible as the batch it packs.

    Args:
        lengths: real tokens of each example, each at most `row_length`.
        row_length: tokens per row.

    Returns:
        One list per row of positions into `lengths`, in placement order.

    Example:
    >>> pack_rows(np.array([30, 100, 20, 90]), row_length=128)
    [[1, 2], [3, 0]]
    """
    rows: list[list[int]] = []
    free: list[int] = []
    for item in np.argsort(-np.asarray(lengths), kind="stable"):
        length = int(lengths[item])
        if length > row_length:
            raise ValueError(f"an example of {length} tokens does not fit rows of {row_length}")
        row = next((r for r, room in enumerate(free) if room >= length), len(rows))
        if row == len(rows):
            rows.append([])
            free.append(row_length)
        rows[row].append(int(item))
        free[row] -= length
    return rows


def packed_row_count(needed: int, batch_size: int) -> int:
    """Rows a packed batch is padded to: `needed` rounded to a multiple of `batch_size // 8`.

    Each distinct row count is a compiled shape; rounding keeps them to at
    most eight per batch size (and exact for batches of up to 15 examples).

    Args:
        needed: rows the packer used.
        batch_size: examples per batch.

    Returns:
        The padded row count.

    Example:
    >>> packed_row_count(5, batch_size=32)
    8
    """
    multiple = max(1, batch_size // 8)
    return math.ceil(needed / multiple) * multiple


def make_packed_batch(
    split: TokenizedSplit,
    indices: np.ndarray,
    row_length: int,
    loss_buffer: int,
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Assemble one batch with its examples packed into rows of `row_length`.

    Args:
        split: the tokenized split.
        indices: which examples, in batch order.
        row_length: tokens per row (the run's `sequence_length`).
        loss_buffer: loss positions per example (from `loss_buffer_size`).
        batch_size: the run's batch size, for `packed_row_count`; defaults
            to `len(indices)`.

    Returns:
        `token_ids`, `segment_ids` (1, 2, ... for the examples of a row, 0
        on padding) and `positions` (0, 1, ... within each example), all
        `[rows, row_length]`; and, per example in `indices` order,
        `loss_positions` (indices into the flattened `[rows * row_length]`
        tokens), `loss_labels` and `loss_weights` (`[len(indices),
        loss_buffer]`; unused slots have weight 0), as in `make_batch`.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> examples = {"prompts": [f"Which color? Please send {n} red mugs to Paris." for n in range(8)],
    ...             "responses": ["red"] * 8}
    >>> split = tokenize(tiny_causal_lm().preprocessor, examples, sequence_length=32)
    >>> int(split.lengths.max())  # tokens of the longest example
    18
    >>> batch = make_packed_batch(split, np.arange(8), row_length=64, loss_buffer=8)
    >>> batch["token_ids"].shape  # eight examples in three rows
    (3, 64)
    >>> batch["segment_ids"].max(axis=1).tolist()  # examples per row
    [3, 3, 2]
    """
    lengths = split.lengths[indices]
    rows = pack_rows(lengths, row_length)
    count = packed_row_count(len(rows), batch_size or len(indices))
    token_ids = np.zeros((count, row_length), dtype="int32")
    segment_ids = np.zeros((count, row_length), dtype="int32")
    positions = np.zeros((count, row_length), dtype="int32")
    start = np.zeros(len(indices), dtype="int64")  # each example's first flat index
    for row, members in enumerate(rows):
        offset = 0
        for segment, member in enumerate(members, start=1):
            length = int(lengths[member])
            token_ids[row, offset:offset + length] = split.token_ids[indices[member], :length]
            segment_ids[row, offset:offset + length] = segment
            positions[row, offset:offset + length] = np.arange(length)
            start[member] = row * row_length + offset
            offset += length
    batch = make_batch(split, indices, (split.token_ids.shape[1],), loss_buffer)
    return {
        "token_ids": token_ids,
        "segment_ids": segment_ids,
        "positions": positions,
        "loss_positions": (batch["loss_positions"] + start[:, None]).astype("int32"),
        "loss_labels": batch["loss_labels"],
        "loss_weights": batch["loss_weights"],
    }


def _batch(split: TokenizedSplit, indices: np.ndarray, buckets: tuple[int, ...],
           loss_buffer: int, packing: bool, batch_size: int) -> dict[str, np.ndarray]:
    if packing:
        return make_packed_batch(split, indices, buckets[-1], loss_buffer, batch_size)
    return make_batch(split, indices, buckets, loss_buffer)


def training_batches(
    split: TokenizedSplit,
    batch_size: int,
    seed: int,
    buckets: tuple[int, ...],
    loss_buffer: int,
    start_step: int = 0,
    packing: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled training batches, reproducible from (seed, step).

    Each pass over the data is a fresh permutation; a batch never spans two
    passes (the last partial batch of a pass is dropped). Starting at
    `start_step` gives exactly the batches a run from step 0 would have seen
    from there on, which is what resuming needs. Packing changes how a
    batch's examples are laid out, never which examples it holds.

    Args:
        split: the tokenized training split.
        batch_size: examples per batch.
        seed: the run's seed.
        buckets: allowed sequence lengths; packed rows are `buckets[-1]` long.
        loss_buffer: loss positions per example.
        start_step: index of the first batch to yield.
        packing: pack each batch's examples into rows (`make_packed_batch`).

    Yields:
        Batches from `make_batch`, or `make_packed_batch` when packing.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> examples = {"prompts": [f"Which color? Send {n} red mugs." for n in range(8)],
    ...             "responses": ["red"] * 8}
    >>> split = tokenize(tiny_causal_lm().preprocessor, examples, sequence_length=64)
    >>> batches = training_batches(split, 4, seed=0, buckets=(16, 32, 64), loss_buffer=8)
    >>> next(batches)["token_ids"].shape  # 4 examples, in the smallest bucket that fits
    (4, 32)
    """
    per_epoch = max(1, len(split) // batch_size)
    step = start_step
    while True:
        epoch, offset = divmod(step, per_epoch)
        order = epoch_order(len(split), seed, epoch)
        indices = order[offset * batch_size:(offset + 1) * batch_size]
        yield _batch(split, indices, buckets, loss_buffer, packing, batch_size)
        step += 1


def evaluation_batches(
    split: TokenizedSplit,
    batch_size: int,
    buckets: tuple[int, ...],
    loss_buffer: int,
    packing: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """One ordered pass in batches; the last batch may be smaller.

    Args:
        split: the tokenized split.
        batch_size: examples per batch.
        buckets: allowed sequence lengths; packed rows are `buckets[-1]` long.
        loss_buffer: loss positions per example.
        packing: pack each batch's examples into rows.

    Yields:
        Batches from `make_batch`, or `make_packed_batch` when packing.
    """
    for start in range(0, len(split), batch_size):
        indices = np.arange(start, min(start + batch_size, len(split)))
        yield _batch(split, indices, buckets, loss_buffer, packing, batch_size)
