"""The benchmark scripts run and print their tables (no timing assertions)."""

import re
import subprocess
import sys


def test_train_throughput_smoke():
    # --loss-chunk 16 is below the batch's loss positions, so the chunked loss runs too.
    command = [sys.executable, "benchmarks/train_throughput.py", "--arch", "tiny", "--steps", "3",
               "--warmup", "1", "--max-length", "32", "--lengths", "parametric:0.33", "--packing",
               "--loss-chunk", "16"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [line for line in completed.stdout.splitlines() if line.startswith(("| stock", "| ours"))]
    assert [row.split("|")[1].strip() for row in rows] == ["stock", "ours", "ours+packing"]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert all(re.fullmatch(r"[\d,.]+%?", cell) for cell in cells[1:]), row
    assert "step time ours/stock:" in completed.stdout
    assert "step time ours+packing/stock:" in completed.stdout
    assert "loss chunk 16" in completed.stdout


def test_generation_speed_smoke():
    command = [sys.executable, "benchmarks/generation_speed.py", "--tiny", "--prompts", "5",
               "--batch-size", "4", "--max-new-tokens", "6"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [line for line in completed.stdout.splitlines() if line.startswith(("| keras_hub", "| ours"))]
    assert [row.split("|")[1].strip() for row in rows] == ["keras_hub", "ours"]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert all(re.fullmatch(r"[\d,./]+", cell) for cell in cells[1:]), row
        assert cells[6] == "5/5", row  # same answers as KerasHub's generate
    assert "wall time keras_hub/ours:" in completed.stdout
