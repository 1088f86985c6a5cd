"""Train a LoRA-enabled KerasHub `CausalLM`.

AdamW (no weight decay on biases, norms and scales), linear warm-up then
cosine, linear or constant decay, global-norm gradient clipping, validation
loss every `eval_every` steps, early stopping on validation loss that keeps
the best adapter, a progress line with loss and ETA, and the per-step
history saved as CSV.

The loss is the mean cross-entropy over response tokens only: KerasHub's
preprocessor masks the prompt out through `sample_weight` when it is given
`{"prompts": ..., "responses": ...}`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from gemma_lora import lora
from gemma_lora.config import RunConfig
from gemma_lora.io_utils import write_text_atomic

HISTORY_FILE = "history.csv"
ADAPTER_DIR = "adapter"
HISTORY_FIELDS = ("step", "loss", "learning_rate", "val_loss")


def response_loss() -> keras.losses.Loss:
    """Cross-entropy averaged over the tokens that carry weight (the response)."""
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight"
    )


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak`, then cosine, linear or constant decay to 0.

    Args:
        peak: the learning rate at the end of warm-up.
        warmup_steps: steps of linear warm-up from 0.
        total_steps: steps of the whole run; decay ends there.
        kind: `"cosine"`, `"linear"` or `"constant"`.

    Example:
    >>> schedule = WarmupDecay(2e-4, warmup_steps=10, total_steps=100, kind="cosine")
    >>> float(schedule(10))
    0.0002
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, kind: str):
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.kind = kind

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = keras.ops.minimum(1.0, (step + 1) / max(1, self.warmup_steps))
        span = max(1, self.total_steps - self.warmup_steps)
        progress = keras.ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.kind == "cosine":
            decay = 0.5 * (1.0 + keras.ops.cos(math.pi * progress))
        elif self.kind == "linear":
            decay = 1.0 - progress
        else:
            decay = keras.ops.ones_like(progress)
        in_warmup = step < self.warmup_steps
        return self.peak * keras.ops.where(in_warmup, warmup, decay)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "kind": self.kind}


def make_optimizer(config: RunConfig, total_steps: int) -> keras.optimizers.AdamW:
    """AdamW with the config's schedule and clipping, no decay on norms/biases.

    Args:
        config: the run's parameters.
        total_steps: number of training steps (for the schedule).

    Returns:
        A Keras `AdamW` optimizer.
    """
    optimizer = keras.optimizers.AdamW(
        learning_rate=WarmupDecay(
            config.learning_rate, config.warmup_steps, total_steps, config.lr_schedule
        ),
        weight_decay=config.weight_decay,
        global_clipnorm=config.gradient_clip_norm,
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "scale", "norm", "gamma", "beta"])
    return optimizer


def make_dataset(
    examples: dict[str, list[str]],
    batch_size: int,
    shuffle_seed: int | None = None,
    repeat: bool = False,
) -> tf.data.Dataset:
    """A `tf.data` pipeline of raw prompt/response batches.

    The model's preprocessor tokenizes them inside `fit`/`evaluate`.

    Args:
        examples: `{"prompts": [...], "responses": [...]}`.
        batch_size: examples per batch.
        shuffle_seed: shuffle every pass with this seed; `None` keeps order.
        repeat: loop forever (training) instead of one pass.

    Returns:
        A batched `tf.data.Dataset` of `{"prompts", "responses"}` dicts.
    """
    dataset = tf.data.Dataset.from_tensor_slices(dict(examples))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(examples["prompts"]), seed=shuffle_seed,
                                  reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class TrainResult:
    """What a training run did.

    Args:
        history: one dict per step: `step`, `loss`, `learning_rate`, and
            `val_loss` at evaluation steps (else `None`); step 0 holds the
            validation loss before training.
        best_step: the step whose adapter was kept.
        best_val_loss: its validation loss.
        steps: steps actually run.
        stopped_early: whether early stopping ended the run.
        seconds: wall-clock training time.
        adapter_dir: where the best adapter was saved.
    """

    history: list[dict]
    best_step: int
    best_val_loss: float
    steps: int
    stopped_early: bool
    seconds: float
    adapter_dir: Path


class _TrainingMonitor(keras.callbacks.Callback):
    """Per-step history, progress lines, best-adapter keeping, early stopping."""

    def __init__(self, config: RunConfig, total_steps: int, run_dir: Path,
                 base_preset: str, log: Callable[[str], None]):
        super().__init__()
        self.config = config
        self.total_steps = total_steps
        self.run_dir = run_dir
        self.base_preset = base_preset
        self.log = log
        self.history: list[dict] = []
        self.best_val_loss = math.inf
        self.best_step = 0
        self.best_weights: dict[str, np.ndarray] | None = None
        self.evals_without_improvement = 0
        self.stopped_early = False

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.batches_in_epoch = 0
        self.previous_mean = 0.0

    def on_train_batch_end(self, batch, logs=None):
        # Keras reports the running mean since the epoch began; recover this
        # step's own loss from two consecutive means.
        self.batches_in_epoch += 1
        mean = float(logs["loss"])
        loss = mean * self.batches_in_epoch - self.previous_mean * (self.batches_in_epoch - 1)
        self.previous_mean = mean
        self.step += 1
        lr = float(self.model.optimizer.learning_rate)
        self.history.append({"step": self.step, "loss": loss, "learning_rate": lr,
                             "val_loss": None})
        if not math.isfinite(loss):
            self.model.stop_training = True
            self.log(f"step {self.step}: loss is {loss}; stopping. Try a lower "
                     "learning_rate or dtype='float32'.")

    def on_epoch_end(self, epoch, logs=None):
        val_loss = float(logs["val_loss"])
        self.history[-1]["val_loss"] = val_loss
        improved = val_loss < self.best_val_loss
        if improved:
            self.best_val_loss, self.best_step = val_loss, self.step
            self.best_weights = lora.lora_weights(self.model)
            lora.save_adapter(self.model, self.run_dir / ADAPTER_DIR, self.base_preset)
            self.evals_without_improvement = 0
        else:
            self.evals_without_improvement += 1
        write_history(self.history, self.run_dir / HISTORY_FILE)
        self.log(self._progress_line(val_loss, improved))
        if self.evals_without_improvement > self.config.patience:
            self.stopped_early = self.model.stop_training = True
            self.log(f"Early stopping: no improvement for "
                     f"{self.evals_without_improvement} evaluations.")

    def _progress_line(self, val_loss: float, improved: bool) -> str:
        elapsed = time.perf_counter() - self.start
        per_step = elapsed / self.step
        eta = per_step * (self.total_steps - self.step)
        recent = [row["loss"] for row in self.history[-self.config.eval_every:]
                  if row["loss"] is not None]
        return (
            f"step {self.step:>5}/{self.total_steps} | loss {np.mean(recent):.4f} | "
            f"val_loss {val_loss:.4f}{' *' if improved else '  '} | "
            f"{per_step:.2f} s/step | elapsed {_clock(elapsed)} | ETA {_clock(eta)}"
        )

    def restore_best(self) -> None:
        """Put the best adapter's weights back into the model."""
        if self.best_weights is None:
            return
        lora.assign_lora_weights(self.model, self.best_weights, "best adapter")


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s"


def write_history(history: list[dict], path: str | os.PathLike) -> None:
    """Write the per-step history as CSV, atomically.

    Args:
        history: rows with the keys of `HISTORY_FIELDS`.
        path: destination CSV file.
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    for row in history:
        writer.writerow({key: ("" if row[key] is None else row[key]) for key in HISTORY_FIELDS})
    write_text_atomic(path, buffer.getvalue())


def train(
    model: keras.Model,
    config: RunConfig,
    train_examples: dict[str, list[str]],
    validation_examples: dict[str, list[str]],
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Fine-tune the LoRA weights of `model` and keep the best adapter.

    Validation loss is computed every `config.eval_every` steps; the adapter
    with the lowest validation loss is saved to `<run_dir>/adapter` (the
    previous best stays in place until the new one is complete) and is the
    one left in the model at the end.

    Args:
        model: a KerasHub `CausalLM` with LoRA enabled.
        config: the run's parameters.
        train_examples: `{"prompts", "responses"}` for training.
        validation_examples: `{"prompts", "responses"}` for validation loss.
        log: where progress lines go.

    Returns:
        A `TrainResult`.

    Example:
    >>> enable_lora(model, rank=8)
    >>> result = train(model, RunConfig(max_steps=100), train_ex, val_ex)
    """
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    total_steps = config.training_steps(len(train_examples["prompts"]))
    chunks = math.ceil(total_steps / config.eval_every)
    total_steps = chunks * config.eval_every
    model.preprocessor.sequence_length = config.sequence_length
    model.compile(
        optimizer=make_optimizer(config, total_steps),
        loss=response_loss(),
        weighted_metrics=[],
        sampler="greedy",
    )
    monitor = _TrainingMonitor(config, total_steps, run_dir, config.preset, log)
    validation = make_dataset(validation_examples, config.eval_batch_size)
    start = time.perf_counter()
    initial_val_loss = float(model.evaluate(validation, verbose=0, return_dict=True)["loss"])
    monitor.history.append({"step": 0, "loss": None, "learning_rate": 0.0,
                            "val_loss": initial_val_loss})
    log(f"Training {total_steps} steps of {config.batch_size} examples; validation "
        f"every {config.eval_every} steps (before training: val_loss {initial_val_loss:.4f}).")
    model.fit(
        make_dataset(train_examples, config.batch_size, shuffle_seed=config.seed, repeat=True),
        validation_data=validation,
        steps_per_epoch=config.eval_every,
        epochs=chunks,
        callbacks=[monitor],
        shuffle=False,  # The dataset shuffles itself, with the run's seed.
        verbose=0,
    )
    seconds = time.perf_counter() - start
    monitor.restore_best()
    return TrainResult(
        history=monitor.history,
        best_step=monitor.best_step,
        best_val_loss=monitor.best_val_loss,
        steps=monitor.step,
        stopped_early=monitor.stopped_early,
        seconds=seconds,
        adapter_dir=run_dir / ADAPTER_DIR,
    )
