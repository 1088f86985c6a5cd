"""`LoraConfig`: validation, one meaning of alpha, and the adapter config it is saved in."""

import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from gemma_lora import lora
from gemma_lora import models
from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError
from gemma_lora.errors import ModelError
from gemma_lora.lora import LoraConfig
from gemma_lora.testing import build_tiny_gemma3

FIXTURES = Path(__file__).parent / "fixtures"
# Written by save_adapter before LoraConfig existed (see its README.md).
ADAPTER_V0 = FIXTURES / "adapter_v0_1"


def _fresh(tiny_tokenizer_proto):
    return build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48, seed=0)


def _logits(model, text="Please send one red mug."):
    x = model.preprocessor.generate_preprocess([text], sequence_length=16)
    return np.asarray(model.backbone(x))


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for variable in model.trainable_weights:
        variable.assign(rng.normal(size=variable.shape).astype("float32") * 0.1)


# === The config itself ===


def test_scale_is_alpha_over_rank_or_over_its_square_root():
    assert LoraConfig(rank=4, alpha=8).scale == 2.0
    assert LoraConfig(rank=4, alpha=8, use_rslora=True).scale == 4.0
    assert LoraConfig(rank=16, alpha=None).scale == 1.0  # alpha None means alpha = rank
    assert LoraConfig(rank=16, alpha=None, use_rslora=True).scale == 4.0
    assert LoraConfig(rank=8).scale == RunConfig().alpha / 8  # RunConfig's default alpha
    config = LoraConfig(rank=4, alpha=8, use_rslora=True, rank_pattern={".*/key": 16})
    assert config.rank_for("decoder_block_0/attention/key") == 16
    assert config.rank_for("decoder_block_0/attention/query") == 4
    assert config.scale_for(16) == 2.0  # the same alpha, the layer's own rank


def test_defaults_and_from_run_match_run_config():
    assert LoraConfig.from_run(RunConfig()) == LoraConfig()  # one default per parameter
    for field in dataclasses.fields(LoraConfig):
        assert field.metadata["help"]
        assert getattr(LoraConfig(), field.name) == getattr(RunConfig(), field.name)
    run = RunConfig(rank=4, alpha=16, target_layers="query,key", use_rslora=True, dropout=0.1,
                    rank_pattern='{".*/key": 8}')
    assert LoraConfig.from_run(run) == LoraConfig(
        rank=4, alpha=16, target_layers=("query", "key"), use_rslora=True, dropout=0.1,
        rank_pattern={".*/key": 8})


def test_dict_round_trip_and_unknown_keys():
    config = LoraConfig(rank=4, alpha=8, target_layers="all-linear", use_rslora=True,
                        dropout=0.05, rank_pattern={"decoder_block_1/.*": 2})
    assert config.target_layers == ("all-linear",)  # one string is one entry
    values = json.loads(json.dumps(config.to_dict()))
    assert LoraConfig.from_dict(values) == config
    with pytest.raises(ConfigError, match=r"Unknown LoRA parameter\(s\) \['r'\]"):
        LoraConfig.from_dict({"r": 4})
    assert LoraConfig(rank_pattern={}).rank_pattern is None


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("rank", 0, "rank must be an integer >= 1; got 0."),
        ("rank", 2.5, "rank must be an integer >= 1; got 2.5."),
        ("rank", True, "rank must be an integer >= 1; got True."),
        ("alpha", 0, "alpha must be a number > 0; got 0."),
        ("alpha", "16", "alpha must be a number > 0; got '16'."),
        ("use_rslora", "yes", "use_rslora must be True or False; got 'yes'."),
        ("dropout", 1.0, "dropout must be a number in [0, 1); got 1.0."),
        ("rank_pattern", {"x": "big"}, "rank_pattern['x'] must be an integer >= 1; got 'big'."),
        ("rank_pattern", {"x": 0}, "rank_pattern['x'] must be an integer >= 1; got 0."),
        ("rank_pattern", [("x", 2)], "rank_pattern must be a mapping like"),
        ("target_layers", (), "target_layers must name at least one layer."),
    ],
)
def test_a_wrong_field_is_named_as_run_config_names_it(field, value, message):
    with pytest.raises(ConfigError) as lora_error:
        LoraConfig(**{field: value})
    assert message in str(lora_error.value)
    with pytest.raises(ConfigError) as run_error:
        RunConfig(**{field: value})
    assert str(run_error.value) == str(lora_error.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_layers": ("(",)}, "target_layers entry '(' is not a valid pattern"),
        ({"target_layers": ("query", 3)}, "target_layers must be a layer name or a list"),
        ({"rank_pattern": {"[": 2}}, "rank_pattern key '[' is not a valid pattern"),
    ],
)
def test_bad_patterns_are_refused_on_creation(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        LoraConfig(**kwargs)


# === Saved with the adapter, read back ===

ROUND_TRIPS = [
    LoraConfig(rank=4, alpha=8),
    LoraConfig(rank=2),
    LoraConfig(rank=2, alpha=None),
    LoraConfig(rank=4, alpha=8, target_layers=("decoder_block_1/attention/(query|key)", "ffw_linear"),
               use_rslora=True, dropout=0.1, rank_pattern={".*/key": 8, "decoder_block_0/.*": 2}),
    LoraConfig(rank=3, alpha=5.5, target_layers="all-linear", use_rslora=True),
]


@pytest.mark.parametrize("config", ROUND_TRIPS, ids=range(len(ROUND_TRIPS)))
def test_enable_save_load_round_trips_the_config_and_the_outputs(
        config, tiny_causal_lm, tiny_tokenizer_proto, tmp_path):
    lora.enable_lora(tiny_causal_lm, config)
    _randomize(tiny_causal_lm)
    folder = lora.save_adapter(tiny_causal_lm, tmp_path / "adapter", base_preset="tiny",
                               template="alpaca")
    assert LoraConfig.from_adapter(folder) == config
    fresh = _fresh(tiny_tokenizer_proto)
    lora.load_adapter(fresh, folder)  # nothing but the folder
    np.testing.assert_array_equal(_logits(fresh), _logits(tiny_causal_lm))
    assert lora.model_lora_config(fresh) == config
    assert {(l.path, l.lora_rank, l.lora_alpha, getattr(l, "lora_dropout", 0.0))
            for l in lora.lora_layers(fresh)} == {
        (l.path, l.lora_rank, l.lora_alpha, getattr(l, "lora_dropout", 0.0))
        for l in lora.lora_layers(tiny_causal_lm)}
    again = lora.save_adapter(fresh, tmp_path / "again", base_preset="tiny", template="alpaca")
    assert lora.read_adapter_config(again) == lora.read_adapter_config(folder)


def test_adapter_config_has_one_meaning_of_alpha(tiny_causal_lm, tmp_path):
    config = LoraConfig(rank=4, alpha=8, use_rslora=True, rank_pattern={".*/value": 16})
    lora.enable_lora(tiny_causal_lm, config)
    folder = lora.save_adapter(tiny_causal_lm, tmp_path / "adapter", base_preset="tiny",
                               template="gemma_chat")
    saved = json.loads((folder / lora.ADAPTER_CONFIG).read_text())
    assert saved["format_version"] == 1
    assert (saved["rank"], saved["alpha"], saved["use_rslora"]) == (4, 8, True)  # the user's
    # Keras' per-layer lora_alpha is scale * rank, recorded under its own name.
    layers = saved["layers"]
    assert layers["decoder_block_0/attention/query"] == {"rank": 4, "keras_lora_alpha": 8 / 2 * 4}
    assert layers["decoder_block_0/attention/value"] == {"rank": 16, "keras_lora_alpha": 8 / 4 * 16}
    assert not any("alpha" in spec for spec in layers.values())
    assert saved["template"] == "gemma_chat" and saved["dtype"] == "float32"
    assert saved["quantize"] is None and saved["source"] is None
    assert saved["base_preset"] == "tiny" and saved["architecture"]["hidden_dim"] == 32


def test_adapter_config_records_the_source_dtype_and_quantization(tiny_tokenizer_proto, tmp_path):
    model = build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48, dtype="bfloat16")
    models.record_source(model, "gemma3_270m (Kaggle)")
    models.quantize_base(model, "int8")
    lora.enable_lora(model, LoraConfig(rank=2))
    saved = lora.read_adapter_config(lora.save_adapter(model, tmp_path / "adapter"))
    assert saved["source"] == "gemma3_270m (Kaggle)"
    assert saved["base_preset"] == "gemma3_270m (Kaggle)"  # None: the source
    assert (saved["dtype"], saved["quantize"]) == ("bfloat16", "int8")


def test_loading_onto_a_model_from_another_source_warns_with_both_names(
        tiny_causal_lm, tiny_tokenizer_proto, tmp_path, caplog):
    models.record_source(tiny_causal_lm, "gemma3_270m (Kaggle)")
    lora.enable_lora(tiny_causal_lm, LoraConfig(rank=2))
    folder = lora.save_adapter(tiny_causal_lm, tmp_path / "adapter", "gemma3_270m")
    same = _fresh(tiny_tokenizer_proto)
    models.record_source(same, "gemma3_270m (Kaggle)")
    with caplog.at_level(logging.WARNING, logger="gemma_lora.lora.adapter"):
        lora.load_adapter(same, folder)
    assert not caplog.records
    other = _fresh(tiny_tokenizer_proto)
    models.record_source(other, "gemma3_270m_pypi (GGUF Q4_K_M)")
    with caplog.at_level(logging.WARNING, logger="gemma_lora.lora.adapter"):
        lora.load_adapter(other, folder)
    (record,) = caplog.records
    assert "gemma3_270m (Kaggle)" in record.getMessage()
    assert "gemma3_270m_pypi (GGUF Q4_K_M)" in record.getMessage()


def test_config_saved_alone_reads_back_but_is_not_an_adapter(tiny_causal_lm, tmp_path):
    config = LoraConfig(rank=4, alpha=2, dropout=0.2)
    config.save(tmp_path / "only_config")
    assert LoraConfig.from_adapter(tmp_path / "only_config") == config
    with pytest.raises(ModelError, match="a LoRA config without an adapter"):
        lora.load_adapter(tiny_causal_lm, tmp_path / "only_config")


def test_save_keeps_what_save_adapter_recorded(tiny_causal_lm, tmp_path):
    lora.enable_lora(tiny_causal_lm, LoraConfig(rank=2, dropout=0.1))
    folder = lora.save_adapter(tiny_causal_lm, tmp_path / "adapter", base_preset="tiny")
    LoraConfig(rank=2, dropout=0.0).save(folder)  # e.g. to train it further without dropout
    saved = lora.read_adapter_config(folder)
    assert saved["dropout"] == 0.0 and saved["base_preset"] == "tiny" and "layers" in saved


def test_bad_adapter_config_values_name_the_file_and_the_field(tiny_causal_lm, tmp_path):
    lora.enable_lora(tiny_causal_lm, LoraConfig(rank=2))
    folder = lora.save_adapter(tiny_causal_lm, tmp_path / "adapter", base_preset="tiny")
    values = json.loads((folder / lora.ADAPTER_CONFIG).read_text())
    (folder / lora.ADAPTER_CONFIG).write_text(json.dumps({**values, "rank_pattern": {"x": "big"}}))
    with pytest.raises(ModelError, match=r"adapter_config.json: rank_pattern\['x'\] must be an integer"):
        LoraConfig.from_adapter(folder)
    (folder / lora.ADAPTER_CONFIG).write_text(json.dumps({**values, "format_version": 9}))
    with pytest.raises(ModelError, match="format_version 9"):
        lora.load_adapter(tiny_causal_lm, folder)


def test_a_peft_adapter_folder_points_to_import_peft_adapter(tiny_causal_lm, tmp_path):
    (tmp_path / lora.ADAPTER_CONFIG).write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    with pytest.raises(ModelError, match="import_peft_adapter"):
        lora.load_adapter(tiny_causal_lm, tmp_path)


# === Adapters written before LoraConfig (format 0) ===


def test_an_adapter_written_by_the_previous_code_still_loads(tiny_causal_lm, tmp_path):
    from safetensors.numpy import load_file

    summary = lora.load_adapter(tiny_causal_lm, ADAPTER_V0)
    assert len(summary.lora_layers) == 4
    saved = load_file(str(ADAPTER_V0 / lora.ADAPTER_WEIGHTS))
    weights = lora.lora_weights(tiny_causal_lm)
    assert sorted(weights) == sorted(saved)
    for key, value in saved.items():
        np.testing.assert_array_equal(weights[key], value)
    for layer in lora.lora_layers(tiny_causal_lm):
        assert (layer.lora_rank, layer.lora_alpha / layer.lora_rank) == (2, 2.0)  # alpha 4
        assert layer.lora_dropout == pytest.approx(0.1)
    # Format 0's "alpha" was Keras' lora_alpha (scale * rank); without rsLoRA, the user's alpha.
    expected = LoraConfig(rank=2, alpha=4.0, target_layers=("query", "value"), dropout=0.1)
    assert LoraConfig.from_adapter(ADAPTER_V0) == expected
    assert lora.model_lora_config(tiny_causal_lm) == expected
    config = lora.read_adapter_config(ADAPTER_V0)
    assert config["format_version"] == 1 and config["base_preset"] == "tiny"
    assert config["layers"]["decoder_block_0/attention/query"] == {"rank": 2, "keras_lora_alpha": 4.0}
    assert (config["source"], config["dtype"], config["quantize"], config["template"]) == (None,) * 4
    # Saved again, it is a format-1 adapter with the same config and weights.
    again = lora.save_adapter(tiny_causal_lm, tmp_path / "again", base_preset="tiny")
    assert LoraConfig.from_adapter(again) == expected
    assert json.loads((again / lora.ADAPTER_CONFIG).read_text())["format_version"] == 1


def test_format_0_with_per_layer_ranks_recovers_rank_pattern_and_rslora(tmp_path):
    old = json.loads((ADAPTER_V0 / lora.ADAPTER_CONFIG).read_text())
    # rsLoRA, alpha 4: Keras' lora_alpha = alpha / sqrt(r) * r = 4 * sqrt(r).
    old["layers"]["decoder_block_1/attention/value"] = {"rank": 8, "alpha": 4 * math.sqrt(8)}
    for path in ("decoder_block_0/attention/query", "decoder_block_0/attention/value",
                 "decoder_block_1/attention/query"):
        old["layers"][path] = {"rank": 2, "alpha": 4 * math.sqrt(2)}
    old["alpha"] = 4 * math.sqrt(2)
    folder = tmp_path / "old"
    shutil.copytree(ADAPTER_V0, folder)
    (folder / lora.ADAPTER_CONFIG).write_text(json.dumps(old))
    config = LoraConfig.from_adapter(folder)
    assert config.use_rslora and config.alpha == pytest.approx(4.0)
    assert config.rank == 2 and config.rank_pattern == {"decoder_block_1/attention/value": 8}
    assert config.scale_for(8) * 8 == pytest.approx(4 * math.sqrt(8))
