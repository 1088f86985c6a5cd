"""Bucketing, packing and response-only logits change speed, never the loss."""

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

from gemma_lora.training import batching
from gemma_lora import lora
from gemma_lora.training import CompiledSteps


def test_bucket_lengths():
    assert batching.bucket_lengths(128) == (32, 64, 96, 128)
    assert batching.bucket_lengths(100) == (32, 64, 96, 100)
    assert batching.bucket_lengths(16) == (8, 16)


@pytest.fixture
def split(tiny_causal_lm, color_examples):
    return batching.tokenize(tiny_causal_lm.preprocessor, color_examples["train"], 48)


def test_batch_is_cut_to_a_bucket_and_gathers_the_response(split):
    indices = np.arange(4)
    batch = batching.make_batch(split, indices, (16, 32, 48), loss_buffer=8)
    longest = split.lengths[indices].max()
    assert batch["token_ids"].shape[1] == next(b for b in (16, 32, 48) if b >= longest)
    for row, index in enumerate(indices):
        wanted = np.flatnonzero(split.loss_weights[index])
        count = len(wanted)
        np.testing.assert_array_equal(batch["loss_positions"][row, :count], wanted)
        np.testing.assert_array_equal(batch["loss_labels"][row, :count], split.labels[index, wanted])
        assert batch["loss_weights"][row, :count].tolist() == [1.0] * count
        assert batch["loss_weights"][row, count:].sum() == 0


def test_training_batches_are_reproducible_and_resumable(split):
    def take(start, count):
        stream = batching.training_batches(split, 8, seed=3, buckets=(48,), loss_buffer=8, start_step=start)
        return [next(stream)["token_ids"] for _ in range(count)]

    first = take(0, 25)  # 20 batches per pass: crosses into the second pass
    np.testing.assert_array_equal(np.concatenate(take(0, 25)), np.concatenate(first))
    np.testing.assert_array_equal(np.concatenate(take(18, 7)), np.concatenate(first[18:]))
    assert not np.array_equal(first[0], first[20])  # a new order each pass


def _stock_loss(model, trainable, non_trainable, x, y, weights):
    """KerasHub's own path: full logits from the CausalLM, weighted mean CE."""
    logits, _ = model.stateless_call(trainable, non_trainable, x)
    log_probs = jax.nn.log_softmax(logits.astype("float32"), axis=-1)
    token_loss = -jnp.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0]
    return jnp.sum(token_loss * weights) / jnp.sum(weights)


def test_loss_and_gradients_equal_the_stock_full_logits_path(tiny_causal_lm, color_examples):
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8))
    rng = np.random.default_rng(0)
    for variable in tiny_causal_lm.trainable_weights:  # non-zero B, so LoRA matters
        variable.assign(rng.normal(size=variable.shape).astype("float32") * 0.1)
    examples = {k: v[:6] for k, v in color_examples["train"].items()}
    x, y, weights = tiny_causal_lm.preprocessor(examples)
    split = batching.tokenize(tiny_causal_lm.preprocessor, examples, 48)
    batch = batching.make_batch(split, np.arange(6), (16, 32, 48), loss_buffer=8)
    assert batch["token_ids"].shape[1] < 48  # really cut to a shorter bucket

    steps = CompiledSteps(tiny_causal_lm)
    ours, our_grads = jax.value_and_grad(steps.loss_fn)(steps.trainable, steps.non_trainable, batch)

    model_trainable = [v.value for v in tiny_causal_lm.trainable_variables]
    model_non_trainable = [v.value for v in tiny_causal_lm.non_trainable_variables]
    stock, stock_grads = jax.value_and_grad(_stock_loss, argnums=1)(
        tiny_causal_lm, model_trainable, model_non_trainable,
        {k: jnp.asarray(v) for k, v in x.items()}, jnp.asarray(y), jnp.asarray(weights))

    keras_loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight")(y, tiny_causal_lm(x), sample_weight=weights)
    np.testing.assert_allclose(float(ours), float(stock), rtol=1e-5)
    np.testing.assert_allclose(float(ours), float(keras_loss), rtol=1e-5)
    by_path = dict(zip([v.path for v in tiny_causal_lm.trainable_variables], stock_grads))
    for variable, grad in zip(steps.trainable_variables, our_grads):
        np.testing.assert_allclose(np.asarray(grad), np.asarray(by_path[variable.path]),
                                   rtol=1e-4, atol=1e-6)


def test_pack_rows_is_first_fit_decreasing():
    assert batching.pack_rows(np.array([30, 100, 20, 90]), row_length=128) == [[1, 2], [3, 0]]
    assert batching.pack_rows(np.array([64, 64, 64]), row_length=128) == [[0, 1], [2]]
    rng = np.random.default_rng(0)
    for _ in range(50):
        lengths = rng.integers(1, 129, size=int(rng.integers(1, 40)))
        rows = batching.pack_rows(lengths, row_length=128)
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        assert all(lengths[row].sum() <= 128 for row in rows)
        # First fit, longest first: when an example was placed, no earlier row had room.
        rank = np.empty(len(lengths), int)
        rank[np.argsort(-lengths, kind="stable")] = np.arange(len(lengths))
        for r, row in enumerate(rows):
            for item in row:
                for earlier in rows[:r]:
                    fill = sum(lengths[i] for i in earlier if rank[i] < rank[item])
                    assert fill + lengths[item] > 128, (lengths, rows)


def test_packed_row_count_limits_the_compiled_shapes():
    assert [batching.packed_row_count(n, batch_size=4) for n in range(1, 5)] == [1, 2, 3, 4]
    assert {batching.packed_row_count(n, batch_size=32) for n in range(1, 33)} == {
        4, 8, 12, 16, 20, 24, 28, 32}


def _packing_split(count=64, row=64, seed=0):
    """Examples of 3 to `row` tokens with a response of 1 to half of them."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(10, 500, size=(count, row + 1)).astype("int32")
    mask = np.zeros((count, row + 1), bool)
    weights = np.zeros((count, row), "float32")
    for example in range(count):
        length = int(rng.integers(3, row + 1))
        response = int(rng.integers(1, length // 2 + 1))
        mask[example, :length] = True
        weights[example, length - 1 - response:length - 1] = 1.0
    ids[~mask] = 0
    return batching.TokenizedSplit(ids[:, :-1], mask[:, :-1], ids[:, 1:], weights)


def test_packed_batch_keeps_every_example_whole_and_every_loss_token_once():
    split = _packing_split()
    buffer = batching.loss_buffer_size(split)
    stream = batching.training_batches(split, 16, seed=5, buckets=(64,), loss_buffer=buffer,
                                       packing=True)
    plain = batching.training_batches(split, 16, seed=5, buckets=(64,), loss_buffer=buffer)
    for _ in range(6):  # more than one pass of 4 batches
        packed, unpacked = next(stream), next(plain)
        rows, length = packed["token_ids"].shape
        assert length == 64 and rows < 16
        # Each example's own loss slots: same labels and weights as unpacked, in batch order.
        np.testing.assert_array_equal(packed["loss_labels"], unpacked["loss_labels"])
        np.testing.assert_array_equal(packed["loss_weights"], unpacked["loss_weights"])
        flat = {key: packed[key].reshape(-1) for key in ("token_ids", "segment_ids", "positions")}
        seen = set()
        for example in range(16):
            # The example is one contiguous segment holding its tokens, positions from 0.
            start = int(packed["loss_positions"][example, 0] - unpacked["loss_positions"][example, 0])
            row, segment = start // length, flat["segment_ids"][start]
            in_segment = np.flatnonzero(packed["segment_ids"][row] == segment)
            count = int(unpacked["padding_mask"][example].sum())
            assert len(in_segment) == count and in_segment[0] == start % length
            assert np.all(np.diff(in_segment) == 1)
            np.testing.assert_array_equal(packed["positions"][row, in_segment], np.arange(count))
            np.testing.assert_array_equal(packed["token_ids"][row, in_segment],
                                          unpacked["token_ids"][example, :count])
            seen.add((row, int(segment)))
            # Its loss tokens point inside its own segment at the unpacked positions.
            used = unpacked["loss_weights"][example] > 0
            where = packed["loss_positions"][example, used]
            assert np.all(flat["segment_ids"][where] == segment) and np.all(where // length == row)
            np.testing.assert_array_equal(flat["positions"][where],
                                          unpacked["loss_positions"][example, used])
        # Every segment of every row is exactly one example; the rest is padding.
        segments = {(r, int(s)) for r in range(rows) for s in np.unique(packed["segment_ids"][r])
                    if s > 0}
        assert segments == seen
        assert (packed["segment_ids"] > 0).sum() == unpacked["padding_mask"].sum()
        assert packed["token_ids"][packed["segment_ids"] == 0].sum() == 0


def test_packed_training_batches_are_reproducible_and_resumable():
    split = _packing_split()

    def take(start, count):
        stream = batching.training_batches(split, 16, seed=3, buckets=(64,), loss_buffer=32,
                                           start_step=start, packing=True)
        return [next(stream) for _ in range(count)]

    first = take(0, 7)  # 4 batches per pass: crosses into the second pass
    for again, resumed in zip(first[5:], take(5, 2)):
        for key in again:
            np.testing.assert_array_equal(again[key], resumed[key])
    for again, repeated in zip(first, take(0, 7)):
        np.testing.assert_array_equal(again["token_ids"], repeated["token_ids"])
