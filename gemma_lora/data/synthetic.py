"""What the scripts that make the shipped data sets share: distinct seeded rows, one CLI.

Each generator under `data/` (`make_order_extraction.py`,
`make_conversations.py`, `make_schedules.py`) draws records from word lists
with a seeded `random.Random` and writes them as JSONL. This module holds the
parts they have in common: drawing rows until `count` of them are pairwise
different (`distinct_rows`, so a random split can never put the same prompt
in training and test), the compact JSON of an answer (`compact_json`), and
the command line that writes the file atomically (`generator_main`). Standard
library only, like the scripts.

Example:
>>> rows = distinct_rows(lambda rng: {"input": str(rng.randint(1, 5))}, count=5, seed=0)
>>> sorted(row["input"] for row in rows)
['1', '2', '3', '4', '5']
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gemma_lora.io_utils import write_jsonl_atomic


def compact_json(value: Any) -> str:
    """`value` as one line of JSON without spaces, non-ASCII text kept as it is.

    Example:
    >>> compact_json({"city": "Malmö", "quantity": 2})
    '{"city":"Malmö","quantity":2}'
    """
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def distinct_rows(
    make_row: Callable[[random.Random], dict],
    count: int,
    seed: int,
    key: Callable[[dict], Any] = lambda row: row["input"],
) -> list[dict]:
    """`count` rows from `make_row`, drawn with one seeded generator, no two with the same key.

    A row whose key was drawn before is dropped and another is drawn, so the
    same seed always gives the same rows.

    Args:
        make_row: draws one row from the generator it is given.
        count: how many rows to return.
        seed: the seed of the one `random.Random` every row is drawn with.
        key: what must differ between rows (by default the `input` field).

    Returns:
        The rows, in the order they were drawn.

    Example:
    >>> rows = distinct_rows(lambda rng: {"n": rng.randint(1, 3)}, 3, seed=1,
    ...                      key=lambda row: row["n"])
    >>> sorted(row["n"] for row in rows)
    [1, 2, 3]
    """
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < count:
        row = make_row(rng)
        row_key = key(row)
        if row_key not in seen:
            seen.add(row_key)
            rows.append(row)
    return rows


def generator_main(
    argv: list[str] | None,
    description: str,
    default_output: str | os.PathLike,
    make_rows: Callable[[], list[dict]],
    noun: str = "examples",
) -> Path:
    """Parse `--output`, write `make_rows()` there as JSONL (atomically) and say so.

    Args:
        argv: the command-line arguments (`None`: `sys.argv[1:]`).
        description: the `--help` text (a generator's first docstring line).
        default_output: the file written without `--output`.
        make_rows: returns the rows to write.
        noun: what the rows are, for the closing line (`"conversations"`).

    Returns:
        The path written.

    Example:
    >>> import tempfile; path = Path(tempfile.mkdtemp()) / "rows.jsonl"
    >>> _ = generator_main(["--output", str(path)], "Rows.", "unused.jsonl",
    ...                    lambda: [{"input": "a"}, {"input": "b"}])  # doctest: +ELLIPSIS
    wrote 2 examples to ...rows.jsonl
    >>> path.read_text()
    '{"input": "a"}\\n{"input": "b"}\\n'
    """
    default_output = Path(default_output)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--output", type=Path, default=default_output,
        help=f"the JSONL file to write (default: {default_output.name} beside this script)",
    )
    args = parser.parse_args(argv)
    rows = make_rows()
    write_jsonl_atomic(args.output, rows)
    print(f"wrote {len(rows)} {noun} to {args.output}")
    return args.output
