"""Train a LoRA-enabled KerasHub `CausalLM`.

AdamW (no weight decay on biases, norms and scales), linear warm-up then
cosine, linear or constant decay, global-norm gradient clipping, validation
loss every `eval_every` steps, early stopping on validation loss that keeps
the best adapter, and the per-step history saved as CSV. While it runs, a
progress bar (`gemma_lora.progress`: a widget in Jupyter, plain lines in a
log) shows loss, learning rate, tokens/s and ETA, a line with the validation
loss follows every evaluation (`*` marks an improvement), and the numbers go
where `config.report_to` says (`tracking`: TensorBoard by default).

The loss is the mean cross-entropy over response tokens only: KerasHub's
preprocessor masks the prompt out when it is given
`{"prompts": ..., "responses": ...}`, and the compiled step in `steps`
computes logits only at those positions.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from gemma_lora import lora
from gemma_lora import parallel
from gemma_lora.config import RunConfig
from gemma_lora.io_utils import write_text_atomic
from gemma_lora.progress import Progress
from gemma_lora.progress import format_duration
from gemma_lora.training import batching
from gemma_lora.training import checkpoint
from gemma_lora.training import tracking
from gemma_lora.training.steps import CompiledSteps

HISTORY_FILE = "history.csv"
ADAPTER_DIR = "adapter"
HISTORY_FIELDS = ("step", "loss", "learning_rate", "val_loss")
# Steps whose loss and speed the progress bar averages.
_RECENT_STEPS = 10


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak`, then cosine, linear or constant decay to 0.

    Args:
        peak: the learning rate at the end of warm-up.
        warmup_steps: steps of linear warm-up from 0.
        total_steps: steps of the whole run; decay ends there.
        kind: `"cosine"`, `"linear"` or `"constant"`.

    Example:
    >>> schedule = WarmupDecay(2e-4, warmup_steps=10, total_steps=100, kind="cosine")
    >>> [round(float(schedule(step)), 6) for step in (0, 5, 9, 55, 100)]  # peak at step 9
    [2e-05, 0.00012, 0.0002, 0.0001, 0.0]
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


@dataclasses.dataclass
class TrainResult:
    """What a training run did.

    Args:
        history: one dict per step: `step`, `loss`, `learning_rate`, and
            `val_loss` at evaluation steps (else `None`); step 0 holds the
            validation loss before training.
        best_step: the step whose adapter was kept.
        best_val_loss: its validation loss.
        steps: the last step run.
        stopped_early: whether early stopping ended the run.
        diverged_at: the step whose loss or gradient was not finite, if any.
        seconds: wall-clock training time of this call.
        adapter_dir: where the best adapter was saved.
    """

    history: list[dict]
    best_step: int
    best_val_loss: float
    steps: int
    stopped_early: bool
    diverged_at: int | None
    seconds: float
    adapter_dir: Path


@dataclasses.dataclass
class _Progress:
    """Everything about a run's progress that a checkpoint must restore."""

    history: list[dict]
    best_val_loss: float
    best_values: dict[str, np.ndarray]
    best_step: int = 0
    evals_without_improvement: int = 0

    @property
    def step(self) -> int:
        return self.history[-1]["step"]

    def to_state(self, fingerprint: dict) -> dict:
        return {"history": self.history, "best_val_loss": self.best_val_loss,
                "best_step": self.best_step, "fingerprint": fingerprint,
                "evals_without_improvement": self.evals_without_improvement}

    @classmethod
    def from_state(cls, state: dict, arrays: dict[str, np.ndarray]) -> "_Progress":
        best = {k.removeprefix("best/"): v for k, v in arrays.items() if k.startswith("best/")}
        return cls(state["history"], state["best_val_loss"], best, state["best_step"],
                   state["evals_without_improvement"])


def write_history(history: list[dict], path: str | os.PathLike) -> None:
    """Write the per-step history as CSV, atomically.

    Args:
        history: rows with the keys of `HISTORY_FIELDS`.
        path: destination CSV file; on a multi-host run only process 0
            writes it (`parallel.is_writer`).
    """
    if not parallel.is_writer():
        return
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

    Examples are tokenized once by the model's preprocessor, batched with
    length buckets, and trained with a compiled step that computes logits
    only where the loss is (see `batching` and `steps`). Validation loss is
    computed before training and every `config.eval_every` steps; the
    adapter with the lowest validation loss is saved to `<run_dir>/adapter`
    and is the one left in the model at the end. A checkpoint is written
    every `checkpoint_every` steps and at the end; with `config.resume`, a
    run continues from its newest checkpoint and ends exactly as if it had
    never stopped. A non-finite loss or gradient stops training without
    applying that step.

    Args:
        model: a KerasHub `CausalLM` with LoRA enabled.
        config: the run's parameters.
        train_examples: `{"prompts", "responses"}` for training.
        validation_examples: `{"prompts", "responses"}` for validation loss.
        log: where progress lines go: validation lines, and the progress
            bar's plain lines where it is not drawn as a bar (see
            `gemma_lora.progress`).

    Returns:
        A `TrainResult`.

    Example:
    >>> import tempfile; run_dir = tempfile.mkdtemp()
    >>> from gemma_lora.lora import LoraConfig, enable_lora
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()
    >>> summary = enable_lora(model, LoraConfig(rank=4))
    >>> colors = ["red", "blue", "green", "black"]
    >>> examples = {"prompts": [f"Which color? A {color} mug." for color in colors],
    ...             "responses": colors}
    >>> config = RunConfig(max_steps=3, batch_size=2, sequence_length=32, eval_every=3,
    ...                    warmup_steps=1, run_dir=run_dir)
    >>> result = train(model, config, examples, examples, log=lambda line: None)
    >>> result.steps, result.best_step, sorted(path.name for path in Path(run_dir).iterdir())
    (3, 3, ['adapter', 'checkpoints', 'history.csv', 'tensorboard'])
    """
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    total_steps = config.training_steps(len(train_examples["prompts"]))
    buckets = batching.bucket_lengths(config.sequence_length)
    train_split = batching.tokenize(model.preprocessor, train_examples, config.sequence_length)
    val_split = batching.tokenize(model.preprocessor, validation_examples, config.sequence_length)
    train_buffer = batching.loss_buffer_size(train_split)
    val_buffer = batching.loss_buffer_size(val_split)
    steps = CompiledSteps(model, make_optimizer(config, total_steps), seed=config.seed,
                          loss_chunk_size=config.loss_chunk_size)
    run_fingerprint = checkpoint.fingerprint(config)

    def validation_loss() -> float:
        return steps.mean_loss(batching.evaluation_batches(
            val_split, config.eval_batch_size, buckets, val_buffer, packing=config.packing))

    start = time.perf_counter()
    progress = _resume(config, run_fingerprint, steps, log)
    if progress is None:
        initial = validation_loss()
        # The untrained adapter (B = 0: the base model) is the first "best": a
        # run that never beats it ends with the base model's behaviour.
        progress = _Progress([{"step": 0, "loss": None, "learning_rate": 0.0,
                               "val_loss": initial}], best_val_loss=initial,
                             best_values=steps.trainable_values())
        lora.save_adapter(model, run_dir / ADAPTER_DIR, config.preset, template=config.template)
        log(f"Training {total_steps} steps of {config.batch_size} examples"
            f"{parallel.batch_summary(config.batch_size)}; validation every "
            f"{config.eval_every} steps (before training: val_loss {initial:.4f}).")
    first_step = progress.step + 1
    batches = batching.training_batches(train_split, config.batch_size, config.seed,
                                        buckets, train_buffer, start_step=progress.step,
                                        packing=config.packing)
    stopped_early = False
    diverged_at = None
    recent = collections.deque(maxlen=_RECENT_STEPS)  # (loss, tokens, seconds) per step
    with tracking.open_tracker(config) as tracker, Progress(
            total_steps, "train", initial=progress.step, log=log,
            mode=None if parallel.is_writer() else "off") as bar:
        tracker.log_hparams(tracking.hparams_of(config), start_step=progress.step)
        if progress.step == 0:
            tracker.log_scalars(0, {"val/loss": progress.best_val_loss})
        for step in range(first_step, total_steps + 1):
            step_start = time.perf_counter()
            learning_rate = steps.learning_rate()
            batch = next(batches)
            loss, finite = steps.train_step(batch)
            if not finite:
                diverged_at = step
                bar.write(
                    f"Step {step}: the loss or a gradient is not finite (loss {loss}); stopped "
                    f"without applying it. The best adapter (step {progress.best_step}) and the "
                    "last checkpoint are kept. Try a lower learning_rate, dtype='float32', or "
                    "a smaller gradient_clip_norm.")
                break
            seconds = time.perf_counter() - step_start
            tokens = _token_count(batch)
            recent.append((loss, tokens, seconds))
            progress.history.append({"step": step, "loss": loss, "learning_rate": learning_rate,
                                     "val_loss": None})
            tracker.log_scalars(step, {
                "train/loss": loss, "train/learning_rate": learning_rate,
                "train/gradient_norm": steps.last_gradient_norm,
                "train/tokens_per_second": tokens / max(seconds, 1e-9)})
            bar.update(postfix=_postfix(recent, learning_rate))
            if step % config.eval_every == 0 or step == total_steps:
                improved = _evaluate(progress, validation_loss(), steps, model, config)
                tracker.log_scalars(step, {"val/loss": progress.history[-1]["val_loss"],
                                           "val/best_loss": progress.best_val_loss})
                write_history(progress.history, run_dir / HISTORY_FILE)
                bar.write(_progress_line(
                    progress.history, config, total_steps,
                    (time.perf_counter() - start) / (step - first_step + 1), improved))
                stopped_early = progress.evals_without_improvement > config.patience
            if step % config.checkpoint_interval == 0 or step == total_steps or stopped_early:
                _save_checkpoint(run_dir, steps, progress, run_fingerprint,
                                 config.keep_checkpoints)
            if stopped_early:
                bar.write(f"Early stopping: no improvement for "
                          f"{progress.evals_without_improvement} evaluations.")
                break
    steps.write_back()
    lora.assign_lora_weights(model, progress.best_values, "best adapter")
    return TrainResult(
        history=progress.history,
        best_step=progress.best_step,
        best_val_loss=progress.best_val_loss,
        steps=progress.step,
        stopped_early=stopped_early,
        diverged_at=diverged_at,
        seconds=time.perf_counter() - start,
        adapter_dir=run_dir / ADAPTER_DIR,
    )


def _resume(config: RunConfig, fingerprint: dict, steps: CompiledSteps,
            log: Callable[[str], None]) -> _Progress | None:
    """Load the newest checkpoint when resuming; start clean otherwise."""
    if not config.resume:
        if parallel.is_writer():
            shutil.rmtree(Path(config.run_dir) / checkpoint.CHECKPOINTS_DIR, ignore_errors=True)
        return None
    folder = checkpoint.latest(config.run_dir)
    if folder is None:
        log(f"resume=True but {config.run_dir} has no checkpoint yet: starting from step 0.")
        return None
    arrays, state = checkpoint.load(folder, fingerprint)
    steps.load_state_arrays(arrays)
    progress = _Progress.from_state(state, arrays)
    log(f"Resuming from {folder} (step {progress.step}, best val_loss "
        f"{progress.best_val_loss:.4f} at step {progress.best_step}).")
    return progress


def _evaluate(progress: _Progress, val_loss: float, steps: CompiledSteps,
              model: keras.Model, config: RunConfig) -> bool:
    """Record a validation loss; save the adapter when it is the best so far."""
    progress.history[-1]["val_loss"] = val_loss
    improved = val_loss < progress.best_val_loss
    if improved:
        progress.best_val_loss, progress.best_step = val_loss, progress.step
        progress.best_values = steps.trainable_values()
        progress.evals_without_improvement = 0
        steps.write_back()
        lora.save_adapter(model, Path(config.run_dir) / ADAPTER_DIR, config.preset,
                          template=config.template)
    else:
        progress.evals_without_improvement += 1
    return improved


def _save_checkpoint(run_dir: Path, steps: CompiledSteps, progress: _Progress,
                     fingerprint: dict, keep: int) -> None:
    arrays = steps.state_arrays()
    for path, value in progress.best_values.items():
        arrays[f"best/{path}"] = value
    checkpoint.save(run_dir, progress.step, arrays, progress.to_state(fingerprint), keep)


def _progress_line(history: list[dict], config: RunConfig, total_steps: int,
                   seconds_per_step: float, improved: bool) -> str:
    step = history[-1]["step"]
    recent = [row["loss"] for row in history[-config.eval_every:] if row["loss"] is not None]
    return (
        f"step {step:>5}/{total_steps} | loss {np.mean(recent):.4f} | "
        f"val_loss {history[-1]['val_loss']:.4f}{' *' if improved else '  '} | "
        f"{seconds_per_step:.2f} s/step | ETA {format_duration(seconds_per_step * (total_steps - step))}"
    )


def _token_count(batch: dict[str, np.ndarray]) -> int:
    """Tokens of a batch that are not padding (packed or not)."""
    if "padding_mask" in batch:
        return int(np.count_nonzero(batch["padding_mask"]))
    return int(np.count_nonzero(batch["segment_ids"]))


def _postfix(recent, learning_rate: float) -> str:
    """`loss 1.2345 | lr 1.00e-03 | 812 tok/s` over the recent steps."""
    losses, tokens, seconds = zip(*recent)
    return (f"loss {np.mean(losses):.4f} | lr {learning_rate:.2e} | "
            f"{sum(tokens) / max(sum(seconds), 1e-9):,.0f} tok/s")
