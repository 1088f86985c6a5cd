"""Tests of `gemma_lora.preflight`: every mistake is caught before training starts."""

import collections
import json
import types
from pathlib import Path

import pytest

from gemma_lora import data
from gemma_lora import lora
from gemma_lora.runs import preflight
from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError
from gemma_lora.errors import ModelError

ROW = {"instruction": "Which color?", "input": "one red mug", "output": "red"}
DiskUsage = collections.namedtuple("DiskUsage", "total used free")


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(ROW) + "\n" for _ in range(20)))
    return path


@pytest.fixture
def config(tmp_path, data_file):
    """A valid config needing no download: the offline preset is only named, not loaded."""
    return RunConfig(preset="gemma3_270m_pypi", data_path=str(data_file),
                     run_dir=str(tmp_path / "runs" / "one"))


def run_error(config, error_type=ConfigError, **changes):
    """The message of the error `check_run` raises for `config` with `changes`."""
    with pytest.raises(error_type) as info:
        preflight.check_run(RunConfig.from_dict({**config.to_dict(), **changes}))
    return str(info.value)


# === check_run ===


def test_good_config_passes_and_creates_the_run_folder(config, tmp_path):
    preflight.check_run(config)
    assert (tmp_path / "runs" / "one").is_dir()
    assert list((tmp_path / "runs" / "one").iterdir()) == []  # the probe file is gone


@pytest.mark.parametrize("name, split", [("validation_fraction", "validation"),
                                         ("test_fraction", "test")])
def test_empty_held_out_split(config, name, split):
    message = run_error(config, **{name: 0.0})
    assert message.startswith(f"{name}=0.0 leaves the {split} split empty, but the run uses it")


def test_separate_test_file_needs_no_test_fraction(config, data_file, tmp_path):
    message = run_error(config, test_fraction=0.0)
    assert message.startswith("test_fraction=0.0 leaves the test split")
    with_file = RunConfig.from_dict(
        {**config.to_dict(), "test_fraction": 0.0, "test_data_path": str(data_file)})
    preflight.check_run(with_file)
    assert (tmp_path / "runs" / "one").is_dir()  # the last check, on run_dir, was reached
    assert len(data.load_splits(with_file).test) == 20  # the test split is the file


def test_missing_separate_test_file(config, tmp_path):
    message = run_error(config, DataError, test_data_path=str(tmp_path / "test.jsonl"))
    assert message == f"{tmp_path / 'test.jsonl'}: file not found."


def test_unknown_reference_preset(config):
    message = run_error(config, ModelError, reference_preset="gemma3_1")
    assert "Unknown preset 'gemma3_1'" in message


def test_missing_data_file(config, tmp_path):
    message = run_error(config, DataError, data_path=str(tmp_path / "nope.jsonl"))
    assert message == f"{tmp_path / 'nope.jsonl'}: file not found."


def test_malformed_record_names_file_line_and_field(config, data_file):
    with data_file.open("a") as file:
        file.write('{"instruction": "x", "output": 3}\n')
    message = run_error(config, DataError)
    assert message.startswith(f"{data_file}:21: field 'output' is a number (3)")


def test_wrong_data_fields(config):
    message = run_error(config, DataError, data_fields={"output": "response"})
    assert "field 'response' (the output) is missing" in message
    assert "leave data_fields unset" in message


def test_too_few_records_for_the_splits(config, data_file):
    data_file.write_text(json.dumps(ROW) + "\n" + json.dumps(ROW) + "\n")
    assert "2 records are too few" in run_error(config, DataError)


def test_missing_local_preset(config, tmp_path):
    message = run_error(config, ModelError, preset=str(tmp_path / "my_model"))
    assert message.startswith(f"Preset folder '{tmp_path / 'my_model'}' does not exist")


def test_unknown_preset_name_suggests_close_ones(config):
    message = run_error(config, ModelError, preset="gemma3_270")
    assert "Unknown preset 'gemma3_270'" in message and "gemma3_270m" in message


def test_run_dir_that_cannot_be_created(config, data_file):
    message = run_error(config, run_dir=str(data_file / "run"))
    assert message.startswith(f"run_dir='{data_file / 'run'}' cannot be created or written")


def test_not_enough_free_space(config, monkeypatch):
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: DiskUsage(10**9, 0, 5 * 10**6))
    message = run_error(config)
    assert message.startswith(f"run_dir='{config.run_dir}' has 5 MB free but this run needs "
                              "about 105 MB")


# === check_model ===


@pytest.fixture
def lora_model(tiny_causal_lm):
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, target_layers=("query", "value")))
    return tiny_causal_lm


def test_tiny_model_passes_at_the_context_and_disk_limits(config, lora_model, monkeypatch):
    needed = preflight.required_disk_bytes(config, lora_model)
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: DiskUsage(0, 0, needed))
    longest = preflight.context_length(lora_model) - config.max_new_tokens
    preflight.check_model(RunConfig.from_dict({**config.to_dict(), "sequence_length": longest}),
                          lora_model)  # exactly the context, exactly the free space needed
    assert Path(config.run_dir).is_dir()
    with pytest.raises(ConfigError, match="sequence_length \\+ max_new_tokens"):
        preflight.check_model(RunConfig.from_dict(
            {**config.to_dict(), "sequence_length": longest + 1}), lora_model)


def test_disk_estimate_counts_checkpoints_of_this_adapter(config, lora_model):
    lora_weights = lora.parameter_summary(lora_model).trainable
    expected = preflight.MIN_FREE_BYTES + ((2 + 1) * 4 + 2) * lora_weights * 4
    assert config.keep_checkpoints == 2
    assert preflight.required_disk_bytes(config, lora_model) == expected


def test_disk_estimate_is_checked_against_the_run_folder(config, lora_model, monkeypatch):
    needed = preflight.required_disk_bytes(config, lora_model)
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: DiskUsage(0, 0, needed - 1))
    with pytest.raises(ConfigError, match="has .* MB free but this run needs"):
        preflight.check_model(config, lora_model)


def test_sequence_length_beyond_gemma3_context(config, lora_model):
    too_long = RunConfig.from_dict({**config.to_dict(), "sequence_length": 40_000})
    with pytest.raises(ConfigError) as info:
        preflight.check_model(too_long, lora_model)
    assert str(info.value) == (
        "sequence_length=40000 exceeds the 32,768 tokens this model (Gemma3CausalLM) "
        "handles; use at most 32768."
    )


def test_generation_beyond_the_context(config, lora_model):
    values = {**config.to_dict(), "sequence_length": 32_768, "max_new_tokens": 48}
    with pytest.raises(ConfigError, match="sequence_length \\+ max_new_tokens = 32768 \\+ 48"):
        preflight.check_model(RunConfig.from_dict(values), lora_model)


def test_model_without_preprocessor(config):
    with pytest.raises(ModelError, match="has no preprocessor"):
        preflight.check_model(config, types.SimpleNamespace(preprocessor=None, weights=[]))


def test_context_length_by_architecture(tiny_causal_lm):
    assert preflight.context_length(tiny_causal_lm) == preflight.GEMMA3_CONTEXT
    tiny_causal_lm.backbone.global_rope_scaling_factor = 8.0  # as in Gemma 3 4B and larger
    assert preflight.context_length(tiny_causal_lm) == preflight.GEMMA3_LONG_CONTEXT
    learned_positions = types.SimpleNamespace(backbone=types.SimpleNamespace(max_sequence_length=1024))
    assert preflight.context_length(learned_positions) == 1024
    assert preflight.context_length(types.SimpleNamespace(backbone=object())) is None


@pytest.mark.real_model
def test_real_gemma3_270m_has_the_32k_context(real_causal_lm):
    assert real_causal_lm.backbone.global_rope_scaling_factor == 1.0
    assert preflight.context_length(real_causal_lm) == 32_768
