"""The benchmark scripts run and print their tables (no timing assertions)."""

import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

HF_STACK = all(importlib.util.find_spec(name) for name in ("torch", "transformers", "peft"))


@pytest.fixture(scope="module")
def train_throughput():
    spec = importlib.util.spec_from_file_location("train_throughput", "benchmarks/train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_throughput_smoke():
    # --loss-chunk 16 is below the batch's loss positions, so the chunked loss runs too.
    # --no-hf: the transformers + PEFT rows are run in-process below (a process each costs imports).
    command = [sys.executable, "benchmarks/train_throughput.py", "--arch", "tiny", "--steps", "3",
               "--warmup", "1", "--max-length", "32", "--lengths", "parametric:0.33", "--packing",
               "--loss-chunk", "16", "--no-hf"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [line for line in completed.stdout.splitlines() if line.startswith(("| stock", "| ours", "| hf_"))]
    assert [row.split("|")[1].strip() for row in rows] == ["stock", "ours", "ours+packing"]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert all(re.fullmatch(r"[\d,.]+%?", cell) for cell in cells[1:]), row
    assert "step time ours/stock:" in completed.stdout
    assert "step time ours+packing/stock:" in completed.stdout
    assert "loss chunk 16" in completed.stdout


@pytest.mark.skipif(not HF_STACK, reason="needs torch, transformers and peft (make setup-interop)")
def test_hf_row_runs(train_throughput):
    """The hf_peft_bfloat16 row trains the tiny model and reports its figures."""
    import argparse

    args = argparse.Namespace(arch="tiny", variant="hf_peft_bfloat16", lengths="parametric:0.33", batch=4,
                              steps=2, warmup=1, max_length=32, seed=0, rank=4, targets="qv",
                              dtype="float32", loss_chunk=16)
    result = train_throughput.run_variant(args)
    assert result["variant"] == "hf_peft_bfloat16" and result["device"] == "cpu"
    assert 0 < result["padding_fraction"] < 1  # each batch padded to its longest row, not to 32
    assert result["median_step_s"] > 0 and result["effective_tokens_per_s"] > 0


@pytest.mark.skipif(not HF_STACK, reason="needs torch, transformers and peft (make setup-interop)")
def test_hf_rows_train_on_our_loss_tokens(train_throughput):
    """transformers' own loss on `hf_batch` is the mean cross-entropy over the split's loss tokens."""
    import torch

    pairs = train_throughput.sample_lengths("parametric:0.33", 4, 32, seed=0)
    split = train_throughput.make_split(pairs, 512, 32, seed=0)
    model, _ = train_throughput.build_hf_model("tiny", "float32", 4, ("query", "value"))
    trainable = sorted({name.split(".")[-4] for name, p in model.named_parameters() if p.requires_grad})
    assert trainable == ["q_proj", "v_proj"]
    bf16, _ = train_throughput.build_hf_model("tiny", "bfloat16", 4, ("query", "value"))
    dtypes = {(p.requires_grad, p.dtype) for p in bf16.parameters()}
    assert dtypes == {(True, torch.float32), (False, torch.bfloat16)}  # float32 LoRA weights, as in Keras
    indices = np.arange(4)
    batch = train_throughput.hf_batch(split, indices)
    with torch.no_grad():
        output = model(**batch)
    log_probs = torch.log_softmax(output.logits.double(), dim=-1).numpy()
    weights = split.loss_weights[indices, :batch["input_ids"].shape[1]]
    rows, positions = np.nonzero(weights)
    picked = log_probs[rows, positions, split.labels[indices][rows, positions]]
    assert len(picked) == split.loss_weights[indices].sum()
    np.testing.assert_allclose(float(output.loss), -picked.mean(), rtol=1e-5)


def test_generation_speed_smoke():
    command = [sys.executable, "benchmarks/generation_speed.py", "--tiny", "--prompts", "5",
               "--batch-size", "4", "--max-new-tokens", "6"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [line for line in completed.stdout.splitlines() if line.startswith(("| keras_hub", "| ours"))]
    assert [row.split("|")[1].strip() for row in rows] == ["keras_hub", "ours"]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert all(re.fullmatch(r"[\d,./]+", cell) for cell in cells[1:]), row
        assert cells[6] == "5/5", row  # same answers as KerasHub's generate
    assert "wall time keras_hub/ours:" in completed.stdout


@pytest.fixture(scope="module")
def matmul_dtypes():
    spec = importlib.util.spec_from_file_location("matmul_dtypes", "benchmarks/matmul_dtypes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_xla_keeps_only_a_float32_result_bf16_dot_in_bf16(matmul_dtypes):
    """docs/performance.md's finding, read from the HLO XLA:CPU compiles (no flags in the test run)."""
    import jax

    if jax.devices()[0].platform != "cpu" or os.environ.get("XLA_FLAGS"):
        pytest.skip("the finding is about XLA:CPU without flags")
    assert matmul_dtypes.compiled_dot(None).startswith("dot f32 x f32 -> f32")  # upcast
    assert matmul_dtypes.compiled_dot("float32").startswith("dot bf16 x bf16 -> f32 via __ynn_fusion, 0")


def test_bf16_dot_f32out_value_and_gradient_within_bf16_rounding(matmul_dtypes):
    import jax
    import jax.numpy as jnp

    x, w = matmul_dtypes.activations(8, 64), matmul_dtypes.weight(64, 256)
    cotangent = np.random.default_rng(1).standard_normal((8, 256)).astype(np.float32)
    y, pull = jax.vjp(lambda a: matmul_dtypes.bf16_dot_f32out()(a, jnp.asarray(w, jnp.bfloat16)), x)
    dx = pull(cotangent)[0]
    y64, dx64 = x.astype(np.float64) @ w.T.astype(np.float64), cotangent.astype(np.float64) @ w
    assert y.dtype == dx.dtype == jnp.float32
    # bf16 rounds each input to 8 significant bits (relative error up to 2**-9), over 64 terms.
    np.testing.assert_allclose(y, y64, atol=2e-2 * np.abs(y64).max())
    np.testing.assert_allclose(dx, dx64, atol=2e-2 * np.abs(dx64).max())
    assert np.abs(np.asarray(y) - y64).max() > 1e-6 * np.abs(y64).max()  # it did run in bf16
