"""Compare finished runs from their files alone: a table and plots.

Every notebook ends by writing `metrics.json` (every `RunConfig` field under
its own name, plus a `results` object) and, when it trained, `history.csv`.
That is all a comparison needs, so any set of run folders can be compared
without re-running anything: a rank sweep, learning rates, templates, or a
fine-tuning run beside a classification run (their metrics then get separate
panels; `runs.selection` picks the runs of one kind, as notebook 03 does by
default).

Example:
>>> import tempfile
>>> from gemma_lora.testing import write_rank_sweep
>>> sweep = write_rank_sweep(tempfile.mkdtemp(), ranks=(1, 2, 8))  # as `make sweep` leaves it
>>> runs = load_runs(f"{sweep}/*/metrics.json")
>>> print(runs_table(runs))
| run | rank | alpha | trainable params | adapter (MB) | best val loss | test metric | untuned | tuned | training (min) |
|---|---|---|---|---|---|---|---|---|---|
| rank-1 | 1 | 32 | 92,160 | 0.37 | 0.54 | exact_match | 0 | 0.6 | 1.10 |
| rank-2 | 2 | 32 | 184,320 | 0.74 | 0.44 | exact_match | 0 | 0.65 | 1.20 |
| rank-8 | 8 | 32 | 737,280 | 2.95 | 0.3257 | exact_match | 0 | 0.75 | 1.80 |
>>> figure = plot_against(runs, "rank", sweep / "metric_vs_rank.png")
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError
from gemma_lora.io_utils import write_text_atomic
from gemma_lora.runs.report import METRICS_FILE

HISTORY_FILE = "history.csv"
METRIC_PREFERENCE = ("macro_f1", "exact_match", "accuracy", "rouge_l")
"""Result keys used as a run's test metric when `results` names none."""

# Fields that differ between any two runs and say nothing about the run.
_NOT_PARAMETERS = ("run_dir", "results")


@dataclasses.dataclass
class Run:
    """One finished run, as read from its folder.

    Args:
        path: the run folder.
        config: the run's parameters (the `RunConfig` fields in `metrics.json`).
        results: the `results` object of `metrics.json`.
        history: the rows of `history.csv` (`step`, `loss`, `learning_rate`,
            `val_loss`, numbers or `None`); empty if the run has none.
        name: how tables and legends call the run; `load_runs` makes it the
            folder's path below the runs' common folder (`rank-8`,
            `20250101-120000/01_finetune_gemma_lora`).
    """

    path: Path
    config: dict[str, Any]
    results: dict[str, Any]
    history: list[dict[str, float | None]]
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.path.name

    @property
    def metric(self) -> tuple[str | None, float | None]:
        """The test metric's name and the tuned model's value.

        The name is `results["primary_metric"]` when the notebook recorded
        one, else the first of `METRIC_PREFERENCE` that the tuned results hold.
        """
        tuned = self.results.get("tuned") or {}
        name = self.results.get("primary_metric") or next(
            (key for key in METRIC_PREFERENCE if key in tuned), None)
        return name, tuned.get(name) if name else None


def find_runs(runs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Run folders from a glob pattern or a list of folders.

    Args:
        runs: a glob pattern matching `metrics.json` files or run folders
            (`"runs/*/*/metrics.json"`; `**` matches any depth), or a list
            of run folders or `metrics.json` files.

    Returns:
        The run folders that hold a `metrics.json`, sorted, each once.

    Raises:
        DataError: nothing matches; the message says what was looked for.

    Example:
    >>> import tempfile
    >>> from gemma_lora.testing import write_rank_sweep
    >>> sweep = write_rank_sweep(tempfile.mkdtemp())  # rank-1, rank-2 and rank-8
    >>> [folder.name for folder in find_runs(f"{sweep}/rank-*")]
    ['rank-1', 'rank-2', 'rank-8']
    """
    if isinstance(runs, (str, os.PathLike)):
        candidates = [Path(match) for match in glob.glob(os.fspath(runs), recursive=True)]
        described = f"runs_glob {os.fspath(runs)!r}"
    else:
        candidates = [Path(run) for run in runs]
        described = f"the run folders {[os.fspath(run) for run in runs]}"
    folders = sorted({path.parent if path.name == METRICS_FILE else path for path in candidates})
    found = [folder for folder in folders if (folder / METRICS_FILE).is_file()]
    if not found:
        raise DataError(
            f"No runs found for {described}: expected run folders holding {METRICS_FILE}, "
            "which each notebook writes when it finishes. Run `make run-notebooks` or "
            "`make sweep` first, or point runs_glob at existing runs, e.g. "
            "'runs/*/*/metrics.json'."
        )
    return found


def load_run(folder: str | os.PathLike) -> Run:
    """Read one run folder's `metrics.json` and `history.csv`.

    Args:
        folder: a run folder.

    Returns:
        A `Run`.

    Raises:
        DataError: `metrics.json` is missing, not JSON, or has no `results`.

    Example:
    >>> import tempfile
    >>> from gemma_lora.testing import write_rank_sweep
    >>> sweep = write_rank_sweep(tempfile.mkdtemp())  # rank-1, rank-2 and rank-8
    >>> load_run(sweep / "rank-8").metric
    ('exact_match', 0.75)
    """
    folder = Path(folder)
    path = folder / METRICS_FILE
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; is {str(folder)!r} a finished run?") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: invalid JSON ({error.msg}).") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("results"), dict):
        raise DataError(
            f"{path}: expected an object with the run's parameters and a 'results' "
            "object, as `report.write_metrics` writes."
        )
    config = {key: value for key, value in metrics.items() if key != "results"}
    return Run(folder, config, metrics["results"], _read_history(folder / HISTORY_FILE))


def _read_history(path: Path) -> list[dict[str, float | None]]:
    """The rows of a `history.csv`, with empty cells as `None`."""
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as file:
        return [{key: float(value) if value not in ("", None) else None
                 for key, value in row.items()} for row in csv.DictReader(file)]


def load_runs(runs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Run]:
    """`load_run` for every folder `find_runs` finds, named below their common folder.

    Example:
    >>> import tempfile
    >>> from gemma_lora.testing import write_rank_sweep
    >>> sweep = write_rank_sweep(tempfile.mkdtemp())  # rank-1, rank-2 and rank-8
    >>> runs = load_runs([sweep / "rank-1", sweep / "rank-8"])
    >>> [run.name for run in runs], runs[0].config["rank"], len(runs[0].history)
    (['rank-1', 'rank-8'], 1, 51)
    """
    loaded = [load_run(folder) for folder in find_runs(runs)]
    if len(loaded) > 1:
        common = Path(os.path.commonpath([run.path.absolute() for run in loaded]))
        for run in loaded:
            run.name = str(run.path.absolute().relative_to(common))
    return loaded


def varying_parameters(runs: Sequence[Run]) -> list[str]:
    """The parameters whose values differ between the runs, in config order.

    Example:
    >>> import tempfile
    >>> from gemma_lora.testing import write_rank_sweep
    >>> sweep = write_rank_sweep(tempfile.mkdtemp())  # rank-1, rank-2 and rank-8
    >>> varying_parameters(load_runs(f"{sweep}/*"))
    ['rank']
    """
    names = list(dict.fromkeys(key for run in runs for key in run.config))
    return [name for name in names if name not in _NOT_PARAMETERS
            and len({json.dumps(run.config.get(name), sort_keys=True) for run in runs}) > 1]


def comparison_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per run: what differs, LoRA size, losses, test metric, time.

    Columns: `run`, every parameter that differs between the runs, `rank`,
    `alpha` (effective: `rank` when unset), `trainable_params`,
    `adapter_mb`, `best_val_loss`, `metric`, `baseline`, `tuned`,
    `training_min`. Missing values are `None`.

    Args:
        runs: the runs to compare.

    Returns:
        The rows, in run order.

    Example:
    >>> import tempfile
    >>> from gemma_lora.testing import write_rank_sweep
    >>> sweep = write_rank_sweep(tempfile.mkdtemp())  # rank-1, rank-2 and rank-8
    >>> row = comparison_rows(load_runs(f"{sweep}/*"))[-1]
    >>> row["run"], row["rank"], row["metric"], row["baseline"], row["tuned"]
    ('rank-8', 8, 'exact_match', 0.0, 0.75)
    """
    varying = [name for name in varying_parameters(runs) if name not in ("rank", "alpha")]
    rows = []
    for run in runs:
        results = run.results
        metric, tuned = run.metric
        rank = run.config.get("rank")
        alpha = run.config.get("alpha")
        rows.append({
            "run": run.name,
            **{name: run.config.get(name) for name in varying},
            "rank": rank,
            "alpha": rank if alpha is None else alpha,
            "trainable_params": results.get("trainable_parameters"),
            "adapter_mb": _scaled(results.get("adapter_bytes"), 1e-6),
            "best_val_loss": results.get("best_val_loss"),
            "metric": metric,
            "baseline": (results.get("baseline") or {}).get(metric),
            "tuned": tuned,
            "training_min": _scaled(results.get("training_seconds"), 1 / 60),
        })
    return rows


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def runs_table(runs: Sequence[Run]) -> str:
    """`comparison_rows` as a markdown table.

    Example:
    >>> import tempfile
    >>> from gemma_lora.testing import write_rank_sweep
    >>> sweep = write_rank_sweep(tempfile.mkdtemp())  # rank-1, rank-2 and rank-8
    >>> print(runs_table(load_runs(f"{sweep}/*")))
    | run | rank | alpha | trainable params | adapter (MB) | best val loss | ...
    |---|---|---|---|---|---|---|---|---|---|
    | rank-1 | 1 | 32 | 92,160 | 0.37 | 0.54 | exact_match | 0 | 0.6 | 1.10 |
    ...
    """
    rows = comparison_rows(runs)
    columns = list(rows[0])
    headers = {"trainable_params": "trainable params", "adapter_mb": "adapter (MB)",
               "best_val_loss": "best val loss", "metric": "test metric",
               "baseline": "untuned", "tuned": "tuned", "training_min": "training (min)"}
    lines = ["| " + " | ".join(headers.get(c, c) for c in columns) + " |",
             "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_format(column, row[column]) for column in columns) + " |")
    return "\n".join(lines)


def _format(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "trainable_params":
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.2f}" if column in ("adapter_mb", "training_min") else f"{value:.4g}"
    return str(value)


def write_csv(runs: Sequence[Run], path: str | os.PathLike) -> Path:
    """Write `comparison_rows` as CSV, atomically.

    Example:
    >>> import tempfile
    >>> from gemma_lora.testing import write_rank_sweep
    >>> sweep = write_rank_sweep(tempfile.mkdtemp())  # rank-1, rank-2 and rank-8
    >>> path = write_csv(load_runs(f"{sweep}/*"), sweep / "comparison.csv")
    >>> print(path.read_text().splitlines()[0])
    run,rank,alpha,trainable_params,adapter_mb,best_val_loss,metric,baseline,tuned,training_min
    """
    rows = comparison_rows(runs)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    write_text_atomic(path, buffer.getvalue())
    return Path(path)


def default_parameter(runs: Sequence[Run]) -> str | None:
    """The parameter to plot against: `rank` if it varies, else the first that does.

    Example:
    >>> import tempfile
    >>> from gemma_lora.testing import write_rank_sweep
    >>> sweep = write_rank_sweep(tempfile.mkdtemp())  # rank-1, rank-2 and rank-8
    >>> default_parameter(load_runs(f"{sweep}/*"))
    'rank'
    """
    varying = varying_parameters(runs)
    return "rank" if "rank" in varying else next(iter(varying), None)


def plot_against(
    runs: Sequence[Run], parameter: str | None, path: str | os.PathLike
) -> plt.Figure:
    """Plot the test metric (tuned and untuned) and best validation loss against a parameter.

    Numeric parameters spread over a wide range (ranks 1 to 64) get a
    logarithmic axis; other values (templates, presets) are categories.
    With `parameter=None`, each run is its own category. Two metrics never
    share an axis: runs scored by different metrics (exact match, macro-F1)
    get one row of panels each, the metric named on its axis.

    Args:
        runs: the runs.
        parameter: a `RunConfig` field, e.g. `"rank"` or `"learning_rate"`.
        path: the PNG file to write.

    Returns:
        The matplotlib figure.

    Raises:
        ConfigError: `parameter` is not a parameter of these runs.

    Example:
    >>> import tempfile
    >>> from gemma_lora.testing import write_rank_sweep
    >>> sweep = write_rank_sweep(tempfile.mkdtemp())  # rank-1, rank-2 and rank-8
    >>> figure = plot_against(load_runs(f"{sweep}/*"), "rank", sweep / "metric_vs_rank.png")
    >>> [axis.get_xlabel() for axis in figure.axes], (sweep / "metric_vs_rank.png").is_file()
    (['rank', 'rank'], True)
    >>> figure.axes[0].get_ylabel()
    'test exact_match'
    >>> plt.close(figure)
    """
    if parameter is not None and not any(parameter in run.config for run in runs):
        raise ConfigError(
            f"compare_by={parameter!r} is not a parameter of these runs; parameters that "
            f"differ between them: {varying_parameters(runs) or 'none'}."
        )
    metrics = list(dict.fromkeys(str(run.metric[0]) for run in runs))
    figure, axes = plt.subplots(len(metrics), 2, figsize=(11, 4 * len(metrics)), squeeze=False)
    for (left, right), metric in zip(axes, metrics):
        _plot_metric_row(left, right, [run for run in runs if str(run.metric[0]) == metric],
                         parameter, metric)
    figure.suptitle(f"Runs compared by {parameter or 'run'}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return figure


def _plot_metric_row(left: plt.Axes, right: plt.Axes, runs: Sequence[Run],
                     parameter: str | None, metric: str) -> None:
    """One metric's panels: tuned and untuned metric on `left`, best validation loss on `right`."""
    values = [run.config.get(parameter) if parameter else run.name for run in runs]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        order = sorted(range(len(runs)), key=lambda i: values[i])
        xs = [values[i] for i in order]
    else:
        order = list(range(len(runs)))
        xs = list(range(len(runs)))
    series = ((left, "tuned", "o-", "C0", lambda run: run.metric[1]),
              (left, "untuned", "s--", "gray",
               lambda run: (run.results.get("baseline") or {}).get(run.metric[0])),
              (right, None, "o-", "C0", lambda run: run.results.get("best_val_loss")))
    for axis, label, style, color, value in series:
        ys = [value(runs[i]) for i in order]
        if not numeric:  # lines would suggest an order between categories
            style = style[0]
        axis.plot(xs, [math.nan if y is None else y for y in ys], style, color=color,
                  linewidth=2, markersize=7, label=label)
    left.set_ylabel(f"test {metric}")
    left.legend()
    right.set_ylabel("best validation loss")
    for axis in (left, right):
        axis.set_xlabel(parameter or "run")
        axis.grid(alpha=0.3)
        if numeric and min(xs) > 0 and max(xs) / min(xs) >= 8:
            axis.set_xscale("log", base=2 if all(float(x).is_integer() for x in xs) else 10)
            axis.set_xticks(xs, [f"{x:g}" for x in xs])
        elif not numeric:
            axis.set_xticks(xs, [str(values[i]) for i in order], rotation=20, ha="right")


def plot_loss_curves(runs: Sequence[Run], path: str | os.PathLike) -> plt.Figure:
    """Overlay the runs' validation-loss curves (training loss faint behind).

    Args:
        runs: the runs; those without a history are left out.
        path: the PNG file to write.

    Returns:
        The matplotlib figure.

    Example:
    >>> import tempfile
    >>> from gemma_lora.testing import write_rank_sweep
    >>> sweep = write_rank_sweep(tempfile.mkdtemp())  # rank-1, rank-2 and rank-8
    >>> figure = plot_loss_curves(load_runs(f"{sweep}/*"), sweep / "loss_curves.png")
    >>> [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    ['rank-1', 'rank-2', 'rank-8']
    >>> plt.close(figure)
    """
    figure, axis = plt.subplots(figsize=(9, 4.5))
    for index, run in enumerate(run for run in runs if run.history):
        color = f"C{index % 10}"
        trained = [(row["step"], row["loss"]) for row in run.history if row.get("loss") is not None]
        evals = [(row["step"], row["val_loss"]) for row in run.history
                 if row.get("val_loss") is not None]
        if trained:
            axis.plot(*zip(*trained), color=color, alpha=0.2, linewidth=1)
        if evals:
            axis.plot(*zip(*evals), "o-", color=color, linewidth=2, label=run.name)
    axis.set_xlabel("step")
    axis.set_ylabel("loss per response token (nats)")
    axis.set_title("Validation loss (lines with dots) and training loss (faint)")
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return figure


def default_runs_glob(run_dir: str | os.PathLike) -> str:
    """The runs beside `run_dir`: `<parent of run_dir>/*/metrics.json`.

    `make run-notebooks` puts every notebook of one batch in the same
    `runs/<timestamp>/` folder, so the comparison notebook's default is the
    other notebooks of its own batch.

    Example:
    >>> default_runs_glob("runs/20250101-120000/03_compare_runs")
    'runs/20250101-120000/*/metrics.json'
    """
    return os.path.join(os.path.dirname(os.path.normpath(run_dir)), "*", METRICS_FILE)
