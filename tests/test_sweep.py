"""Rank sweeps: ranks and parameters checked first, one papermill run per rank, then the comparison."""

import pytest

from gemma_lora.runs import sweep
from gemma_lora.errors import ConfigError


class FakePapermill:
    """Records `papermill.execute_notebook` calls instead of running notebooks."""

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


def test_runs_each_rank_into_its_folder_then_compares(tmp_path, notebooks):
    fine_tune, compare = notebooks
    papermill = FakePapermill()
    output = sweep.run_sweep([2, 8], tmp_path / "sweep", {"max_steps": 5}, fine_tune, compare,
                             execute=papermill)
    assert [call[1] for call in papermill.calls] == [
        str(output / "rank-2" / "01.ipynb"), str(output / "rank-8" / "01.ipynb"),
        str(output / "compare" / "03.ipynb")]
    assert papermill.calls[1][2] == {"max_steps": 5, "rank": 8, "run_dir": str(output / "rank-8")}
    assert papermill.calls[2][2] == {"runs_glob": str(output / "rank-*" / "metrics.json"),
                                     "compare_by": "rank", "run_dir": str(output / "compare")}


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
