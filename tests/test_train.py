import csv

import numpy as np
import pytest

from gemma_lora import lora
from gemma_lora import testing
from gemma_lora import training
from gemma_lora.config import RunConfig


def _config(tmp_path, **overrides):
    values = dict(max_steps=40, eval_every=10, batch_size=8, sequence_length=48,
                  learning_rate=3e-2, warmup_steps=2, eval_batch_size=8,
                  run_dir=str(tmp_path / "run"))
    values.update(overrides)
    return RunConfig(**values)


def test_schedule_warms_up_then_decays():
    cosine = training.WarmupDecay(1.0, warmup_steps=10, total_steps=110, kind="cosine")
    linear = training.WarmupDecay(1.0, warmup_steps=10, total_steps=110, kind="linear")
    constant = training.WarmupDecay(1.0, warmup_steps=10, total_steps=110, kind="constant")
    assert float(cosine(0)) == pytest.approx(0.1)
    assert float(cosine(4)) == pytest.approx(0.5)
    assert float(cosine(10)) == pytest.approx(1.0)
    assert float(cosine(60)) == pytest.approx(0.5)
    assert float(linear(85)) == pytest.approx(0.25)
    assert float(cosine(110)) == pytest.approx(0.0, abs=1e-7)
    assert float(constant(100)) == pytest.approx(1.0)


def test_weight_decay_skips_norms_and_biases():
    optimizer = training.make_optimizer(RunConfig(), total_steps=100)
    import keras

    norm = keras.Variable(np.ones(3), name="pre_attention_norm_scale")
    kernel = keras.Variable(np.ones((3, 3)), name="lora_kernel_a")
    assert optimizer._use_weight_decay(kernel)
    assert not optimizer._use_weight_decay(norm)


def test_training_lowers_validation_loss_and_keeps_best_adapter(tiny_causal_lm, color_examples, tmp_path):
    config = _config(tmp_path)
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8))
    lines = []
    result = training.train(tiny_causal_lm, config, color_examples["train"],
                         color_examples["validation"], log=lines.append)
    val_losses = [row["val_loss"] for row in result.history if row["val_loss"] is not None]
    assert result.steps == 40
    assert [row["step"] for row in result.history] == list(range(41))
    assert len(val_losses) == 5  # before training, then every 10 steps
    assert val_losses[-1] < val_losses[0]
    assert result.best_val_loss == min(val_losses)
    assert any("ETA" in line and "val_loss" in line for line in lines)
    rows = list(csv.DictReader(open(tmp_path / "run" / training.HISTORY_FILE)))
    assert [int(r["step"]) for r in rows] == list(range(41))
    assert float(rows[10]["val_loss"]) == pytest.approx(val_losses[1])
    saved = lora.read_adapter_config(result.adapter_dir)
    assert saved["rank"] == 4


def test_early_stopping_restores_the_best_adapter(tiny_causal_lm, color_examples, tmp_path):
    from safetensors.numpy import load_file

    # Validation answers that contradict training (each color replaced by the
    # next one): the better the model learns, the worse validation gets, so
    # patience 0 must stop early and keep an earlier adapter.
    from tests.conftest import COLORS

    shifted = {c: COLORS[(i + 1) % len(COLORS)] for i, c in enumerate(COLORS)}
    validation = dict(color_examples["validation"])
    validation["responses"] = [shifted[c] for c in validation["responses"]]
    config = _config(tmp_path, max_steps=80, patience=0)
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8))
    result = training.train(tiny_causal_lm, config, color_examples["train"], validation,
                         log=lambda line: None)
    assert result.stopped_early
    assert result.steps < config.max_steps
    assert result.best_step < result.steps
    saved = load_file(str(result.adapter_dir / lora.ADAPTER_WEIGHTS))
    current = lora.lora_weights(tiny_causal_lm)
    for key, value in saved.items():
        np.testing.assert_array_equal(current[key], value)


def test_only_response_tokens_carry_loss(tiny_causal_lm, color_examples):
    batch = {k: v[:2] for k, v in color_examples["train"].items()}
    x, y, weights = tiny_causal_lm.preprocessor(batch)
    weights = np.asarray(weights)
    tokens = np.asarray(y)
    tokenizer = tiny_causal_lm.preprocessor.tokenizer
    for row in range(2):
        weighted = tokens[row][weights[row] > 0].tolist()
        # The response tokens and the end token, nothing from the prompt.
        assert tokenizer.detokenize(weighted[:-1]).strip() == batch["responses"][row]
        assert weighted[-1] == tokenizer.end_token_id


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_qlora_on_a_quantized_base_trains(tiny_causal_lm, color_examples, tmp_path, mode):
    from gemma_lora import models

    models.quantize_base(tiny_causal_lm, mode)
    query = next(l for l in tiny_causal_lm.backbone._flatten_layers() if l.name == "query")
    assert query.quantization_mode == mode
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8, target_layers="all-linear"))
    result = training.train(tiny_causal_lm, _config(tmp_path, max_steps=30, learning_rate=1e-2),
                         color_examples["train"],
                         color_examples["validation"], log=lambda line: None)
    val_losses = [row["val_loss"] for row in result.history if row["val_loss"] is not None]
    assert val_losses[-1] < val_losses[0] - 0.2, val_losses


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_qlora_gradients_match_the_float_base(tiny_tokenizer_proto, color_examples, mode):
    """On a quantized base, the LoRA gradients are the float model's up to rounding.

    Keras' default int8 also quantizes activations, and its tied-embedding
    logits then pass almost no gradient to the hidden states: this catches it.
    """
    import jax

    from gemma_lora.training import batching
    from gemma_lora import models
    from gemma_lora.training import CompiledSteps

    def lora_gradients(quantize):
        model = testing.build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48, seed=0)
        if quantize:
            models.quantize_base(model, mode)
        lora.enable_lora(model, lora.LoraConfig(rank=4, alpha=8, target_layers="all-linear"))
        for layer in lora.lora_layers(model):  # B = 0 would zero every A gradient.
            layer.lora_kernel_b.assign(np.full(layer.lora_kernel_b.shape, 0.1, "float32"))
        split = batching.tokenize(model.preprocessor, color_examples["validation"], 48)
        batch = batching.make_batch(split, np.arange(8), (48,), batching.loss_buffer_size(split))
        steps = CompiledSteps(model)
        grads = jax.grad(steps.loss_fn)(steps.trainable, steps.non_trainable, batch)
        return np.concatenate([np.ravel(g) for g in grads])

    quantized, full = lora_gradients(True), lora_gradients(False)
    cosine = quantized @ full / (np.linalg.norm(quantized) * np.linalg.norm(full))
    assert cosine > 0.9, cosine  # int4 gives ~0.94 here; int8 with activation rounding 0.33


def test_a_run_that_never_improves_keeps_the_base_model(tiny_causal_lm, color_examples, tmp_path):
    from safetensors.numpy import load_file

    # Steps this small leave the validation loss exactly where it was: never better.
    config = _config(tmp_path, max_steps=10, eval_every=5, patience=5, learning_rate=1e-30,
                     warmup_steps=0)
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8))
    result = training.train(tiny_causal_lm, config, color_examples["train"],
                         color_examples["validation"], log=lambda line: None)
    assert result.best_step == 0
    saved = load_file(str(result.adapter_dir / lora.ADAPTER_WEIGHTS))
    b_weights = [value for key, value in saved.items() if "lora_kernel_b" in key]
    assert b_weights and not any(value.any() for value in b_weights)
    for key, value in lora.lora_weights(tiny_causal_lm).items():
        np.testing.assert_array_equal(value, saved[key])
