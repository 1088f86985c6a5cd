"""What a run shows and keeps: metrics.json, loss curves, comparison tables.

`metrics.json` holds every `RunConfig` field under its own name plus a
`results` object, so runs can be compared without re-running anything.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import matplotlib.pyplot as plt
import ml_dtypes  # noqa: F401  (lets numpy name bfloat16)
import numpy as np

from gemma_lora import parallel
from gemma_lora.config import RunConfig
from gemma_lora.tasks.evaluation import Evaluation
from gemma_lora.training import tracking
from gemma_lora.io_utils import write_json_atomic

if TYPE_CHECKING:
    from gemma_lora.tasks.classification import ClassificationEvaluation

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LOSS_PLOT_FILE = "loss_curves.png"
CONFUSION_PLOT_FILE = "confusion_matrices.png"


def write_config(config: RunConfig) -> Path:
    """Write the run's parameters to `run_dir/config.json` (process 0 only, on several hosts).

    Args:
        config: the run's parameters.

    Returns:
        The path of `config.json`.
    """
    path = Path(config.run_dir) / CONFIG_FILE
    if parallel.is_writer():
        path.parent.mkdir(parents=True, exist_ok=True)
        config.save(path)
    return path


def write_metrics(config: RunConfig, results: dict[str, Any]) -> Path:
    """Write `<run_dir>/metrics.json`: the config's fields plus `results`.

    The numbers of `results` also go where `config.report_to` says, as
    `test/...` scalars at the run's last step (`training.tracking`), beside
    the training curves and the run's hparams.

    Args:
        config: the run's parameters (its `run_dir` is where the file goes).
        results: JSON-ready results (scores, sizes, timings).

    Returns:
        The path of the written file.

    Example:
    >>> import json, tempfile
    >>> config = RunConfig(rank=4, run_dir=tempfile.mkdtemp())
    >>> path = write_metrics(config, {"tuned": {"exact_match": 0.9}})
    >>> saved = json.loads(path.read_text())
    >>> path.name, saved["rank"], saved["results"]
    ('metrics.json', 4, {'tuned': {'exact_match': 0.9}})
    """
    path = Path(config.run_dir) / METRICS_FILE
    if parallel.is_writer():  # process 0 only, on a multi-host run
        write_json_atomic(path, {**config.to_dict(), "results": results})
    tracking.log_final_results(config, results)  # test/... scalars where report_to says
    return path


def plot_history(history: Sequence[dict], path: str | os.PathLike) -> plt.Figure:
    """Plot training loss per step and validation loss, and save it as PNG.

    Args:
        history: rows from `TrainResult.history`.
        path: the PNG file to write.

    Returns:
        The matplotlib figure (a notebook displays it).
    """
    trained = [row for row in history if row["loss"] is not None]
    steps = [row["step"] for row in trained]
    losses = [row["loss"] for row in trained]
    evals = [(row["step"], row["val_loss"]) for row in history if row["val_loss"] is not None]
    figure, axis = plt.subplots(figsize=(8, 4.5))
    axis.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=1, label="training loss (per step)")
    if len(losses) >= 10:
        window = max(5, len(losses) // 20)
        smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
                  for i in range(len(losses))]
        axis.plot(steps, smooth, color="tab:blue", linewidth=2,
                  label=f"training loss ({window}-step mean)")
    if evals:
        axis.plot(*zip(*evals), "o-", color="tab:orange", linewidth=2, label="validation loss")
    axis.set_xlabel("step")
    axis.set_ylabel("cross-entropy per response token (nats)")
    axis.set_title("LoRA fine-tuning")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    if parallel.is_writer():
        figure.savefig(path, dpi=110)
    return figure


def comparison_table(evaluations: dict[str, Evaluation]) -> str:
    """A markdown table of the scalar scores of several evaluations.

    Args:
        evaluations: column name (e.g. `"base"`, `"LoRA-tuned"`) -> result.

    Returns:
        Markdown text.

    Example:
    >>> base = Evaluation(loss=2.31, perplexity=10.07, exact_match=0.0, rouge_l=0.412,
    ...                   predictions=[], num_examples=240, generation_seconds=30.0)
    >>> tuned = Evaluation(loss=0.08, perplexity=1.08, exact_match=0.9, rouge_l=0.981,
    ...                    predictions=[], num_examples=240, generation_seconds=28.0)
    >>> print(comparison_table({"base": base, "LoRA-tuned": tuned}))
    | metric | base | LoRA-tuned |
    |---|---|---|
    | exact match | 0.0% | 90.0% |
    | ROUGE-L F1 | 0.412 | 0.981 |
    | loss per response token | 2.310 | 0.080 |
    | perplexity | 10.07 | 1.08 |
    | test examples | 240 | 240 |
    """
    rows = [
        ("exact match", lambda e: f"{100 * e.exact_match:.1f}%"),
        ("ROUGE-L F1", lambda e: f"{e.rouge_l:.3f}"),
        ("loss per response token", lambda e: f"{e.loss:.3f}"),
        ("perplexity", lambda e: f"{e.perplexity:.2f}"),
        ("test examples", lambda e: f"{e.num_examples}"),
    ]
    return _metric_table(evaluations, rows)


def _metric_table(evaluations: dict[str, Any], rows: Sequence[tuple[str, Any]]) -> str:
    """A markdown table: one row per (label, cell function), one column per evaluation."""
    names = list(evaluations)
    lines = ["| metric | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(evaluations[n]) for n in names) + " |")
    return "\n".join(lines)


def samples_table(
    prompts_input: Sequence[str],
    references: Sequence[str],
    predictions: dict[str, Sequence[str]],
    count: int,
) -> str:
    """A markdown table of sample inputs, references and each model's answer.

    Args:
        prompts_input: the user-visible input of each example.
        references: the reference answers.
        predictions: column name -> answers, in the same order.
        count: number of rows.

    Returns:
        Markdown text.
    """
    names = list(predictions)
    lines = ["| input | reference | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for i in range(min(count, len(references))):
        cells = [prompts_input[i], references[i]] + [predictions[n][i] for n in names]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    """One markdown table cell: code spans for JSON, pipes and newlines escaped."""
    text = (text.strip() or "(empty)").replace("|", "\\|").replace("\n", " ")
    if text.startswith(("{", "[")):
        return f"`{text}`"
    return html.escape(text, quote=False)


def base_weights_bytes(model) -> int:
    """Bytes of the model's weights in memory, LoRA weights excluded.

    Args:
        model: a Keras model, with or without LoRA.

    Returns:
        The size of the base model's weights in bytes.
    """
    return sum(
        int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize
        for w in model.weights if "lora_kernel" not in w.path
    )


def size_label(
    name: str, model, weights: str, parameters: int | None = None, with_lora: bool = False
) -> str:
    """`name` with what the model's weights are, how many and how many bytes they take.

    A comparison of a small tuned model with a larger untuned one is only fair
    when both are named by size: a quantized base holds the same parameters
    in fewer bytes, and the label says so.

    Args:
        name: what the model is (`"base model"`, `"LoRA-tuned"`).
        model: the Keras model evaluated (its weights' bytes in memory are
            counted, scales of quantized kernels included).
        weights: how the base's weights are stored (`"float32"`, `"int4"`).
        parameters: the base model's parameter count; count it before
            quantizing, since a quantized kernel stores packed values and
            scales. By default the values of the non-LoRA weights are counted.
        with_lora: add the LoRA matrices (parameters and bytes) to the base's,
            and say so (`"int4 base + LoRA"`).

    Returns:
        E.g. `"base model (float32, 268M params, 1.00 GiB)"`.

    Example:
    >>> from gemma_lora.lora import LoraConfig, enable_lora
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()
    >>> size_label("base model", model, "float32")
    'base model (float32, 35K params, 137 KiB)'
    >>> _ = enable_lora(model, LoraConfig(rank=8))
    >>> size_label("LoRA-tuned", model, "float32", with_lora=True)
    'LoRA-tuned (float32 base + LoRA, 37K params, 145 KiB)'
    """
    if parameters is None:
        parameters = sum(int(np.prod(w.shape)) for w in model.weights
                         if "lora_kernel" not in w.path)
    weight_bytes = base_weights_bytes(model)
    if with_lora:
        lora_weights = [w for w in model.weights if "lora_kernel" in w.path]
        parameters += sum(int(np.prod(w.shape)) for w in lora_weights)
        weight_bytes += sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize
                            for w in lora_weights)
        weights = f"{weights} base + LoRA"
    return f"{name} ({weights}, {_count(parameters)} params, {_bytes(weight_bytes)})"


def _count(value: int) -> str:
    """A parameter count the way model cards write it: 35K, 268M, 1.0B."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= size:
            return f"{value / size:.1f}{unit}" if unit == "B" else f"{value / size:.0f}{unit}"
    return str(value)


def _bytes(value: int) -> str:
    """Bytes in binary units with three significant digits: 137 KiB, 0.17 GiB."""
    if value >= 2**30 / 10:
        return f"{value / 2**30:.2f} GiB"
    for size, unit in ((2**20, "MiB"), (2**10, "KiB")):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value} B"


def folder_size(path: str | os.PathLike) -> int:
    """Total size in bytes of the files under `path`."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def classification_table(evaluations: dict[str, "ClassificationEvaluation"]) -> str:
    """A markdown table of accuracy, macro-F1 and per-label F1 of several classifiers.

    Args:
        evaluations: column name (e.g. `"base model"`, `"LoRA-tuned"`) ->
            `classify.ClassificationEvaluation`.

    Returns:
        Markdown text.

    Example:
    >>> from gemma_lora.tasks.classification import classification_metrics
    >>> truth, labels = ["negative", "positive", "positive"], ["negative", "positive"]
    >>> base = classification_metrics(truth, ["positive"] * 3, labels, loss=0.9, seconds=2)
    >>> tuned = classification_metrics(truth, truth, labels, loss=0.1, seconds=2)
    >>> print(classification_table({"base model": base, "LoRA-tuned": tuned}))
    | metric | base model | LoRA-tuned |
    |---|---|---|
    | accuracy | 66.7% | 100.0% |
    | macro-F1 | 0.400 | 1.000 |
    | F1 `negative` | 0.000 | 1.000 |
    | F1 `positive` | 0.800 | 1.000 |
    | loss per label token | 0.900 | 0.100 |
    | test texts | 3 | 3 |
    | prediction time | 2 s | 2 s |
    """
    labels = next(iter(evaluations.values())).labels
    rows = [("accuracy", lambda e: f"{100 * e.accuracy:.1f}%"),
            ("macro-F1", lambda e: f"{e.macro_f1:.3f}")]
    rows += [(f"F1 `{label}`", lambda e, label=label: f"{e.per_class_f1[label]:.3f}")
             for label in labels]
    rows += [("loss per label token", lambda e: "-" if e.loss is None else f"{e.loss:.3f}"),
             ("test texts", lambda e: f"{e.num_examples}"),
             ("prediction time", lambda e: f"{e.seconds:.0f} s")]
    return _metric_table(evaluations, rows)


def plot_confusion_matrices(
    evaluations: dict[str, "ClassificationEvaluation"], path: str | os.PathLike
) -> plt.Figure:
    """Plot one confusion matrix per classifier side by side, and save it as PNG.

    Rows are the true labels, columns the predicted ones; each cell shows
    the count and its share of the row.

    Args:
        evaluations: panel title -> `classify.ClassificationEvaluation`.
        path: the PNG file to write.

    Returns:
        The matplotlib figure.

    Example:
    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> from gemma_lora.tasks.classification import classification_metrics
    >>> truth, labels = ["negative", "positive", "positive"], ["negative", "positive"]
    >>> evaluations = {"base": classification_metrics(truth, ["positive"] * 3, labels),
    ...                "tuned": classification_metrics(truth, truth, labels)}
    >>> figure = plot_confusion_matrices(evaluations, folder / CONFUSION_PLOT_FILE)
    >>> len(figure.axes), (folder / CONFUSION_PLOT_FILE).is_file()
    (2, True)
    >>> plt.close(figure)
    """
    size = 1.2 + 0.9 * len(next(iter(evaluations.values())).labels)
    figure, axes = plt.subplots(1, len(evaluations), figsize=(size * len(evaluations) + 1, size + 0.6),
                                squeeze=False)
    for axis, (name, evaluation) in zip(axes[0], evaluations.items()):
        counts = evaluation.confusion
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        ticks = range(len(evaluation.labels))
        axis.set_xticks(ticks, evaluation.labels, rotation=30, ha="right")
        axis.set_yticks(ticks, evaluation.labels)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(f"{name}\naccuracy {evaluation.accuracy:.1%}, macro-F1 {evaluation.macro_f1:.3f}",
                       fontsize=10)
        for (row, column), count in np.ndenumerate(counts):
            axis.text(column, row, f"{count}\n{shares[row, column]:.0%}", ha="center", va="center",
                      color="white" if shares[row, column] > 0.5 else "black", fontsize=9)
    figure.tight_layout()
    if parallel.is_writer():
        figure.savefig(path, dpi=110)
    return figure


def training_results(summary: Any, result: Any, adapter_bytes: int, base_bytes: int) -> dict[str, Any]:
    """The results every training notebook records the same way in `metrics.json`.

    Args:
        summary: the `lora.ParameterSummary` after enabling LoRA.
        result: the `train.TrainResult`.
        adapter_bytes: size of the saved adapter folder (`folder_size`).
        base_bytes: size of the base model's weights (`base_weights_bytes`).

    Returns:
        Parameter counts, adapter size, best step and validation loss,
        steps, early stopping and training time, under fixed keys.

    Example:
    >>> from gemma_lora.lora import ParameterSummary
    >>> from gemma_lora.training import TrainResult
    >>> summary = ParameterSummary(trainable=737_280, total=268_835_456,
    ...                            lora_layers=("decoder_block_0/attention/query",))
    >>> result = TrainResult(history=[], best_step=150, best_val_loss=0.21, steps=150,
    ...                      stopped_early=False, diverged_at=None, seconds=312.0,
    ...                      adapter_dir=Path("runs/x/adapter"))
    >>> results = training_results(summary, result, adapter_bytes=2_960_000,
    ...                            base_bytes=1_073_741_824)
    >>> round(results["trainable_percent"], 3), round(results["adapter_percent_of_base"], 3)
    (0.274, 0.276)
    """
    return {
        "trainable_parameters": summary.trainable,
        "total_parameters": summary.total,
        "trainable_percent": summary.percent,
        "lora_layers": list(summary.lora_layers),
        "adapter_bytes": adapter_bytes,
        "adapter_percent_of_base": 100 * adapter_bytes / base_bytes,
        "best_step": result.best_step,
        "best_val_loss": result.best_val_loss,
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "training_seconds": result.seconds,
    }


def label_counts_table(splits: Any, labels: Sequence[str]) -> str:
    """A markdown table of how many texts of each label every split holds.

    Args:
        splits: a `data.Splits` of classification records (`output` = label).
        labels: the label set.

    Returns:
        Markdown text.

    Example:
    >>> from gemma_lora.data import Record, Splits
    >>> texts = [Record("Sentiment?", text, label, f"r.csv:{i}") for i, (text, label)
    ...          in enumerate([("Loved it.", "positive"), ("Awful.", "negative"), ("Great.", "positive")])]
    >>> print(label_counts_table(Splits(train=texts[:2], validation=[], test=texts[2:]),
    ...                          ["negative", "positive"]))
    | split | texts | negative | positive |
    |---|---|---|---|
    | train | 2 | 1 | 1 |
    | validation | 0 | 0 | 0 |
    | test | 1 | 0 | 1 |
    """
    lines = ["| split | texts | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for name in ("train", "validation", "test"):
        outputs = [record.output for record in getattr(splits, name)]
        cells = [str(outputs.count(label)) for label in labels]
        lines.append(f"| {name} | {len(outputs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
