"""benchmarks/memory.py runs and prints docs/performance.md's table (no memory figure asserted here).

That chunking bounds the step's memory is tested in tests/test_chunked_loss.py.
"""

import re
import subprocess
import sys


def test_memory_benchmark_prints_one_row_per_chunk_size():
    command = [sys.executable, "benchmarks/memory.py", "--arch", "tiny", "--batch", "4",
               "--max-length", "32", "--loss-positions", "64", "--chunks", "0", "16"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = re.findall(r"^\| (.+) \| ([\d.]+) (MiB|GiB) \|$", completed.stdout, flags=re.MULTILINE)
    assert [name for name, _, _ in rows] == ["`None` (not chunked)", "16"]
    assert "batch 4 x 32 tokens with 64 loss positions" in completed.stdout


def test_memory_benchmark_refuses_loss_positions_that_do_not_fit():
    command = [sys.executable, "benchmarks/memory.py", "--arch", "tiny", "--batch", "4",
               "--max-length", "8", "--loss-positions", "64"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode != 0
    assert "--loss-positions must be a multiple of --batch (4)" in completed.stderr
