"""End-to-end checks on the real Gemma 3 270M (converted from the PyPI GGUF)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from gemma_lora.training import batching
from gemma_lora import data
from gemma_lora import lora
from gemma_lora import models
from gemma_lora import training
from gemma_lora.config import RunConfig
from gemma_lora.training import CompiledSteps

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def lora_model(gemma3_270m_preset):
    model = models.load_causal_lm("gemma3_270m_pypi")
    lora.enable_lora(model, lora.LoraConfig(rank=8, alpha=32))
    return model


@pytest.fixture(scope="module")
def order_examples():
    records = data.read_records("data/order_extraction.jsonl")[:40]
    return data.to_prompt_response(records)


def test_a_few_lora_steps_lower_the_loss_on_a_fixed_batch(lora_model, order_examples):
    split = batching.tokenize(lora_model.preprocessor, {k: v[:4] for k, v in order_examples.items()}, 128)
    batch = batching.make_batch(split, np.arange(4), (128,), batching.loss_buffer_size(split))
    steps = CompiledSteps(lora_model, training.make_optimizer(RunConfig(learning_rate=1e-3, warmup_steps=0), 10))
    before = steps.mean_loss([batch])
    for _ in range(4):
        steps.train_step(batch)
    after = steps.mean_loss([batch])
    assert after < 0.8 * before, (before, after)


def test_adapter_save_then_load_gives_identical_logits(lora_model, gemma3_270m_preset, tmp_path):
    folder = lora.save_adapter(lora_model, tmp_path / "adapter", base_preset="gemma3_270m_pypi")
    size = (folder / lora.ADAPTER_WEIGHTS).stat().st_size
    assert size < 0.01 * sum(f.stat().st_size for f in gemma3_270m_preset.rglob("*.weights.h5"))
    fresh = models.load_causal_lm("gemma3_270m_pypi")
    lora.load_adapter(fresh, folder)
    x = lora_model.preprocessor.generate_preprocess(["Send two red mugs to Oslo."], sequence_length=16)
    np.testing.assert_array_equal(np.asarray(fresh.backbone(x)), np.asarray(lora_model.backbone(x)))


def test_notebook_runs_under_papermill_with_small_parameters(tmp_path):
    run_dir = tmp_path / "run"
    output = tmp_path / "executed.ipynb"
    command = [
        sys.executable, "-m", "papermill", "notebooks/01_finetune_gemma_lora.ipynb", str(output),
        "-p", "run_dir", str(run_dir), "-p", "max_steps", "4", "-p", "eval_every", "2",
        "-p", "warmup_steps", "1", "-p", "validation_fraction", "0.002",
        "-p", "test_fraction", "0.004", "-p", "max_new_tokens", "8", "-p", "eval_batch_size", "8",
        "-p", "num_samples", "2",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["max_steps"] == 4 and metrics["rank"] == 8
    assert metrics["results"]["steps"] == 4
    assert metrics["results"]["tuned"]["num_examples"] == 10
    assert (run_dir / "adapter" / lora.ADAPTER_CONFIG).is_file()
    assert (run_dir / "loss_curves.png").stat().st_size > 10_000
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + 5


# Measured (float32, 2-core x86 CPU): the losses differ by 1.8e-7 of the loss, and every LoRA
# matrix's gradient by at most 1.8e-6 of its largest entry; asserted with a 10x margin.
LOSS_RTOL = 2e-6
GRADIENT_TOLERANCE = 2e-5


def test_response_only_loss_and_gradients_equal_the_stock_full_logits_path(lora_model, order_examples):
    """A non-zero adapter on the real 270M: our step against what KerasHub's `fit` computes."""
    import jax
    import keras

    examples = {key: values[4:8] for key, values in order_examples.items()}
    steps = CompiledSteps(lora_model)
    rng = np.random.default_rng(0)
    # Non-zero A and B (the model's own variables stay as they are: B = 0).
    adapter = [rng.normal(0, 0.02, value.shape).astype("float32")
               for value in steps.trainable]
    split = batching.tokenize(lora_model.preprocessor, examples, 128)
    batch = batching.make_batch(split, np.arange(4), batching.bucket_lengths(128),
                                batching.loss_buffer_size(split))
    our_step = jax.jit(jax.value_and_grad(steps.loss_fn))
    ours, our_grads = our_step(adapter, steps.non_trainable, batch)

    # KerasHub's path: its preprocessor, full logits from the CausalLM, the loss `fit` uses.
    x, y, weights = lora_model.preprocessor(examples, sequence_length=128)
    by_path = dict(zip([v.path for v in steps.trainable_variables], adapter))
    stock_trainable = [by_path[v.path] for v in lora_model.trainable_variables]
    non_trainable = [v.value for v in lora_model.non_trainable_variables]
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight")

    def stock_loss(trainable):
        logits, _ = lora_model.stateless_call(trainable, non_trainable, x)
        return cross_entropy(y, logits, sample_weight=weights)

    stock, stock_grads = jax.jit(jax.value_and_grad(stock_loss))(stock_trainable)
    stock_by_path = dict(zip([v.path for v in lora_model.trainable_variables], stock_grads))
    loss_difference = abs(float(ours) - float(stock)) / float(stock)
    differences = {variable.path: float(
        np.abs(np.asarray(grad) - np.asarray(stock_by_path[variable.path])).max()
        / np.abs(np.asarray(stock_by_path[variable.path])).max())
        for variable, grad in zip(steps.trainable_variables, our_grads)}
    assert len(differences) == 4 * lora_model.backbone.num_layers and all(
        np.isfinite(list(differences.values())))
    gradient_difference = max(differences.values())
    print(f"loss {float(ours):.6f} vs {float(stock):.6f} (relative {loss_difference:.1e}); "
          f"gradients: max |difference| / max |stock| {gradient_difference:.1e}")
    assert loss_difference <= LOSS_RTOL
    assert gradient_difference <= GRADIENT_TOLERANCE
    # The adapter matters: its loss is not the base model's.
    assert abs(float(ours) - float(our_step(steps.trainable, steps.non_trainable, batch)[0])) > 1e-2
