"""The notebooks, run with papermill on tiny models, as one `make run-notebooks` batch.

The fine-tuning and classification notebooks run on a tiny random Gemma
saved as a local preset, with a second tiny Gemma standing in for a larger
`reference_preset`; the comparison notebook then compares the two runs.
"""

import dataclasses
import json
import subprocess
import sys

import pytest

from gemma_lora.config import RunConfig

from tests import tiny_presets

pytestmark = pytest.mark.notebook

NOTEBOOK_01 = "notebooks/01_finetune_gemma_lora.ipynb"
NOTEBOOK_02 = "notebooks/02_sentiment_classification.ipynb"
NOTEBOOK_03 = "notebooks/03_compare_runs.ipynb"


def papermill(notebook, output, **parameters):
    command = [sys.executable, "-m", "papermill", notebook, str(output), "--cwd", "."]
    for name, value in parameters.items():
        command += ["-p", name, str(value)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def printed_text(executed_notebook):
    """Everything the cells of an executed notebook printed (their stream outputs), as one text."""
    notebook = json.loads(executed_notebook.read_text())
    return "".join("".join(output.get("text", "")) for cell in notebook["cells"]
                   for output in cell.get("outputs", []))


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A `make run-notebooks`-like batch: notebooks 01 and 02 on tiny presets in runs/."""
    root = tmp_path_factory.mktemp("batch")
    model = tiny_presets.save_tiny_gemma_preset(root / "presets" / "small", seed=0)
    reference = tiny_presets.save_tiny_gemma_preset(root / "presets" / "larger", seed=5)
    common = dict(preset=model, reference_preset=reference, warmup_steps=1, num_samples=2)
    completed = papermill(NOTEBOOK_01, root / "01.ipynb", **common,
                          run_dir=root / "runs" / "01_finetune_gemma_lora", max_steps=2,
                          eval_every=1, validation_fraction=0.002, test_fraction=0.004,
                          max_new_tokens=4, eval_batch_size=8)
    assert completed.returncode == 0, completed.stderr[-3000:]
    completed = papermill(NOTEBOOK_02, root / "02.ipynb", **common,
                          run_dir=root / "runs" / "02_sentiment_classification", max_steps=6,
                          eval_every=3, learning_rate=0.01, sequence_length=96, eval_batch_size=32,
                          test_data_path="None", test_fraction=0.02)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return root


def test_finetuning_notebook_evaluates_the_reference_preset(batch):
    metrics = json.loads((batch / "runs" / "01_finetune_gemma_lora" / "metrics.json").read_text())
    assert list(metrics) == [field.name for field in dataclasses.fields(RunConfig)] + ["results"]
    results = metrics["results"]
    assert results["primary_metric"] == "exact_match" and results["steps"] == 2
    assert results["reference"]["num_examples"] == results["tuned"]["num_examples"] == 10
    assert results["reference"]["loss"] != results["baseline"]["loss"]  # another model


def test_the_executed_notebook_shows_training_progress_and_writes_tensorboard(batch):
    notebook = json.loads((batch / "01.ipynb").read_text())
    cell = next(cell for cell in notebook["cells"] if "result = train(" in "".join(cell["source"]))
    widgets = [output for output in cell["outputs"]
               if "application/vnd.jupyter.widget-view+json" in output.get("data", {})]
    if widgets:  # a Jupyter kernel draws tqdm's widget; papermill saves its final state
        assert "".join(widgets[0]["data"]["text/plain"]).startswith("train:")
        state = notebook["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]
        assert any(model["model_name"] == "FloatProgressModel" and model["state"]["value"] == 2
                   for model in state["state"].values())
    else:  # GEMMA_LORA_PROGRESS=lines (as make run-notebooks sets) in this environment
        text = "".join("".join(output.get("text", "")) for output in cell["outputs"])
        assert "train 2/2 | loss " in text and "\r" not in text
    events = (batch / "runs" / "01_finetune_gemma_lora" / "tensorboard").glob("events.out.tfevents.*")
    assert list(events)


def test_classification_notebook_writes_the_run_config_and_results(batch):
    run_dir = batch / "runs" / "02_sentiment_classification"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    fields = [field.name for field in dataclasses.fields(RunConfig)]
    assert list(metrics) == fields + ["results"]
    results = metrics["results"]
    assert results["primary_metric"] == "macro_f1" and results["labels"] == ["negative", "positive"]
    for name in ("baseline", "tuned", "reference"):
        assert results[name]["num_examples"] == 24
        assert sum(map(sum, results[name]["confusion_matrix"])) == 24
    assert results["reference"]["macro_f1"] != results["baseline"]["macro_f1"]  # another model
    assert results["steps"] == 6 and results["trainable_parameters"] > 0
    for name in ("confusion_matrices.png", "loss_curves.png", "history.csv", "adapter"):
        assert (run_dir / name).exists(), name


def test_comparison_notebook_compares_the_fine_tuning_run_of_its_batch(batch):
    """Exact match and macro-F1 never share an axis: the batch's fine-tuning run is kept."""
    run_dir = batch / "runs" / "03_compare_runs"
    completed = papermill(NOTEBOOK_03, batch / "03.ipynb", run_dir=run_dir)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = (run_dir / "comparison.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["01_finetune_gemma_lora"]
    assert "exact_match" in lines[1].split(",")
    printed = printed_text(batch / "03.ipynb")
    assert "Left out, to keep one metric per axis: 02_sentiment_classification" in printed
    assert (run_dir / "loss_curves.png").is_file()
    assert not (run_dir / "metrics.json").exists()  # a comparison is not a run


def test_comparison_notebook_without_runs_says_so(tmp_path):
    completed = papermill(NOTEBOOK_03, tmp_path / "03.ipynb", run_dir=tmp_path / "batch" / "03")
    assert completed.returncode != 0
    assert "No runs found for runs_glob" in completed.stderr


def test_a_test_label_unseen_in_training_stops_before_the_model_loads(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": f"review {i}", "label": "ab"[i % 2]}) + "\n"
                             for i in range(20)))
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"text": "a new review", "label": "neutral"}) + "\n")
    completed = papermill(NOTEBOOK_02, tmp_path / "02.ipynb", data_path=train,
                          test_data_path=test, run_dir=tmp_path / "run", preset="no-such-preset")
    assert completed.returncode != 0
    assert "test label(s) ['neutral'] never appear in training" in completed.stderr
    assert not (tmp_path / "run" / "adapter").exists()


def test_inference_notebook_answers_requests_with_the_batch_adapter(batch):
    run_dir = batch / "runs" / "04_inference"
    # The tiny preset's tokenizer normalizes text unlike Gemma's, which the Hugging Face and
    # GGUF formats refuse (tests/test_export_*.py): the notebook exports the PEFT adapters.
    completed = papermill("notebooks/04_inference.ipynb", batch / "04.ipynb", run_dir=run_dir,
                          max_new_tokens=4, batch_size=4, export_formats="peft peft_rank",
                          peft_base_model="google/gemma-3-270m")
    assert completed.returncode == 0, completed.stderr[-3000:]
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 12 and all("prediction" in p for p in predictions)
    speed = json.loads((run_dir / "generation_speed.json").read_text())
    assert speed["requests"] == 12
    assert speed["same_answers_merged_vs_unmerged"] == 12
    assert speed["merged_tokens_per_second"] > 0 and speed["unmerged_tokens_per_second"] > 0
    export = run_dir / "export"
    assert sorted(path.name for path in export.iterdir()) == ["peft", "peft_rank8"]
    config = json.loads((export / "peft" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "google/gemma-3-270m"
    printed = printed_text(batch / "04.ipynb")
    assert "vLLM: --max-lora-rank" in printed and str(export / "peft_rank8") in printed
    assert "No export that transformers or llama.cpp loads was written" in printed


def test_a_sharegpt_file_trains_through_the_finetuning_notebook(tmp_path):
    """Only `data_path` (and Gemma's turn format) change to train on ShareGPT conversations."""
    roles = {"user": "human", "assistant": "gpt"}
    with open("data/conversations.jsonl") as source, open(tmp_path / "chats.jsonl", "w") as out:
        for line in source.readlines()[:120]:
            turns = [{"from": roles[turn["role"]], "value": turn["content"]}
                     for turn in json.loads(line)["messages"]]
            out.write(json.dumps({"conversations": turns}) + "\n")
    model = tiny_presets.save_tiny_gemma_preset(tmp_path / "preset", seed=0)
    run_dir = tmp_path / "run"
    completed = papermill(NOTEBOOK_01, tmp_path / "01.ipynb", preset=model,
                          data_path=tmp_path / "chats.jsonl", template="gemma_chat",
                          run_dir=run_dir, max_steps=2, eval_every=2, warmup_steps=1,
                          num_samples=1, validation_fraction=0.05, test_fraction=0.05,
                          max_new_tokens=4, eval_batch_size=8)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((run_dir / "metrics.json").read_text())["results"]
    assert results["steps"] == 2 and results["tuned"]["num_examples"] == 6
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
