"""Comparing runs from their files: finding, reading, tabulating, plotting."""

import json

import pytest

from gemma_lora.runs import compare
from gemma_lora.runs import selection
from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError


def fake_run(folder, rank=8, alpha=None, metric=("exact_match", 0.5), history=True, task=None,
             **config):
    """A finished run folder as the notebooks leave it: metrics.json and history.csv.

    With `task`, `results` records it and `metric`'s name as its primary metric, as
    notebooks 01 (`"generation"`) and 02 (`"classification"`) do.
    """
    folder.mkdir(parents=True)
    name, value = metric
    results = {"baseline": {name: value / 2}, "tuned": {name: value},
               **({"task": task, "primary_metric": name} if task else {}),
               "trainable_parameters": 1000 * rank, "adapter_bytes": 250_000 * rank,
               "best_val_loss": 1 / rank, "training_seconds": 60.0 * rank}
    values = {**RunConfig(rank=rank, alpha=alpha, run_dir=str(folder), **config).to_dict(),
              "results": results}
    (folder / "metrics.json").write_text(json.dumps(values), encoding="utf-8")
    if history:
        (folder / "history.csv").write_text(
            "step,loss,learning_rate,val_loss\n0,,0.0,2.0\n1,1.5,0.001,\n2,1.0,0.001,"
            f"{1 / rank}\n", encoding="utf-8")
    return folder


@pytest.fixture
def sweep(tmp_path):
    for rank in (1, 4, 16):
        fake_run(tmp_path / "sweep" / f"rank-{rank}", rank=rank, metric=("exact_match", rank / 20))
    (tmp_path / "sweep" / "compare").mkdir()  # a folder without metrics.json is not a run
    return tmp_path / "sweep"


def test_find_runs_from_a_glob_or_a_list(sweep):
    expected = [sweep / "rank-1", sweep / "rank-16", sweep / "rank-4"]
    assert compare.find_runs(str(sweep / "*" / "metrics.json")) == expected
    assert compare.find_runs(str(sweep / "*")) == expected
    assert compare.find_runs(str(sweep.parent / "**" / "metrics.json")) == expected
    assert compare.find_runs([sweep / "rank-4", sweep / "rank-1" / "metrics.json"]) == [
        sweep / "rank-1", sweep / "rank-4"]


def test_no_runs_found_says_what_was_looked_for(tmp_path):
    with pytest.raises(DataError, match=r"No runs found for runs_glob '.*nothing/\*/metrics.json'.*"
                                        r"make run-notebooks"):
        compare.find_runs(str(tmp_path / "nothing" / "*" / "metrics.json"))


def test_malformed_metrics_name_the_file(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text('{"rank": 8,\n "results": }')
    with pytest.raises(DataError, match=r"run/metrics.json:2: invalid JSON"):
        compare.load_run(tmp_path / "run")
    (tmp_path / "run" / "metrics.json").write_text('{"rank": 8}')
    with pytest.raises(DataError, match=r"'results' object"):
        compare.load_run(tmp_path / "run")


def test_load_run_reads_config_results_and_history(sweep):
    run = compare.load_run(sweep / "rank-4")
    assert run.name == "rank-4" and run.config["rank"] == 4 and "results" not in run.config
    assert run.metric == ("exact_match", 0.2)
    assert run.history[0] == {"step": 0.0, "loss": None, "learning_rate": 0.0, "val_loss": 2.0}


def test_the_primary_metric_wins_over_the_preference_order(tmp_path):
    run = compare.load_run(fake_run(tmp_path / "r", metric=("accuracy", 0.9)))
    assert run.metric == ("accuracy", 0.9)
    run.results["tuned"]["macro_f1"] = 0.8
    assert run.metric == ("macro_f1", 0.8)
    run.results["primary_metric"] = "accuracy"
    assert run.metric == ("accuracy", 0.9)


def test_table_of_a_rank_sweep(sweep):
    runs = compare.load_runs(str(sweep / "*"))
    assert compare.varying_parameters(runs) == ["rank"]
    rows = compare.comparison_rows(runs)
    assert [row["run"] for row in rows] == ["rank-1", "rank-16", "rank-4"]
    assert rows[2] == {"run": "rank-4", "rank": 4, "alpha": 4, "trainable_params": 4000,
                       "adapter_mb": 1.0, "best_val_loss": 0.25, "metric": "exact_match",
                       "baseline": 0.1, "tuned": 0.2, "training_min": 4.0}
    table = compare.runs_table(runs)
    assert table.splitlines()[0].startswith("| run | rank | alpha | trainable params | adapter (MB)")
    assert "| rank-16 | 16 | 16 | 16,000 | 4.00 | 0.0625 | exact_match | 0.4 | 0.8 | 16.00 |" in table


def test_other_differences_get_their_own_columns(tmp_path):
    runs = [compare.load_run(fake_run(tmp_path / "a", learning_rate=1e-3, template="alpaca")),
            compare.load_run(fake_run(tmp_path / "b", learning_rate=1e-4, template="gemma_chat",
                                      history=False))]
    assert compare.varying_parameters(runs) == ["template", "learning_rate"]
    assert list(compare.comparison_rows(runs)[0])[:3] == ["run", "template", "learning_rate"]
    assert runs[1].history == []
    assert compare.default_parameter(runs) == "template"


def test_write_csv(sweep, tmp_path):
    path = compare.write_csv(compare.load_runs(str(sweep / "*")), tmp_path / "out" / "c.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == ("run,rank,alpha,trainable_params,adapter_mb,best_val_loss,metric,"
                        "baseline,tuned,training_min")
    assert len(lines) == 4


def test_plots_against_rank_and_loss_curves(sweep, tmp_path):
    runs = compare.load_runs(str(sweep / "*"))
    figure = compare.plot_against(runs, "rank", tmp_path / "vs_rank.png")
    assert figure.axes[0].get_xscale() == "log"
    assert list(figure.axes[0].lines[0].get_xdata()) == [1, 4, 16]
    assert list(figure.axes[0].lines[0].get_ydata()) == [0.05, 0.2, 0.8]
    compare.plot_loss_curves(runs, tmp_path / "curves.png")
    assert (tmp_path / "vs_rank.png").stat().st_size > 5000
    assert (tmp_path / "curves.png").stat().st_size > 5000


def test_categorical_and_unknown_parameters(tmp_path):
    runs = [compare.load_run(fake_run(tmp_path / "a", template="alpaca")),
            compare.load_run(fake_run(tmp_path / "b", template="gemma_chat"))]
    figure = compare.plot_against(runs, "template", tmp_path / "t.png")
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["alpaca", "gemma_chat"]
    compare.plot_against(runs, None, tmp_path / "by_run.png")
    with pytest.raises(ConfigError, match=r"compare_by='rnak' is not a parameter.*\['template'\]"):
        compare.plot_against(runs, "rnak", tmp_path / "x.png")


# === Which runs are compared by default ===


def batch_runs(folder, classification_runs=1):
    """What `make run-notebooks` leaves: a fine-tuning run and classification run(s)."""
    fake_run(folder / "01_finetune_gemma_lora", task="generation", metric=("exact_match", 0.9))
    for index in range(classification_runs):
        fake_run(folder / f"02_sentiment_classification-{index}", task="classification",
                 metric=("macro_f1", 0.8), data_path="data/sentiment_train.jsonl",
                 test_data_path="data/sentiment_test.jsonl")
    return compare.load_runs(str(folder / "*"))


def test_a_batch_compares_its_fine_tuning_run_and_says_why(tmp_path):
    chosen = selection.comparable_runs(batch_runs(tmp_path))
    assert [run.name for run in chosen.runs] == ["01_finetune_gemma_lora"]
    assert [run.name for run in chosen.left_out] == ["02_sentiment_classification-0"]
    assert chosen.reason == (
        "Comparing 1 of 2 runs: the fine-tuning notebook's, which has as many runs as any other "
        "kind (task generation, exact_match on data/order_extraction.jsonl). Left out, to keep "
        "one metric per axis: 02_sentiment_classification-0 (task classification, macro_f1 on "
        "data/sentiment_train.jsonl (test: data/sentiment_test.jsonl)). Set runs_glob to choose "
        "the runs yourself.")


def test_the_kind_with_most_runs_wins(tmp_path):
    chosen = selection.comparable_runs(batch_runs(tmp_path, classification_runs=2))
    assert [run.results["task"] for run in chosen.runs] == ["classification"] * 2
    assert chosen.reason.startswith("Comparing 2 of 3 runs: the kind with the most runs (task "
                                    "classification, macro_f1 on")


def test_a_sweep_is_one_kind_and_other_data_is_another(sweep, tmp_path):
    runs = compare.load_runs(str(sweep / "*"))
    chosen = selection.comparable_runs(runs)
    assert chosen.runs == runs and chosen.left_out == []
    assert chosen.reason == ("Comparing all 3 runs: one kind (task unrecorded, exact_match on "
                             "data/order_extraction.jsonl).")
    other = compare.load_run(fake_run(tmp_path / "other", data_path="data/schedules.jsonl"))
    chosen = selection.comparable_runs([*runs, other])
    assert chosen.runs == runs and chosen.left_out == [other]


def test_two_metrics_never_share_an_axis(tmp_path):
    runs = batch_runs(tmp_path)
    figure = compare.plot_against(runs, None, tmp_path / "mixed.png")
    assert len(figure.axes) == 4  # one row of panels per metric
    assert [axis.get_ylabel() for axis in figure.axes[::2]] == ["test exact_match",
                                                                  "test macro_f1"]
    assert [list(axis.lines[0].get_ydata()) for axis in figure.axes[::2]] == [[0.9], [0.8]]
