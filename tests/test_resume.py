"""Kill a real (tiny) training run and resume it: nothing lost, nothing half-written."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from gemma_lora.training import checkpoint
from gemma_lora import lora
from gemma_lora import training
from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError

SCRIPT = Path(__file__).with_name("tiny_training_run.py")


def _start(run_dir, *flags):
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(SCRIPT.parent.parent)}
    return subprocess.Popen([sys.executable, str(SCRIPT), str(run_dir), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _finish(process):
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


def _wait_for(predicate, process, timeout=300):
    deadline = time.time() + timeout
    while not predicate():
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _adapter(run_dir):
    return load_file(str(Path(run_dir) / "final_adapter" / lora.ADAPTER_WEIGHTS))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    _finish(_start(run_dir))
    return run_dir


def test_killed_run_resumes_to_the_same_adapter(uninterrupted, tmp_path):
    process = _start(tmp_path, "--step-delay", "0.3")
    _wait_for(lambda: checkpoint.latest(tmp_path) is not None
              and checkpoint.latest(tmp_path).name >= "step-000015", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = checkpoint.latest(tmp_path).name
    assert killed_at != "step-000030"
    output = _finish(_start(tmp_path, "--resume"))
    assert f"Resuming from {tmp_path / 'checkpoints' / killed_at}" in output
    expected, resumed = _adapter(uninterrupted), _adapter(tmp_path)
    assert expected.keys() == resumed.keys()
    for key in expected:
        np.testing.assert_allclose(resumed[key], expected[key], rtol=1e-5, atol=1e-6)
    history = (tmp_path / training.HISTORY_FILE).read_text()
    assert history == (uninterrupted / training.HISTORY_FILE).read_text().replace(
        str(uninterrupted), str(tmp_path))


def test_kill_during_checkpoint_write_resumes_from_the_previous_one(uninterrupted, tmp_path):
    process = _start(tmp_path, "--pause-in-checkpoint", "20")
    _wait_for(lambda: (tmp_path / "paused").exists(), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.latest(tmp_path).name == "step-000015"
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert any(name.startswith(".step-000020") for name in leftovers)  # the unfinished write
    output = _finish(_start(tmp_path, "--resume"))
    assert "Resuming from" in output and "step-000015" in output
    for key, value in _adapter(uninterrupted).items():
        np.testing.assert_allclose(_adapter(tmp_path)[key], value, rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()
                  if not p.name.startswith(".")) == ["step-000025", "step-000030"]


def test_checkpoint_from_another_config_is_refused(uninterrupted, tmp_path):
    config = RunConfig(rank=16, alpha=8, max_steps=30, eval_every=5, batch_size=8, sequence_length=48,
                       learning_rate=3e-2, warmup_steps=2, patience=100, data_path=str(SCRIPT))
    with pytest.raises(ConfigError, match=r"different configuration \(rank: checkpoint 4, now 16\)"):
        checkpoint.load(checkpoint.latest(uninterrupted), checkpoint.fingerprint(config))


def test_non_finite_loss_stops_without_applying_the_step(tiny_causal_lm, color_examples, tmp_path,
                                                         monkeypatch):
    real_batches = training.batching.training_batches

    def poisoned(*args, **kwargs):
        for step, batch in enumerate(real_batches(*args, **kwargs), start=1):
            if step == 7:
                batch = dict(batch, loss_weights=batch["loss_weights"] * np.nan)
            yield batch

    monkeypatch.setattr(training.batching, "training_batches", poisoned)
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8))
    config = RunConfig(max_steps=20, eval_every=5, batch_size=8, sequence_length=48, learning_rate=3e-2,
                       warmup_steps=2, eval_batch_size=8, run_dir=str(tmp_path))
    lines = []
    result = training.train(tiny_causal_lm, config, color_examples["train"], color_examples["validation"],
                         log=lines.append)
    assert result.diverged_at == 7
    assert result.steps == 6 and result.best_step == 5
    message = lines[-1]
    assert message.startswith("Step 7: the loss or a gradient is not finite")
    assert "Try a lower learning_rate, dtype='float32'" in message
    saved = load_file(str(tmp_path / "adapter" / lora.ADAPTER_WEIGHTS))
    for key, value in lora.lora_weights(tiny_causal_lm).items():
        assert np.all(np.isfinite(value))
        np.testing.assert_array_equal(value, saved[key])
    assert checkpoint.latest(tmp_path).name == "step-000005"
