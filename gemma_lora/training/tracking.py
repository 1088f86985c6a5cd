"""Where a run reports its numbers: TensorBoard (default), Weights & Biases, or nowhere.

`RunConfig.report_to` chooses, as in Hugging Face's `TrainingArguments`:

- `"tensorboard"`: event files under `<run_dir>/tensorboard/`, written with
  TensorBoard's own event writer and protocol buffers (no TensorFlow ops),
  so `tensorboard --logdir runs/` shows every run side by side: scalars per
  step (`train/loss`, `train/learning_rate`, `train/gradient_norm`,
  `train/tokens_per_second`), `val/loss`, the final test metrics
  (`test/tuned/exact_match`, ...) and the run's parameters in the HParams tab;
- `"wandb"`: the same numbers to Weights & Biases, when `wandb` is installed
  (it is never a dependency);
- `None`: nothing.

Only process 0 of a multi-host run writes (`parallel.is_writer`).

Example:
>>> import tempfile
>>> from gemma_lora.config import RunConfig
>>> config = RunConfig(run_dir=tempfile.mkdtemp())
>>> with open_tracker(config) as tracker:
...     tracker.log_hparams(hparams_of(config))
...     tracker.log_scalars(1, {"train/loss": 2.5})
>>> sorted(path.name.split(".")[0] for path in tensorboard_dir(config).iterdir())
['events']
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from gemma_lora import parallel
from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError

TENSORBOARD_DIR = "tensorboard"
# Parameters that say where a run is, not what it is: left out of the hparams.
_NOT_HPARAMS = ("run_dir", "resume")


def tensorboard_dir(config: RunConfig) -> Path:
    """`<run_dir>/tensorboard`, the folder of the run's event files."""
    return Path(config.run_dir) / TENSORBOARD_DIR


def hparams_of(config: RunConfig) -> dict[str, bool | int | float | str]:
    """The run's parameters as TensorBoard hparams: numbers, booleans and text.

    `None` becomes `"None"`, and lists and mappings their JSON text, so every
    parameter shows (and filters) in the HParams tab.

    Example:
    >>> values = hparams_of(RunConfig(rank=4))
    >>> values["rank"], values["quantize"], values["target_layers"], "run_dir" in values
    (4, 'None', '["query", "value"]', False)
    """
    values = {}
    for name, value in config.to_dict().items():
        if name in _NOT_HPARAMS:
            continue
        if value is None:
            value = "None"
        elif not isinstance(value, (bool, int, float, str)):
            value = json.dumps(value, sort_keys=True)
        values[name] = value
    return values


class Tracker:
    """Reports nowhere: what `report_to=None` (and a process other than 0) gets.

    Subclasses send the numbers somewhere; every method takes the same
    arguments. Use it as a context manager, or call `close()`.
    """

    def log_hparams(self, hparams: dict[str, Any], start_step: int = 0) -> None:
        """Record the run's parameters (once, when training starts or resumes at `start_step`)."""

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        """Record `{tag: number}` at `step`; `None` and non-finite numbers are skipped."""

    def close(self) -> None:
        """Write out everything and release the writer."""

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class TensorBoardTracker(Tracker):
    """Event files in `logdir` through TensorBoard's `EventFileWriter`.

    Args:
        logdir: the folder of the event files (created if missing).
    """

    def __init__(self, logdir: str | os.PathLike):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        Path(logdir).mkdir(parents=True, exist_ok=True)
        self.logdir = Path(logdir)
        self._writer = EventFileWriter(str(logdir), flush_secs=10)

    def _add(self, step: int, summary=None, session_log=None) -> None:
        from tensorboard.compat.proto import event_pb2

        event = event_pb2.Event(wall_time=time.time(), step=int(step))
        if summary is not None:
            event.summary.CopyFrom(summary)
        if session_log is not None:
            event.session_log.CopyFrom(session_log)
        self._writer.add_event(event)

    def log_hparams(self, hparams: dict[str, Any], start_step: int = 0) -> None:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.plugins.hparams import api as hp

        if start_step:
            # A resumed run: TensorBoard drops this run's older points after
            # `start_step`, so steps run again after the checkpoint show once.
            self._add(start_step + 1, session_log=event_pb2.SessionLog(
                status=event_pb2.SessionLog.START))
        self._add(start_step, summary=hp.hparams_pb(hparams, trial_id=str(self.logdir.parent)))

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        from tensorboard.compat.proto import summary_pb2

        kept = [(tag, float(value)) for tag, value in values.items()
                if _is_number(value)]
        if kept:
            self._add(step, summary=summary_pb2.Summary(value=[
                summary_pb2.Summary.Value(tag=tag, simple_value=value) for tag, value in kept]))

    def close(self) -> None:
        self._writer.close()


class WandbTracker(Tracker):
    """The same numbers to Weights & Biases, in the process's current `wandb` run.

    The first tracker of a process starts the run (project `gemma-lora`,
    named after `run_dir`, files under `run_dir`); later ones (the test
    metrics after training) report into it, and `finish=True` ends it.

    Args:
        config: the run's parameters.
        finish: end the `wandb` run on `close()`.

    Raises:
        ConfigError: `wandb` is not installed.
    """

    def __init__(self, config: RunConfig, finish: bool = False):
        try:
            import wandb
        except ImportError as error:
            raise ConfigError(
                'report_to="wandb" needs the wandb package (pip install wandb, then '
                "`wandb login`); or use report_to=\"tensorboard\" or None.") from error
        self._wandb = wandb
        self._finish = finish
        if wandb.run is None:
            wandb.init(project=os.environ.get("WANDB_PROJECT", "gemma-lora"),
                       name=Path(config.run_dir).name, dir=config.run_dir,
                       config=hparams_of(config))

    def log_hparams(self, hparams: dict[str, Any], start_step: int = 0) -> None:
        self._wandb.config.update(hparams, allow_val_change=True)

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        kept = {tag: float(value) for tag, value in values.items() if _is_number(value)}
        if kept:
            self._wandb.log(kept, step=int(step))

    def close(self) -> None:
        if self._finish:
            self._wandb.finish()


def open_tracker(config: RunConfig, finish: bool = False) -> Tracker:
    """The tracker `config.report_to` asks for (a silent one on processes other than 0).

    Args:
        config: the run's parameters.
        finish: for `"wandb"`, end its run when the tracker closes (the
            last numbers of a run: its test metrics).

    Returns:
        A `Tracker`; close it (or use `with`) when done.

    Raises:
        ConfigError: `report_to="wandb"` without the `wandb` package.
    """
    if config.report_to is None or not parallel.is_writer():
        return Tracker()
    if config.report_to == "wandb":
        return WandbTracker(config, finish=finish)
    return TensorBoardTracker(tensorboard_dir(config))


def flat_scalars(results: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a nested results mapping, keyed by their `/`-joined path.

    Lists (confusion matrices, sample predictions), text and `None` are
    left out; booleans become 0 or 1.

    Example:
    >>> flat_scalars({"tuned": {"exact_match": 0.9, "predictions": ["a"]}, "steps": 150,
    ...               "stopped_early": False, "preset": "gemma3_270m"}, prefix="test/")
    {'test/tuned/exact_match': 0.9, 'test/steps': 150.0, 'test/stopped_early': 0.0}
    """
    values = {}
    for name, value in results.items():
        if isinstance(value, dict):
            values.update(flat_scalars(value, f"{prefix}{name}/"))
        elif _is_number(value):
            values[f"{prefix}{name}"] = float(value)
    return values


def log_final_results(config: RunConfig, results: dict[str, Any], step: int | None = None) -> None:
    """Report a finished run's results (test metrics, sizes, timings) as `test/...` scalars.

    Args:
        config: the run's parameters.
        results: the `results` of `metrics.json`.
        step: the step they belong to; defaults to `results["steps"]`, else 0.
    """
    if config.report_to is None:
        return
    step = int(results.get("steps") or 0) if step is None else step
    with open_tracker(config, finish=True) as tracker:
        tracker.log_scalars(step, flat_scalars(results, prefix="test/"))


def _is_number(value: Any) -> bool:
    """Whether `value` is a finite number (bools and numpy scalars too; not text)."""
    if value is None or isinstance(value, (str, bytes, list, tuple, dict)):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
