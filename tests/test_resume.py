"""Kill a real (tiny) training run and resume it: nothing lost, nothing half-written.

The kills are real (SIGKILL to a subprocess, `tiny_training_run.py`). The
run with LoRA dropout, packing and early stopping is interrupted in this
process instead (an exception between two steps, from a fresh model on
resume), which is cheaper and leaves the same thing behind: its checkpoints.
"""

import json
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
from gemma_lora.testing import build_tiny_gemma3

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


# === Dropout, packing and early stopping across an interruption (in one process) ===


class Interrupted(Exception):
    """Stands for a kill between two steps: all the run leaves is its checkpoints."""


# Validation losses by step, so that early stopping (patience=1) comes at a known step:
# step 2 is the best, step 4 the first evaluation without improvement (its checkpoint
# carries that count across the interruption), step 6 the second, where the run stops.
SCRIPTED_VAL_LOSS = {0: 5.0, 2: 4.0, 4: 4.5, 6: 4.6, 8: 3.0, 10: 3.0}


def _optimizer_step(steps: training.CompiledSteps) -> int:
    optimizer = steps.optimizer
    return int(steps.optimizer_state[optimizer.variables.index(optimizer.iterations)])


def _run(proto, examples, run_dir, resume=False):
    """A run with LoRA dropout and packing, from a fresh model (as a new process would be)."""
    model = build_tiny_gemma3(proto, sequence_length=48)
    config = RunConfig(rank=4, alpha=8, dropout=0.1, packing=True, patience=1, eval_every=2,
                       max_steps=10, batch_size=8, sequence_length=48, learning_rate=3e-2,
                       warmup_steps=2, eval_batch_size=8, run_dir=str(run_dir), resume=resume)
    lora.enable_lora(model, lora.LoraConfig.from_run(config))
    lines = []
    result = training.train(model, config, examples["train"], examples["validation"],
                            log=lines.append)
    return model, result, lines


def _last_checkpoint(run_dir):
    folder = checkpoint.latest(run_dir)
    state = json.loads((folder / checkpoint.STATE_FILE).read_text())
    return folder.name, load_file(str(folder / checkpoint.ARRAYS_FILE)), state


def test_resume_with_dropout_packing_and_early_stopping_equals_the_uninterrupted_run(
        tiny_tokenizer_proto, color_examples, tmp_path, monkeypatch):
    monkeypatch.setattr(training.CompiledSteps, "mean_loss",
                        lambda self, batches: SCRIPTED_VAL_LOSS[_optimizer_step(self)])
    real_step, packed = training.CompiledSteps.train_step, []

    def step_until_interrupted(self, batch):
        if interrupt and _optimizer_step(self) == 4:
            raise Interrupted
        packed.append("segment_ids" in batch)
        return real_step(self, batch)

    monkeypatch.setattr(training.CompiledSteps, "train_step", step_until_interrupted)
    interrupt = False
    whole_model, whole, _ = _run(tiny_tokenizer_proto, color_examples, tmp_path / "whole")
    assert (whole.steps, whole.stopped_early, whole.best_step) == (6, True, 2)

    interrupt = True
    with pytest.raises(Interrupted):
        _run(tiny_tokenizer_proto, color_examples, tmp_path / "run")
    name, _, state = _last_checkpoint(tmp_path / "run")
    assert (name, state["best_step"], state["evals_without_improvement"]) == ("step-000004", 2, 1)

    interrupt = False
    model, resumed, lines = _run(tiny_tokenizer_proto, color_examples, tmp_path / "run",
                                 resume=True)
    assert lines[0].startswith(f"Resuming from {tmp_path / 'run' / 'checkpoints' / name} (step 4")
    assert all(packed) and len(packed) == 6 + 4 + 2
    # Every step's loss (dropout masks and packed batches of steps 5-6 included), the
    # validation losses and the stop, exactly.
    assert resumed.history == whole.history
    assert (resumed.steps, resumed.stopped_early, resumed.best_step, resumed.best_val_loss) == (
        whole.steps, whole.stopped_early, whole.best_step, whole.best_val_loss)
    # The last state (weights, optimizer, best adapter, counters) and the best adapter in
    # the model and on disk, bit for bit.
    (whole_name, whole_arrays, whole_state), (last_name, arrays, last_state) = (
        _last_checkpoint(tmp_path / "whole"), _last_checkpoint(tmp_path / "run"))
    assert whole_name == last_name == "step-000006" and last_state == whole_state
    assert arrays.keys() == whole_arrays.keys()
    for key, value in whole_arrays.items():
        np.testing.assert_array_equal(arrays[key], value, err_msg=key)
    saved = load_file(str(tmp_path / "run" / "adapter" / lora.ADAPTER_WEIGHTS))
    for key, value in lora.lora_weights(whole_model).items():
        np.testing.assert_array_equal(lora.lora_weights(model)[key], value, err_msg=key)
        np.testing.assert_array_equal(saved[key], value, err_msg=key)
