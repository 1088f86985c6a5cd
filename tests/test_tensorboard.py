"""A run you can watch: TensorBoard event files read back with TensorBoard's own reader,
wandb through a stand-in module (no network), and progress as plain lines or a bar."""

import io
import sys
import types

import pytest

from gemma_lora import lora
from gemma_lora import progress
from gemma_lora import training
from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError
from gemma_lora.runs import report
from gemma_lora.training import tracking


def _config(tmp_path, **overrides):
    values = dict(max_steps=6, eval_every=3, batch_size=8, sequence_length=48,
                  learning_rate=3e-2, warmup_steps=2, eval_batch_size=8, rank=4, alpha=8,
                  run_dir=str(tmp_path / "run"))
    values.update(overrides)
    return RunConfig(**values)


def _train(model, config, examples, log=None):
    lora.enable_lora(model, lora.LoraConfig.from_run(config))
    return training.train(model, config, examples["train"], examples["validation"],
                          log=log or (lambda line: None))


def _accumulator(folder):
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return accumulator


def _session_hparams(accumulator) -> dict:
    from tensorboard.plugins.hparams import metadata

    content = accumulator.PluginTagToContent(metadata.PLUGIN_NAME)
    data = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    return {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
            for name, value in data.hparams.items()}


def test_a_run_writes_scalars_hparams_and_test_metrics_that_tensorboard_reads(
        tiny_causal_lm, color_examples, tmp_path):
    config = _config(tmp_path)
    assert config.report_to == "tensorboard"  # the default
    result = _train(tiny_causal_lm, config, color_examples)
    report.write_metrics(config, {"tuned": {"exact_match": 0.75, "loss": 0.5,
                                            "predictions": ["red"]},
                                  "steps": result.steps, "stopped_early": False})
    accumulator = _accumulator(tracking.tensorboard_dir(config))
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/gradient_norm",
            "train/tokens_per_second", "val/loss", "test/tuned/exact_match"} <= tags
    losses = accumulator.Scalars("train/loss")
    assert [event.step for event in losses] == list(range(1, 7))
    history = {row["step"]: row for row in result.history}
    for event in losses:
        assert event.value == pytest.approx(history[event.step]["loss"], rel=1e-6)
    learning_rates = [event.value for event in accumulator.Scalars("train/learning_rate")]
    assert learning_rates == pytest.approx([history[s]["learning_rate"] for s in range(1, 7)])
    assert all(event.value > 0 for event in accumulator.Scalars("train/gradient_norm"))
    assert all(event.value > 0 for event in accumulator.Scalars("train/tokens_per_second"))
    validation = [(event.step, event.value) for event in accumulator.Scalars("val/loss")]
    assert validation == [(row["step"], pytest.approx(row["val_loss"], rel=1e-6))
                          for row in result.history if row["val_loss"] is not None]
    assert [step for step, _ in validation] == [0, 3, 6]
    (test_metric,) = accumulator.Scalars("test/tuned/exact_match")
    assert (test_metric.step, test_metric.value) == (6, 0.75)
    assert "test/tuned/predictions" not in tags
    hparams = _session_hparams(accumulator)
    assert hparams["rank"] == 4 and hparams["learning_rate"] == pytest.approx(3e-2)
    assert hparams["target_layers"] == '["query", "value"]' and hparams["quantize"] == "None"
    assert hparams["use_rslora"] is False and "run_dir" not in hparams


def test_report_to_none_writes_no_tensorboard_folder(tiny_causal_lm, color_examples, tmp_path):
    config = _config(tmp_path, max_steps=2, eval_every=2, report_to=None)
    _train(tiny_causal_lm, config, color_examples)
    report.write_metrics(config, {"steps": 2})
    assert not tracking.tensorboard_dir(config).exists()


def test_report_to_is_checked():
    with pytest.raises(ConfigError, match="report_to must be one of"):
        RunConfig(report_to="mlflow")


def test_a_resumed_run_purges_the_steps_it_runs_again(tmp_path):
    config = _config(tmp_path)
    with tracking.open_tracker(config) as tracker:
        tracker.log_hparams(tracking.hparams_of(config))
        for step in range(1, 6):
            tracker.log_scalars(step, {"train/loss": 10.0 + step})
    with tracking.open_tracker(config) as tracker:  # resumed from the checkpoint at step 3
        tracker.log_hparams(tracking.hparams_of(config), start_step=3)
        for step in range(4, 7):
            tracker.log_scalars(step, {"train/loss": float(step)})
    events = _accumulator(tracking.tensorboard_dir(config)).Scalars("train/loss")
    assert [(event.step, event.value) for event in events] == [
        (1, 11.0), (2, 12.0), (3, 13.0), (4, 4.0), (5, 5.0), (6, 6.0)]


class _FakeWandb(types.ModuleType):
    """Records what a tracker sends to `wandb` (no network, no account)."""

    def __init__(self):
        super().__init__("wandb")
        self.run, self.logged, self.finished = None, [], 0
        self.config = types.SimpleNamespace(update=lambda values, **kw: self.inits.append(values))
        self.inits = []

    def init(self, **options):
        self.inits.append(options)
        self.run = object()

    def log(self, values, step):
        self.logged.append((step, values))

    def finish(self):
        self.finished += 1
        self.run = None


def test_wandb_gets_the_same_numbers_when_installed(monkeypatch, tmp_path):
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = _config(tmp_path, report_to="wandb")
    with tracking.open_tracker(config) as tracker:
        tracker.log_scalars(1, {"train/loss": 2.0, "train/gradient_norm": None})
    tracking.log_final_results(config, {"steps": 6, "tuned": {"exact_match": 0.5}})
    assert fake.inits[0]["project"] == "gemma-lora" and fake.inits[0]["config"]["rank"] == 4
    assert fake.logged == [(1, {"train/loss": 2.0}),
                           (6, {"test/steps": 6.0, "test/tuned/exact_match": 0.5})]
    assert fake.finished == 1 and not tracking.tensorboard_dir(config).exists()


def test_wandb_without_the_package_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError, match=r"needs the wandb package \(pip install wandb"):
        tracking.open_tracker(_config(tmp_path, report_to="wandb"))


# === Progress ===


def test_headless_training_progress_is_plain_lines(tiny_causal_lm, color_examples, tmp_path,
                                                    monkeypatch, capfd):
    monkeypatch.delenv(progress.MODE_VARIABLE, raising=False)  # pytest's output is no terminal
    lines = []
    result = _train(tiny_causal_lm, _config(tmp_path), color_examples, log=lines.append)
    captured = capfd.readouterr()
    assert "\r" not in captured.out + captured.err + "".join(lines)
    assert all("\n" not in line for line in lines)
    train_lines = [line for line in lines if line.startswith("train ")]
    assert train_lines[0].startswith("train 1/6 | loss ") and train_lines[0].endswith("ETA ?")
    assert train_lines[-1].startswith("train 6/6 | loss ")
    assert " | lr " in train_lines[-1] and " tok/s | " in train_lines[-1]
    assert train_lines[-1].endswith("ETA 0m00s")
    assert len(train_lines) <= 3  # a line every 10 s, not one per step
    validation = [line for line in lines if "val_loss" in line and "ETA" in line]
    assert [line.split("/")[0].split()[-1] for line in validation] == ["3", "6"]
    assert result.steps == 6


def test_plain_lines_come_every_few_seconds(monkeypatch):
    clock = iter(range(0, 1000, 4))  # each update 4 s after the last
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)))
    lines = []
    with progress.Progress(10, "train", mode="lines", log=lines.append, every_seconds=10) as bar:
        for _ in range(10):
            bar.update(postfix="loss 1.0000")
    assert [line.split(" | ")[0] for line in lines] == [
        "train  1/10", "train  4/10", "train  7/10", "train 10/10"]
    assert lines[1] == "train  4/10 | loss 1.0000 | 4.00 s/step | ETA 0m24s"


def test_a_jupyter_kernel_gets_a_bar(monkeypatch):
    monkeypatch.delenv(progress.MODE_VARIABLE, raising=False)
    shell = types.SimpleNamespace(config={"IPKernelApp": {"connection_file": "kernel.json"}})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    assert progress.in_jupyter_kernel() and progress.progress_mode(io.StringIO()) == "bar"
    monkeypatch.setenv(progress.MODE_VARIABLE, "lines")  # what make run-notebooks sets
    assert progress.progress_mode() == "lines"
    monkeypatch.setenv(progress.MODE_VARIABLE, "loud")
    with pytest.raises(ConfigError, match="GEMMA_LORA_PROGRESS must be one of"):
        progress.progress_mode()


def test_bar_mode_draws_tqdm_and_keeps_written_lines_whole(capsys):
    written = []
    with progress.Progress(3, "train", mode="bar", log=written.append) as bar:
        for _ in range(3):
            bar.update(postfix="loss 1.0000 | lr 1.00e-03 | 99 tok/s")
        bar.write("step     3/3 | loss 1.0000 | val_loss 0.9000 *")
    drawn = capsys.readouterr().err
    assert "train" in drawn and "3/3" in drawn and "loss 1.0000 | lr 1.00e-03" in drawn
    assert written == ["step     3/3 | loss 1.0000 | val_loss 0.9000 *"]


def test_the_gguf_conversion_reports_its_stages_as_lines(monkeypatch, tmp_path, caplog):
    import logging

    from gemma_lora.models import gguf

    def convert(gguf_path, output_dir, dtype):
        output_dir.mkdir()
        (output_dir / "config.json").write_text("{}")

    monkeypatch.setenv(progress.MODE_VARIABLE, "lines")
    monkeypatch.setattr(gguf, "assemble_gguf", lambda folder: folder / "model.gguf")
    monkeypatch.setattr(gguf, "convert_gguf_to_preset", convert)
    with caplog.at_level(logging.INFO, logger=gguf.logger.name):
        preset = gguf.gemma3_270m_preset(cache_dir=tmp_path)
    stages = [record.getMessage() for record in caplog.records
              if record.getMessage().startswith("GGUF conversion")]
    assert [line.split(" | ")[:2] for line in stages] == [
        ["GGUF conversion 1/2", "GGUF file assembled, sha256 checked"],
        ["GGUF conversion 2/2", "dequantized and saved as a float32 KerasHub preset"]]
    assert (preset / "config.json").is_file()
