"""Which finished runs belong in one comparison: one notebook, one task, one metric.

A `make run-notebooks` batch holds a fine-tuning run scored by exact match
and a classification run scored by macro-F1; a sweep holds one run per rank
of the same notebook on the same data. Only runs of the same kind can share
a table column or a plot axis, so `comparable_runs` groups runs by what they
measure (`run_kind`: the notebook's task, its primary metric and its data)
and keeps one group, saying which and why.

Example:
>>> import tempfile
>>> from gemma_lora.runs import compare
>>> from gemma_lora.testing import write_rank_sweep
>>> sweep = write_rank_sweep(tempfile.mkdtemp(), ranks=(1, 8))
>>> chosen = comparable_runs(compare.load_runs(f"{sweep}/*"))
>>> [run.name for run in chosen.runs], chosen.left_out
(['rank-1', 'rank-8'], [])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from gemma_lora.runs.compare import Run

FINE_TUNING_TASK = "generation"
"""`results["task"]` of the fine-tuning notebook (01), preferred when groups tie."""


@dataclasses.dataclass(frozen=True)
class Kind:
    """What a run measures: runs of one kind can be compared on one axis.

    Args:
        task: `results["task"]` (`"generation"`, `"classification"`), or
            `None` for runs that did not record it.
        metric: the test metric's name (`Run.metric`).
        data: the training data (`data_path`, with `test_data_path` when set).
    """

    task: str | None
    metric: str | None
    data: str

    def __str__(self) -> str:
        return f"task {self.task or 'unrecorded'}, {self.metric} on {self.data}"


@dataclasses.dataclass(frozen=True)
class Selection:
    """The runs kept for one comparison, the others, and why.

    Args:
        runs: the runs compared, in their original order.
        left_out: the runs of other kinds, in their original order.
        reason: one or two sentences saying what was kept and why.
    """

    runs: list[Run]
    left_out: list[Run]
    reason: str


def run_kind(run: Run) -> Kind:
    """The task, metric and data a run was measured on.

    Example:
    >>> from pathlib import Path
    >>> run = Run(Path("r"), {"data_path": "data/a.jsonl", "test_data_path": None},
    ...           {"task": "generation", "primary_metric": "exact_match", "tuned": {}}, [])
    >>> print(run_kind(run))
    task generation, exact_match on data/a.jsonl
    """
    data = str(run.config.get("data_path"))
    if run.config.get("test_data_path"):
        data += f" (test: {run.config['test_data_path']})"
    return Kind(run.results.get("task"), run.metric[0], data)


def comparable_runs(runs: Sequence[Run]) -> Selection:
    """The largest group of runs of one kind (`run_kind`), and the others.

    When two kinds have as many runs, the fine-tuning notebook's comes first
    (a `make run-notebooks` batch then compares its fine-tuning run, not the
    classification run beside it), then the kind met first in `runs`.

    Args:
        runs: the runs found (e.g. `compare.load_runs`), at least one.

    Returns:
        A `Selection`; `reason` names the kept kind and every run left out.

    Example:
    >>> import tempfile
    >>> from gemma_lora.runs import compare
    >>> from gemma_lora.testing import write_rank_sweep
    >>> sweep = write_rank_sweep(tempfile.mkdtemp(), ranks=(1, 8))
    >>> runs = compare.load_runs(f"{sweep}/*")
    >>> runs[1].results.update(task="classification", primary_metric="macro_f1")
    >>> chosen = comparable_runs(runs)
    >>> [run.name for run in chosen.runs], [run.name for run in chosen.left_out]
    (['rank-1'], ['rank-8'])
    >>> print(chosen.reason)  # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
    Comparing 1 of 2 runs: the fine-tuning notebook's, which has as many runs as any other kind
    (task generation, exact_match on data/order_extraction.jsonl). Left out, to keep one metric
    per axis: rank-8 (task classification, macro_f1 on data/order_extraction.jsonl). Set ...
    """
    groups: dict[Kind, list[Run]] = {}
    for run in runs:
        groups.setdefault(run_kind(run), []).append(run)
    if len(groups) == 1:
        kind = next(iter(groups))
        return Selection(list(runs), [], f"Comparing all {len(runs)} runs: one kind ({kind}).")
    largest = max(len(group) for group in groups.values())
    tied = [kind for kind, group in groups.items() if len(group) == largest]
    kind = next((k for k in tied if k.task == FINE_TUNING_TASK), tied[0])
    why = ("the kind with the most runs" if len(tied) == 1 else
           "the fine-tuning notebook's, which has as many runs as any other kind"
           if kind.task == FINE_TUNING_TASK else "the first kind with the most runs")
    kept = groups[kind]
    left_out = [run for run in runs if run_kind(run) != kind]
    others = "; ".join(f"{run.name} ({run_kind(run)})" for run in left_out)
    reason = (f"Comparing {len(kept)} of {len(runs)} runs: {why} ({kind}). Left out, to "
              f"keep one metric per axis: {others}. Set runs_glob to choose the runs yourself.")
    return Selection(kept, left_out, reason)
