"""Reading speed of `data.read_records` on large and adversarial files.

A data file that is wrong should be refused in about the time it takes to
read it, and a large one that is right read in about that time too: no
quadratic scan of a long line, no recursion into deep nesting, no slow
conversion of a huge number. Each input is written to a temporary folder at
`--mb` megabytes (the cases of tests/test_bad_inputs.py at 10 MB), then read
`--repeats` times; the table shows the best time and what the reader did
(records read, or the start of the `DataError`).

Rows:
- `record`: one valid JSONL record whose output is `--mb` MB of words;
- `line not JSON`: one `--mb` MB line that is not JSON;
- `CSV field`: a CSV row with a `--mb` MB field (over the CSV reader's limit);
- `field name`: a JSONL record whose only key is `--mb` MB long;
- `nested lists`: 100,000 opening brackets;
- `5,000-digit integer`: an output that is a 5,000-digit number.

Example (the cases of tests/test_bad_inputs.py):
    python benchmarks/data_reading.py --mb 10
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

MB = 1024 * 1024


def inputs(megabytes: float) -> dict[str, tuple[str, bytes]]:
    """`{row name: (file name, contents)}` at `megabytes` for the large cases."""
    size = int(megabytes * MB)
    return {
        "record": ("record.jsonl", json.dumps(
            {"instruction": "Summarize.", "output": "word " * (size // 5)}).encode()),
        "line not JSON": ("line.jsonl", b"x" * size),
        "CSV field": ("field.csv", b"instruction,output\nSummarize.," + b"w" * size),
        "field name": ("key.jsonl", b'{"' + b"k" * size + b'": "x"}'),
        "nested lists": ("deep.jsonl", b"[" * 100_000),
        "5,000-digit integer": ("digits.jsonl",
                                b'{"instruction": "a", "output": ' + b"9" * 5000 + b"}"),
    }


def read_once(path: Path) -> tuple[float, str]:
    """Seconds to read `path` and what came of it."""
    from gemma_lora.data import read_records
    from gemma_lora.errors import DataError

    start = time.perf_counter()
    try:
        outcome = f"{len(read_records(path))} record(s)"
    except DataError as error:
        outcome = "DataError: " + str(error).removeprefix(str(path)).lstrip(":0123456789 ")[:50]
    return time.perf_counter() - start, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=10.0, help="size of the large inputs")
    parser.add_argument("--repeats", type=int, default=3, help="reads per input (best kept)")
    args = parser.parse_args()
    print(f"| input ({args.mb:g} MB) | file size | best of {args.repeats} reads | result |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name, (file_name, content) in inputs(args.mb).items():
            path = Path(folder) / file_name
            path.write_bytes(content)
            times, outcome = zip(*(read_once(path) for _ in range(args.repeats)))
            print(f"| {name} | {len(content) / MB:,.2f} MB | {min(times) * 1000:,.1f} ms "
                  f"| {outcome[0]} |")


if __name__ == "__main__":
    main()
