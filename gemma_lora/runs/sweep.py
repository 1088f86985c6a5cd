"""Rank sweep: run a notebook once per LoRA rank with papermill, then compare.

`make sweep RANKS="1 2 4 8 16"` calls `main`: every rank and parameter is
checked first (a bad rank stops the sweep before any training), then the
fine-tuning notebook runs once per rank into `<output>/rank-<r>/`, and the
comparison notebook runs on those folders into `<output>/compare/`. Each
notebook's own output (training progress as plain lines) streams to the
terminal while it runs.

Usage:
    python -m gemma_lora.runs.sweep --ranks "1 2 4 8 16" --output runs/my-sweep \\
        [--notebook notebooks/01_finetune_gemma_lora.ipynb] [-p max_steps 100 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError
from gemma_lora.errors import GemmaLoraError
from gemma_lora.progress import MODE_VARIABLE

DEFAULT_NOTEBOOK = "notebooks/01_finetune_gemma_lora.ipynb"
COMPARE_NOTEBOOK = "notebooks/03_compare_runs.ipynb"
_SET_BY_SWEEP = ("rank", "run_dir")


def parse_ranks(ranks: str | Sequence[Any]) -> list[int]:
    """The sweep's ranks from `"1 2 4"`, `"1,2,4"` or a list.

    Args:
        ranks: the ranks, separated by spaces or commas.

    Returns:
        The ranks as integers, in the given order.

    Raises:
        ConfigError: a rank is not a positive integer, a rank repeats, or
            there is none.

    Example:
    >>> parse_ranks("1 2 4,8")
    [1, 2, 4, 8]
    """
    items = ranks.replace(",", " ").split() if isinstance(ranks, str) else list(ranks)
    if not items:
        raise ConfigError('RANKS is empty; expected positive integers, e.g. RANKS="1 2 4 8 16".')
    parsed = []
    for item in items:
        text = str(item).strip()
        if isinstance(item, bool) or not text.isdigit() or int(text) < 1:
            raise ConfigError(
                f"RANKS: {text!r} is not a positive integer; expected ranks like "
                'RANKS="1 2 4 8 16".'
            )
        parsed.append(int(text))
    repeated = sorted({rank for rank in parsed if parsed.count(rank) > 1})
    if repeated:
        raise ConfigError(f"RANKS: rank(s) {repeated} appear more than once; each rank runs once.")
    return parsed


def parse_value(text: str) -> Any:
    """A `-p` value typed as papermill types it: bool, None, int, float or str.

    Example:
    >>> [parse_value(v) for v in ("True", "None", "3", "2e-4", "alpaca")]
    [True, None, 3, 0.0002, 'alpaca']
    """
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def check_parameters(parameters: dict[str, Any], ranks: Sequence[int]) -> None:
    """Check the sweep's parameters for every rank, before anything runs.

    Args:
        parameters: `-p` overrides passed to every run.
        ranks: the ranks to run.

    Raises:
        ConfigError: a name is not a `RunConfig` field, sets what the sweep
            sets (`rank`, `run_dir`), or a run's configuration is invalid.

    Example:
    >>> check_parameters({"max_steps": 50}, [1, 2, 4])
    """
    known = {field.name for field in dataclasses.fields(RunConfig)}
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ConfigError(f"Unknown parameter(s) {unknown} in PARAMS; known: {sorted(known)}.")
    clash = sorted(set(parameters) & set(_SET_BY_SWEEP))
    if clash:
        raise ConfigError(f"PARAMS sets {clash}, which the sweep sets itself for each run.")
    for rank in ranks:
        RunConfig(**parameters, rank=rank)


def run_sweep(
    ranks: Sequence[int],
    output: str | os.PathLike,
    parameters: dict[str, Any] | None = None,
    notebook: str | os.PathLike = DEFAULT_NOTEBOOK,
    compare_notebook: str | os.PathLike | None = COMPARE_NOTEBOOK,
    execute: Callable[..., Any] | None = None,
) -> Path:
    """Run `notebook` once per rank, then the comparison notebook on the runs.

    Args:
        ranks: LoRA ranks, e.g. from `parse_ranks`.
        output: the sweep folder; run `r` goes to `<output>/rank-<r>/`.
        parameters: other notebook parameters, the same for every run.
        notebook: the fine-tuning notebook.
        compare_notebook: run on the sweep's runs into `<output>/compare/`;
            `None` skips it.
        execute: `papermill.execute_notebook` or a stand-in with its
            signature (for tests).

    Returns:
        The sweep folder.

    Raises:
        ConfigError: a rank or parameter is invalid, or a notebook is missing
            (checked before any notebook runs).

    Example (runs the notebooks, minutes per rank)::

        run_sweep([1, 4, 16], "runs/rank-sweep", {"max_steps": 100})
    """
    parameters = dict(parameters or {})
    check_parameters(parameters, ranks)
    for path in (notebook, compare_notebook):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"Notebook {os.fspath(path)!r} not found.")
    if execute is None:
        import papermill

        # As `make run-notebooks`: the notebooks' own text streams here as it is
        # printed, progress as plain lines (the kernels inherit the variable).
        os.environ.setdefault(MODE_VARIABLE, "lines")
        execute = functools.partial(papermill.execute_notebook, progress_bar=False,
                                    stdout_file=sys.stdout, stderr_file=sys.stderr)
    output = Path(output)
    for rank in ranks:
        run_dir = output / f"rank-{rank}"
        run_dir.mkdir(parents=True, exist_ok=True)
        print(f"==> rank {rank}: {notebook} -> {run_dir}", flush=True)
        execute(os.fspath(notebook), os.fspath(run_dir / Path(notebook).name),
                parameters={**parameters, "rank": rank, "run_dir": os.fspath(run_dir)}, cwd=".")
    if compare_notebook is not None:
        compare_dir = output / "compare"
        compare_dir.mkdir(parents=True, exist_ok=True)
        print(f"==> comparing {len(ranks)} runs -> {compare_dir}", flush=True)
        execute(os.fspath(compare_notebook), os.fspath(compare_dir / Path(compare_notebook).name),
                parameters={"runs_glob": os.fspath(output / "rank-*" / "metrics.json"),
                            "compare_by": "rank", "run_dir": os.fspath(compare_dir)}, cwd=".")
    return output


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", required=True, help='LoRA ranks, e.g. "1 2 4 8 16"')
    parser.add_argument("--output", required=True, help="the sweep folder")
    parser.add_argument("--notebook", default=DEFAULT_NOTEBOOK, help="the notebook to run per rank")
    parser.add_argument("--compare-notebook", default=COMPARE_NOTEBOOK,
                        help="the notebook that compares the runs")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="a notebook parameter, as with papermill")
    args = parser.parse_args(argv)
    try:
        ranks = parse_ranks(args.ranks)
        parameters = {name: parse_value(value) for name, value in args.parameter}
        output = run_sweep(ranks, args.output, parameters, args.notebook, args.compare_notebook)
    except GemmaLoraError as error:
        print(f"sweep: {error}", file=sys.stderr)
        return 2
    print(f"Sweep finished: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
