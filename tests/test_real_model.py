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


def test_response_only_loss_equals_the_stock_full_logits_loss(lora_model, order_examples):
    import keras

    examples = {key: values[4:8] for key, values in order_examples.items()}
    x, y, weights = lora_model.preprocessor(examples)
    stock = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight")(y, lora_model(x), sample_weight=weights)
    split = batching.tokenize(lora_model.preprocessor, examples, 128)
    batch = batching.make_batch(split, np.arange(4), batching.bucket_lengths(128),
                                batching.loss_buffer_size(split))
    ours = CompiledSteps(lora_model).mean_loss([batch])
    np.testing.assert_allclose(ours, float(stock), rtol=1e-4)
