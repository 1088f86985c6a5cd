"""What a run shows and keeps: metrics.json, loss curves, comparison tables.

`metrics.json` holds every `RunConfig` field under its own name plus a
`results` object, so runs can be compared without re-running anything.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt

from gemma_lora.config import RunConfig
from gemma_lora.evaluate import Evaluation
from gemma_lora.io_utils import write_json_atomic

METRICS_FILE = "metrics.json"
LOSS_PLOT_FILE = "loss_curves.png"


def write_metrics(config: RunConfig, results: dict[str, Any]) -> Path:
    """Write `<run_dir>/metrics.json`: the config's fields plus `results`.

    Args:
        config: the run's parameters (its `run_dir` is where the file goes).
        results: JSON-ready results (scores, sizes, timings).

    Returns:
        The path of the written file.

    Example:
    >>> write_metrics(config, {"tuned": {"exact_match": 0.9}})
    """
    path = Path(config.run_dir) / METRICS_FILE
    write_json_atomic(path, {**config.to_dict(), "results": results})
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
    figure.savefig(path, dpi=110)
    return figure


def comparison_table(evaluations: dict[str, Evaluation]) -> str:
    """A markdown table of the scalar scores of several evaluations.

    Args:
        evaluations: column name (e.g. `"base"`, `"LoRA-tuned"`) -> result.

    Returns:
        Markdown text.

    Example:
    >>> print(comparison_table({"base": baseline, "LoRA-tuned": tuned}))
    """
    names = list(evaluations)
    rows = [
        ("exact match", lambda e: f"{100 * e.exact_match:.1f}%"),
        ("ROUGE-L F1", lambda e: f"{e.rouge_l:.3f}"),
        ("loss per response token", lambda e: f"{e.loss:.3f}"),
        ("perplexity", lambda e: f"{e.perplexity:.2f}"),
        ("test examples", lambda e: f"{e.num_examples}"),
    ]
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
    text = html.escape(text.strip() or "(empty)")
    text = text.replace("|", "\\|").replace("\n", "<br>")
    return f"`{text}`" if text.startswith("{") else text


def base_weights_bytes(model) -> int:
    """Bytes of the model's weights in memory, LoRA weights excluded.

    Args:
        model: a Keras model, with or without LoRA.

    Returns:
        The size of the base model's weights in bytes.
    """
    import ml_dtypes  # noqa: F401  (lets numpy name bfloat16)
    import numpy as np

    return sum(
        int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize
        for w in model.weights if "lora_kernel" not in w.path
    )


def folder_size(path: str | os.PathLike) -> int:
    """Total size in bytes of the files under `path`."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
