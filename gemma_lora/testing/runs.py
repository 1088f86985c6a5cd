"""Finished-run folders written in a blink, for examples and tests of `runs.compare`.

They hold what a real notebook run leaves behind (`metrics.json` and
`history.csv`, written by the same `report.write_metrics` and
`training.write_history`), with made-up but plausible numbers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from gemma_lora.config import RunConfig
from gemma_lora.runs.report import write_metrics
from gemma_lora.training import HISTORY_FILE
from gemma_lora.training import write_history


def write_rank_sweep(folder: str | os.PathLike, ranks: Sequence[int] = (1, 2, 8)) -> Path:
    """Write one finished run per rank into `folder/rank-<r>`, as `make sweep` would.

    A higher rank gets more trainable parameters, a lower validation loss and
    a better tuned exact match; the untuned baseline is the same for all.

    Args:
        folder: where the run folders go (created if missing).
        ranks: the LoRA ranks, one run each.

    Returns:
        `folder`, as a `Path`.

    Example:
    >>> import tempfile
    >>> sweep = write_rank_sweep(tempfile.mkdtemp())
    >>> sorted(path.name for path in sweep.iterdir())
    ['rank-1', 'rank-2', 'rank-8']
    >>> sorted(path.name for path in (sweep / "rank-8").iterdir())
    ['history.csv', 'metrics.json']
    """
    folder = Path(folder)
    for rank in ranks:
        gain = math.log2(rank)
        # No TensorBoard files: these runs were never trained (`report_to=None`).
        config = RunConfig(rank=rank, max_steps=50, run_dir=str(folder / f"rank-{rank}"),
                           report_to=None)
        best_val_loss = round(0.5 / (1 + 0.25 * gain), 4)
        history = [{"step": 0, "loss": None, "learning_rate": 0.0, "val_loss": 2.3}]
        history += [{"step": step, "loss": round(best_val_loss + 1.5 / step ** 0.5, 4),
                     "learning_rate": config.learning_rate,
                     "val_loss": round(best_val_loss + 2.0 / step, 4) if step % 25 == 0 else None}
                    for step in range(1, config.max_steps + 1)]
        trainable = 92_160 * rank
        write_metrics(config, {
            "task": "generation",  # as notebook 01 records it
            "primary_metric": "exact_match",
            "baseline": {"exact_match": 0.0, "rouge_l": 0.31},
            "tuned": {"exact_match": round(0.6 + 0.05 * gain, 3), "rouge_l": 0.9},
            "trainable_parameters": trainable,
            "adapter_bytes": 4 * trainable + 1_024,
            "best_step": config.max_steps,
            "best_val_loss": round(best_val_loss + 2.0 / config.max_steps, 4),
            "training_seconds": 60.0 + 6 * rank,
        })
        write_history(history, Path(config.run_dir) / HISTORY_FILE)
    return folder
