"""Rank sweeps: ranks and parameters checked first, one papermill run per rank, then the comparison."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from gemma_lora.runs import sweep
from gemma_lora.errors import ConfigError

from tests import tiny_presets

REPO = Path(__file__).resolve().parents[1]


class FakePapermill:
    """Records `papermill.execute_notebook` calls instead of running notebooks (error paths)."""

    def __init__(self):
        self.calls = []

    def __call__(self, input_path, output_path, parameters, cwd):
        self.calls.append((input_path, output_path, parameters, cwd))


@pytest.fixture
def notebooks(tmp_path):
    fine_tune, compare = tmp_path / "01.ipynb", tmp_path / "03.ipynb"
    fine_tune.write_text("{}")
    compare.write_text("{}")
    return str(fine_tune), str(compare)


def test_parse_ranks():
    assert sweep.parse_ranks("1 2 4 8 16") == [1, 2, 4, 8, 16]
    assert sweep.parse_ranks(" 8,4 ") == [8, 4]
    assert sweep.parse_ranks([2, "3"]) == [2, 3]


@pytest.mark.parametrize("ranks, message", [
    ("1 0 4", r"'0' is not a positive integer"),
    ("1 -2", r"'-2' is not a positive integer"),
    ("4 eight", r"'eight' is not a positive integer"),
    ("2.5", r"'2.5' is not a positive integer"),
    ("", r"RANKS is empty"),
    ("4 8 4", r"rank\(s\) \[4\] appear more than once"),
    ([True], r"'True' is not a positive integer"),
])
def test_invalid_ranks_are_refused(ranks, message):
    with pytest.raises(ConfigError, match=message):
        sweep.parse_ranks(ranks)


def test_parameter_values_are_typed_like_papermill():
    assert [sweep.parse_value(v) for v in ("False", "None", "-3", "1e-3", "gemma3_1b")] == [
        False, None, -3, 0.001, "gemma3_1b"]


@pytest.mark.parametrize("parameters, message", [
    ({"max_stpes": 5}, r"Unknown parameter\(s\) \['max_stpes'\]"),
    ({"run_dir": "x"}, r"PARAMS sets \['run_dir'\], which the sweep sets itself"),
    ({"learning_rate": -1.0}, r"learning_rate must be a number > 0"),
])
def test_invalid_parameters_are_refused(parameters, message):
    with pytest.raises(ConfigError, match=message):
        sweep.check_parameters(parameters, [1, 2])


@pytest.mark.notebook
def test_a_two_rank_sweep_runs_the_notebooks_and_compares_the_runs(tmp_path):
    """`make sweep` end to end on a tiny preset: papermill runs notebook 01 per rank, then 03."""
    preset = tiny_presets.save_tiny_gemma_preset(tmp_path / "preset", seed=0)
    output = tmp_path / "sweep"
    parameters = dict(preset=preset, max_steps=2, eval_every=1, warmup_steps=1,
                      validation_fraction=0.002, test_fraction=0.004, max_new_tokens=4,
                      eval_batch_size=8, num_samples=1, report_to=None)
    command = [sys.executable, "-m", "gemma_lora.runs.sweep", "--ranks", "2 4", "--output",
               str(output)]
    for name, value in parameters.items():
        command += ["-p", name, str(value)]
    # About 100 s here; one CI run took over 900 s (cause not found), so the limit is generous.
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.splitlines()[-1] == f"Sweep finished: {output}"
    with open(output / "compare" / "comparison.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["run"] for row in rows] == ["rank-2", "rank-4"]
    for row, rank in zip(rows, (2, 4)):
        run_dir = output / f"rank-{rank}"
        assert (run_dir / sweep.DEFAULT_NOTEBOOK.split("/")[-1]).is_file()  # the executed notebook
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert (metrics["rank"], metrics["run_dir"], metrics["max_steps"]) == (rank, str(run_dir), 2)
        # Against the run's own files: its adapter as safetensors reads it, its history.
        adapter = load_file(str(run_dir / "adapter" / "adapter.safetensors"))
        assert all(value.shape[-1] == rank for key, value in adapter.items()
                   if key.endswith("lora_kernel_a"))
        assert int(row["rank"]) == rank
        assert int(row["trainable_params"]) == sum(value.size for value in adapter.values())
        with open(run_dir / "history.csv", newline="") as file:
            val_losses = [float(r["val_loss"]) for r in csv.DictReader(file) if r["val_loss"]]
        assert float(row["best_val_loss"]) == pytest.approx(min(val_losses), rel=1e-6)
        assert row["metric"] == "exact_match"
        assert float(row["tuned"]) == metrics["results"]["tuned"]["exact_match"]
    assert int(rows[1]["trainable_params"]) == 2 * int(rows[0]["trainable_params"])
    assert (output / "compare" / "metric_vs_rank.png").is_file()


def test_an_invalid_rank_stops_the_sweep_before_anything_runs(tmp_path, notebooks):
    papermill = FakePapermill()
    with pytest.raises(ConfigError):
        sweep.run_sweep([4, 0], tmp_path / "sweep", {}, *notebooks, execute=papermill)
    assert papermill.calls == [] and not (tmp_path / "sweep").exists()


def test_a_missing_notebook_stops_the_sweep(tmp_path, notebooks):
    with pytest.raises(ConfigError, match=r"Notebook '.*missing.ipynb' not found"):
        sweep.run_sweep([4], tmp_path / "sweep", {}, str(tmp_path / "missing.ipynb"), notebooks[1],
                        execute=FakePapermill())


def test_command_line_reports_a_bad_rank_and_exits_non_zero(tmp_path, capsys):
    status = sweep.main(["--ranks", "1 x", "--output", str(tmp_path / "s"), "-p", "max_steps", "5"])
    assert status == 2
    assert "sweep: RANKS: 'x' is not a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
