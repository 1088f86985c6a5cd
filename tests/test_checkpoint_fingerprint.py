"""A resume never mixes two runs: every training field and the data files' contents are fingerprinted."""

import dataclasses

import numpy as np
import pytest

from gemma_lora import lora
from gemma_lora import training
from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError
from gemma_lora.training import checkpoint

# A valid value other than the default, for every field that may be fingerprinted.
OTHER_VALUES = {
    "preset": "gemma3_1b", "dtype": "bfloat16", "data_path": "data/sentiment_train.jsonl",
    "data_fields": {"output": "answer"}, "data_categories": ["open_qa"],
    "test_data_path": "data/sentiment_test.jsonl", "instruction": "Classify.",
    "template": "gemma_chat", "validation_fraction": 0.1, "test_fraction": 0.2, "rank": 16,
    "alpha": 16.0, "target_layers": ["query"], "use_rslora": True, "dropout": 0.1,
    "rank_pattern": {"decoder_block_1/.*": 4}, "quantize": "int8", "sequence_length": 256,
    "batch_size": 8, "learning_rate": 5e-4, "weight_decay": 0.0, "warmup_steps": 5,
    "lr_schedule": "linear", "gradient_clip_norm": 0.5, "max_steps": 300, "epochs": 2.0,
    "eval_every": 10, "patience": 5, "seed": 1,
}


def _fingerprinted_fields(config_class=RunConfig) -> set[str]:
    return {field.name for field in dataclasses.fields(config_class)} - set(checkpoint.NOT_FINGERPRINTED)


def test_every_field_is_fingerprinted_unless_listed_as_harmless():
    fields = {field.name for field in dataclasses.fields(RunConfig)}
    assert set(checkpoint.NOT_FINGERPRINTED) <= fields  # no stale names in the list
    values = checkpoint.fingerprint(RunConfig())
    assert set(values) == _fingerprinted_fields() | {"data_path_sha256", "test_data_path_sha256"}
    assert set(OTHER_VALUES) == _fingerprinted_fields(), "give the new field a value in OTHER_VALUES"


def test_a_field_added_to_run_config_is_fingerprinted_without_touching_checkpoint_code():
    @dataclasses.dataclass
    class ExtendedConfig(RunConfig):
        label_smoothing: float = 0.0

    assert "label_smoothing" in _fingerprinted_fields(ExtendedConfig)
    before = checkpoint.fingerprint(ExtendedConfig())
    after = checkpoint.fingerprint(ExtendedConfig(label_smoothing=0.1))
    assert before["label_smoothing"] == 0.0 and after["label_smoothing"] == 0.1


@pytest.fixture
def saved_checkpoint(tmp_path):
    config = RunConfig(run_dir=str(tmp_path))
    checkpoint.save(tmp_path, 5, {"w": np.zeros(2, dtype="float32")},
                    {"fingerprint": checkpoint.fingerprint(config)}, keep=1)
    return checkpoint.latest(tmp_path)


@pytest.mark.parametrize("field", sorted(OTHER_VALUES))
def test_resuming_with_any_changed_training_field_is_refused_with_that_field_named(
        saved_checkpoint, field):
    changed = RunConfig(**{field: OTHER_VALUES[field]})
    with pytest.raises(ConfigError, match=rf"different configuration \({field}: checkpoint "):
        checkpoint.load(saved_checkpoint, checkpoint.fingerprint(changed))


@pytest.mark.parametrize("field", sorted(checkpoint.NOT_FINGERPRINTED))
def test_fields_that_cannot_change_training_do_not_block_a_resume(saved_checkpoint, field):
    other = {"run_dir": "elsewhere", "resume": True, "checkpoint_every": 7, "keep_checkpoints": 5,
             "reference_preset": "gemma3_1b", "max_new_tokens": 8, "eval_batch_size": 2,
             "num_samples": 1, "packing": True, "loss_chunk_size": 64, "data_parallel": 1,
             "model_parallel": 1, "coordinator_address": "auto",
             "num_processes": 2, "process_id": 1, "temperature": 0.7, "top_k": 40, "top_p": 0.9,
             "report_to": None}
    extra = {"num_processes": {"process_id": 1}, "process_id": {"num_processes": 2}}
    config = RunConfig(**{field: other[field], **extra.get(field, {})})
    arrays, state = checkpoint.load(saved_checkpoint, checkpoint.fingerprint(config))
    assert state["fingerprint"] == checkpoint.fingerprint(RunConfig())
    np.testing.assert_array_equal(arrays["w"], np.zeros(2))


@pytest.mark.parametrize("field", ["data_path", "test_data_path"])
def test_a_changed_data_file_is_refused(tmp_path, field):
    data = tmp_path / "data.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n', encoding="utf-8")
    config = RunConfig(run_dir=str(tmp_path / "run"), **{field: str(data)})
    checkpoint.save(config.run_dir, 5, {"w": np.zeros(2)},
                    {"fingerprint": checkpoint.fingerprint(config)}, keep=1)
    data.write_text('{"instruction": "a", "output": "c"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"\({field}_sha256: checkpoint '[0-9a-f]{{64}}', now"):
        checkpoint.load(checkpoint.latest(config.run_dir), checkpoint.fingerprint(config))


def test_a_checkpoint_of_an_older_version_is_refused_with_what_it_lacks(tmp_path):
    old = {key: value for key, value in checkpoint.fingerprint(RunConfig()).items()
           if key not in ("dropout", "use_rslora", "test_data_path_sha256")}
    checkpoint.save(tmp_path, 5, {"w": np.zeros(2)}, {"fingerprint": old}, keep=1)
    with pytest.raises(ConfigError, match="older gemma_lora that did not record dropout, "
                                          "test_data_path_sha256, use_rslora"):
        checkpoint.load(checkpoint.latest(tmp_path), checkpoint.fingerprint(RunConfig()))


# === Through train(resume=True): refused before any step runs ===


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_tokenizer_proto, color_examples):
    """A tiny run of 2 steps whose checkpoint every resume attempt below starts from.

    Its training fields are the defaults except those that keep it short; each
    differs from its `OTHER_VALUES` entry. Its data files are written here.
    """
    from gemma_lora.testing import build_tiny_gemma3

    folder = tmp_path_factory.mktemp("trained")
    files = {"data_path": folder / "train.jsonl", "test_data_path": folder / "test.jsonl"}
    for name, path in files.items():
        path.write_text(f'{{"instruction": "{name}", "output": "b"}}\n', encoding="utf-8")
    config = RunConfig(max_steps=2, eval_every=2, sequence_length=48, eval_batch_size=8,
                       run_dir=str(folder / "run"), **{k: str(v) for k, v in files.items()})
    assert all(getattr(config, field) != value for field, value in OTHER_VALUES.items())
    model = build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48)
    lora.enable_lora(model, lora.LoraConfig.from_run(config))
    examples = {split: {key: values[:8] for key, values in color_examples[split].items()}
                for split in ("train", "validation")}
    training.train(model, config, examples["train"], examples["validation"], log=lambda line: None)
    assert checkpoint.latest(config.run_dir).name == "step-000002"
    return model, dataclasses.replace(config, resume=True), examples, files


def resume(trained_run, **changes) -> None:
    model, config, examples, _ = trained_run
    training.train(model, dataclasses.replace(config, **changes), examples["train"],
                   examples["validation"], log=lambda line: None)


def test_train_resumes_the_unchanged_run(trained_run):
    resume(trained_run)  # the control: nothing differs, nothing is refused (and nothing to run)
    assert checkpoint.latest(trained_run[1].run_dir).name == "step-000002"


@pytest.mark.parametrize("field", sorted(OTHER_VALUES))
def test_train_refuses_to_resume_with_any_changed_training_field(trained_run, field):
    with pytest.raises(ConfigError, match=rf"different configuration \({field}: checkpoint "):
        resume(trained_run, **{field: OTHER_VALUES[field]})


@pytest.mark.parametrize("field", ["data_path", "test_data_path"])
def test_train_refuses_to_resume_after_a_data_file_changed(trained_run, field):
    path = trained_run[3][field]
    original = path.read_bytes()
    path.write_bytes(original.replace(b'"b"', b'"c"'))
    try:
        with pytest.raises(ConfigError, match=rf"different configuration \({field}_sha256: "
                                              r"checkpoint '[0-9a-f]{64}', now '[0-9a-f]{64}'\)"):
            resume(trained_run)
    finally:
        path.write_bytes(original)
