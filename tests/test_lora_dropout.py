"""LoRA dropout: PEFT's `W x + s·B·A·dropout(x)`, in training only."""

import json

import jax
import numpy as np
import pytest

from gemma_lora.lora import peft as hf_interop
from gemma_lora import lora
from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError
from gemma_lora.lora.dropout import dropout_keys
from gemma_lora.models import quantize_base
from gemma_lora.training import CompiledSteps
from gemma_lora.training import make_optimizer

RATE = 0.5


def _randomize_lora(model, seed=0):
    """Give every LoRA B a non-zero value, so the branch changes the output."""
    rng = np.random.default_rng(seed)
    for layer in lora.lora_layers(model):
        layer.lora_kernel_b.assign(rng.normal(0, 0.5, layer.lora_kernel_b.shape).astype("float32"))


def _inputs(model):
    return model.preprocessor.generate_preprocess(["Please send one red mug."], sequence_length=16)


def _hidden(model, training, key=None):
    if key is None:
        return np.asarray(model.backbone(_inputs(model), training=training))
    with dropout_keys(key):
        return np.asarray(model.backbone(_inputs(model), training=training))


def _layer_input(layer):
    """A random input for an `EinsumDense`: batch axes (2, 5), the rest from its kernel."""
    inputs, rest = layer.equation.split(",")
    sizes = dict(zip(rest.split("->")[0], layer.kernel.shape))
    batch_sizes = iter((2, 5))
    shape = [sizes[axis] if axis in sizes else next(batch_sizes) for axis in inputs]
    return np.random.default_rng(1).normal(size=shape).astype("float32")


def _layer(model, path):
    return next(layer for layer in lora.lora_layers(model) if layer.path == path)


@pytest.mark.parametrize("path", ["decoder_block_0/attention/query",
                                  "decoder_block_1/attention/attention_output",
                                  "decoder_block_0/ffw_linear"])
def test_branch_dropout_matches_a_hand_computation(tiny_causal_lm, path):
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8, target_layers="all-linear", dropout=RATE))
    _randomize_lora(tiny_causal_lm)
    layer = _layer(tiny_causal_lm, path)
    index = [l.path for l in lora.lora_layers(tiny_causal_lm)].index(path)
    x = _layer_input(layer)
    key = jax.random.key(7)
    with dropout_keys(key):
        dropped = np.asarray(layer(x, training=True))

    keep = np.asarray(jax.random.bernoulli(jax.random.fold_in(key, index), 1 - RATE, x.shape))
    equation = layer.equation
    w = np.asarray(layer._kernel)
    a, b = np.asarray(layer.lora_kernel_a), np.asarray(layer.lora_kernel_b)
    scale = 8 / 4
    expected = np.einsum(equation, x, w) + scale * np.einsum(
        equation, np.where(keep, x / (1 - RATE), 0), a) @ b
    np.testing.assert_allclose(dropped, expected, rtol=1e-4, atol=1e-5)
    # Without a key, or at inference, the layer is the plain merged W + s·A·B.
    merged = np.einsum(equation, x, w) + scale * np.einsum(equation, x, a) @ b
    np.testing.assert_allclose(np.asarray(layer(x, training=True)), merged, rtol=1e-4, atol=1e-5)
    with dropout_keys(key):
        np.testing.assert_allclose(np.asarray(layer(x, training=False)), merged,
                                   rtol=1e-4, atol=1e-5)


def test_dropout_is_active_in_training_and_inactive_at_inference(tiny_causal_lm,
                                                                 tiny_tokenizer_proto):
    from gemma_lora.testing import build_tiny_gemma3

    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8, dropout=RATE))
    _randomize_lora(tiny_causal_lm)
    plain = build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48, seed=0)
    lora.enable_lora(plain, lora.LoraConfig(rank=4, alpha=8))
    lora.assign_lora_weights(plain, lora.lora_weights(tiny_causal_lm))

    reference = _hidden(plain, training=False)
    first = _hidden(tiny_causal_lm, training=True, key=jax.random.key(1))
    second = _hidden(tiny_causal_lm, training=True, key=jax.random.key(2))
    assert not np.allclose(first, reference, atol=1e-4)
    assert not np.allclose(first, second, atol=1e-4)
    np.testing.assert_array_equal(first, _hidden(tiny_causal_lm, training=True,
                                                 key=jax.random.key(1)))
    np.testing.assert_allclose(_hidden(tiny_causal_lm, training=False, key=jax.random.key(1)),
                               reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_hidden(tiny_causal_lm, training=False), reference,
                               rtol=1e-5, atol=1e-6)


def test_dropout_works_on_an_int8_base(tiny_causal_lm):
    quantize_base(tiny_causal_lm, "int8")
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8, dropout=RATE))
    _randomize_lora(tiny_causal_lm)
    inference = _hidden(tiny_causal_lm, training=False)
    np.testing.assert_allclose(_hidden(tiny_causal_lm, training=False, key=jax.random.key(3)),
                               inference, rtol=1e-5, atol=1e-6)
    assert not np.allclose(_hidden(tiny_causal_lm, training=True, key=jax.random.key(3)),
                           inference, atol=1e-4)


def _first_losses(model, batch, seed, steps=2):
    compiled = CompiledSteps(model, make_optimizer(RunConfig(learning_rate=1e-2), 10), seed=seed)
    return [compiled.train_step(batch)[0] for _ in range(steps)]


def test_train_step_draws_masks_from_seed_and_step(tiny_causal_lm, tiny_tokenizer_proto,
                                                   color_examples):
    from gemma_lora.training import batching
    from gemma_lora.testing import build_tiny_gemma3

    split = batching.tokenize(tiny_causal_lm.preprocessor, color_examples["validation"], 48)
    batch = batching.make_batch(split, np.arange(8), (48,), batching.loss_buffer_size(split))

    def model_with(dropout):
        model = build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48, seed=0)
        lora.enable_lora(model, lora.LoraConfig(rank=4, alpha=8, dropout=dropout))
        _randomize_lora(model)
        return model

    no_dropout = _first_losses(model_with(0.0), batch, seed=0)
    seeded = _first_losses(model_with(RATE), batch, seed=0)
    assert _first_losses(model_with(RATE), batch, seed=0) == seeded  # reproducible
    assert _first_losses(model_with(RATE), batch, seed=1)[0] != seeded[0]
    assert seeded[0] != no_dropout[0]
    # Validation loss (no key) ignores dropout.
    compiled = CompiledSteps(model_with(RATE), make_optimizer(RunConfig(), 10))
    reference = CompiledSteps(model_with(0.0), make_optimizer(RunConfig(), 10))
    assert compiled.loss(batch) == pytest.approx(reference.loss(batch), rel=1e-6)


def test_adapter_and_peft_config_record_dropout(tiny_causal_lm, tmp_path):
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8, dropout=0.1))
    adapter = lora.save_adapter(tiny_causal_lm, tmp_path / "adapter", base_preset="tiny")
    assert lora.read_adapter_config(adapter)["dropout"] == pytest.approx(0.1)
    peft_folder = hf_interop.export_peft_adapter(tiny_causal_lm, tmp_path / "peft", "some/base")
    peft_config = json.loads((peft_folder / "adapter_config.json").read_text())
    assert peft_config["lora_dropout"] == pytest.approx(0.1)


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, "0.1", True])
def test_bad_dropout_is_refused(tiny_causal_lm, value):
    with pytest.raises(ConfigError, match=r"dropout must be a number in \[0, 1\)"):
        lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, dropout=value))
    with pytest.raises(ConfigError, match=r"dropout must be a number in \[0, 1\)"):
        RunConfig(dropout=value)


def test_dropout_on_a_layer_with_activation_is_refused_before_any_change():
    import keras

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(2)])
    with pytest.raises(ConfigError, match=r"dropout > 0 needs target layers without an "
                                          r"activation.*dense.* has one"):
        lora.enable_lora(model, lora.LoraConfig(rank=2, target_layers="all-linear", dropout=0.1))
    assert not any(layer.lora_enabled for layer in model.layers)
