"""Chunked cross-entropy gives the same loss and gradients with less memory; bf16 keeps f32 LoRA."""

import jax
import keras
import keras_hub
import numpy as np
import pytest

from gemma_lora.training import batching
from gemma_lora import lora
from gemma_lora import training
from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError
from gemma_lora.training import CompiledSteps


def _randomize_lora(model):
    rng = np.random.default_rng(0)
    for variable in model.trainable_weights:  # non-zero B, so LoRA matters
        variable.assign(rng.normal(size=variable.shape).astype("float32") * 0.1)


@pytest.mark.parametrize("packing", [False, True])
def test_chunked_loss_and_gradients_equal_the_whole_projection(tiny_causal_lm, color_examples,
                                                               packing):
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8))
    _randomize_lora(tiny_causal_lm)
    split = batching.tokenize(tiny_causal_lm.preprocessor, color_examples["train"], 48)
    buffer = batching.loss_buffer_size(split)
    indices = np.arange(6)
    batch = (batching.make_packed_batch(split, indices, 48, buffer) if packing
             else batching.make_batch(split, indices, (16, 32, 48), buffer))
    chunk = 5
    positions = batch["loss_positions"].size
    assert positions > 2 * chunk and positions % chunk  # several chunks, the last one padded

    whole = CompiledSteps(tiny_causal_lm, loss_chunk_size=None)
    chunked = CompiledSteps(tiny_causal_lm, loss_chunk_size=chunk)
    args = (whole.trainable, whole.non_trainable, batch)
    assert "scan" in str(jax.make_jaxpr(chunked.loss_fn)(*args))
    assert "scan" not in str(jax.make_jaxpr(whole.loss_fn)(*args))
    loss, grads = jax.value_and_grad(whole.loss_fn)(*args)
    chunked_loss, chunked_grads = jax.value_and_grad(chunked.loss_fn)(*args)
    np.testing.assert_allclose(float(chunked_loss), float(loss), rtol=1e-6)
    for expected, actual in zip(grads, chunked_grads, strict=True):
        np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(chunked.log_likelihoods(batch), whole.log_likelihoods(batch),
                               rtol=1e-6)


def test_chunks_bound_the_logits_memory_of_the_training_step():
    # A wide vocabulary and many loss positions, so the logits dominate memory:
    # 512 positions x 65536 tokens x 4 bytes = 128 MiB per float32 copy.
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.Gemma3Backbone(
        vocabulary_size=65536, image_size=None, num_layers=1, num_query_heads=1,
        num_key_value_heads=1, hidden_dim=16, intermediate_dim=32, head_dim=16)
    model = keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=None)
    lora.enable_lora(model, lora.LoraConfig(rank=2))
    rng = np.random.default_rng(0)
    batch = {"token_ids": rng.integers(0, 65536, (4, 128)).astype("int32"),
             "padding_mask": np.ones((4, 128), bool),
             "loss_positions": np.tile(np.arange(128, dtype="int32"), (4, 1)),
             "loss_labels": rng.integers(0, 65536, (4, 128)).astype("int32"),
             "loss_weights": np.ones((4, 128), "float32")}

    def temp_bytes(chunk):
        steps = CompiledSteps(model, loss_chunk_size=chunk)
        step = jax.jit(jax.value_and_grad(steps.loss_fn))
        compiled = step.lower(steps.trainable, steps.non_trainable, batch).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    logits_bytes = 512 * 65536 * 4
    whole, chunked = temp_bytes(None), temp_bytes(64)
    assert whole > logits_bytes
    assert chunked < logits_bytes / 2 < whole / 2, (whole, chunked)


def test_loss_chunk_size_is_validated():
    assert RunConfig(loss_chunk_size=None).loss_chunk_size is None
    assert RunConfig(loss_chunk_size=0).loss_chunk_size == 0
    for bad in (-1, 2.5, True, "64"):
        with pytest.raises(ConfigError, match="loss_chunk_size must be an integer >= 0"):
            RunConfig(loss_chunk_size=bad)


def test_bfloat16_model_trains_float32_lora_weights_and_optimizer_state(tiny_tokenizer_proto,
                                                                        color_examples):
    from gemma_lora.testing import build_tiny_gemma3

    model = build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48, dtype="bfloat16")
    lora.enable_lora(model, lora.LoraConfig(rank=4, alpha=8))
    query = model.backbone.get_layer("decoder_block_0").attention.query_dense
    assert query._kernel.dtype == "bfloat16" and query.compute_dtype == "bfloat16"
    steps = CompiledSteps(model, training.make_optimizer(RunConfig(learning_rate=1e-2), 10))
    assert {v.name for v in steps.trainable_variables} == {"lora_kernel_a", "lora_kernel_b"}
    split = batching.tokenize(model.preprocessor, color_examples["train"], 48)
    batch = batching.make_batch(split, np.arange(8), (48,), batching.loss_buffer_size(split))
    before = [np.asarray(value) for value in steps.trainable]
    loss, finite = steps.train_step(batch)
    assert finite and np.isfinite(loss)
    assert [str(value.dtype) for value in steps.trainable] == ["float32"] * len(before)
    moments = [value for variable, value in zip(steps.optimizer.variables, steps.optimizer_state)
               if variable is not steps.optimizer.iterations]
    assert len(moments) == 2 * len(before)  # AdamW momentum and velocity per LoRA matrix
    assert {str(value.dtype) for value in moments} == {"float32"}
    # B starts at zero; a float32 update of 1e-2-ish steps is visible, not rounded away.
    changed = [not np.array_equal(b, np.asarray(a)) for a, b in zip(steps.trainable, before)]
    assert all(changed)
