"""Bucketing and response-only logits change speed, never the loss."""

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

from gemma_lora import batching
from gemma_lora import lora
from gemma_lora.steps import CompiledSteps


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
    lora.enable_lora(tiny_causal_lm, rank=4, alpha=8)
    rng = np.random.default_rng(0)
    for variable in tiny_causal_lm.trainable_weights:  # non-zero B, so LoRA matters
        variable.assign(rng.normal(size=variable.shape).astype("float32") * 0.1)
    examples = {k: v[:6] for k, v in color_examples["train"].items()}
    x, y, weights = tiny_causal_lm.preprocessor(examples)
    split = batching.tokenize(tiny_causal_lm.preprocessor, examples, 48)
    batch = batching.make_batch(split, np.arange(6), (16, 32, 48), loss_buffer=8)
    assert batch["token_ids"].shape[1] < 48  # really cut to a shorter bucket

    steps = CompiledSteps(tiny_causal_lm)
    ours, our_grads = jax.value_and_grad(steps._loss_fn)(steps.trainable, steps.non_trainable, batch)

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
