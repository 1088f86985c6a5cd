import json

import numpy as np
import pytest

from gemma_lora import lora
from gemma_lora.errors import ConfigError
from gemma_lora.errors import ModelError
from gemma_lora.testing import build_tiny_gemma3


def _logits(model, text="Please send one red mug."):
    x = model.preprocessor.generate_preprocess([text], sequence_length=16)
    return np.asarray(model.backbone(x))


def test_enable_lora_freezes_everything_but_the_adapter(tiny_causal_lm):
    summary = lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8, target_layers=("query", "value")))
    # Keras factors a (heads, width, head_dim) kernel as A (heads, width, r)
    # @ B (r, head_dim): query has 2 heads, value 1, width 32, head_dim 16.
    expected = 2 * ((2 * 32 * 4 + 4 * 16) + (1 * 32 * 4 + 4 * 16))
    assert summary.trainable == expected
    assert summary.total == sum(int(np.prod(w.shape)) for w in tiny_causal_lm.weights)
    assert sorted(summary.lora_layers) == [
        "decoder_block_0/attention/query", "decoder_block_0/attention/value",
        "decoder_block_1/attention/query", "decoder_block_1/attention/value",
    ]
    assert all("lora_kernel" in w.path for w in tiny_causal_lm.trainable_weights)
    assert "trainable%" in str(summary)


def test_alpha_sets_the_layer_scale(tiny_causal_lm):
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=16, target_layers=("key",)))
    layer = next(l for l in tiny_causal_lm.backbone._flatten_layers() if l.name == "key")
    a = np.asarray(layer.lora_kernel_a)
    layer.lora_kernel_b.assign(np.ones(layer.lora_kernel_b.shape, "float32"))
    expected = np.asarray(layer._kernel) + (16 / 4) * np.matmul(a, np.ones(layer.lora_kernel_b.shape))
    np.testing.assert_allclose(np.asarray(layer.kernel), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rank": 4, "target_layers": ("qurey",)}, "target_layers entry 'qurey' matches no layer"),
        ({"rank": 4, "target_layers": ("decoder_block_9/.*",)}, "entry 'decoder_block_9/.*' matches no layer"),
        ({"rank": 17}, "rank 17 is larger than the smaller dimension (16) of layer decoder_block_0/attention/value"),
        ({"rank": 4, "rank_pattern": {".*value": 32}}, "rank 32 is larger than the smaller dimension (16)"),
    ],
)
def test_lora_configs_that_do_not_fit_the_model(tiny_causal_lm, kwargs, message):
    with pytest.raises(ConfigError) as error:
        lora.enable_lora(tiny_causal_lm, lora.LoraConfig(**kwargs))
    assert message in str(error.value)
    assert not lora.lora_layers(tiny_causal_lm)  # nothing was changed


def test_enable_lora_takes_a_lora_config(tiny_causal_lm):
    with pytest.raises(ConfigError, match=r"enable_lora takes a LoraConfig.*got 8"):
        lora.enable_lora(tiny_causal_lm, 8)


def test_enabling_twice_is_refused(tiny_causal_lm):
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=2))
    with pytest.raises(ConfigError, match="already enabled"):
        lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=2))


def _trained_adapter(model, tmp_path):
    lora.enable_lora(model, lora.LoraConfig(rank=4, alpha=8))
    rng = np.random.default_rng(0)
    for variable in model.trainable_weights:
        variable.assign(rng.normal(size=variable.shape).astype("float32") * 0.1)
    return lora.save_adapter(model, tmp_path / "adapter", base_preset="tiny")


def test_adapter_round_trip_gives_identical_logits(tiny_causal_lm, tiny_tokenizer_proto, tmp_path):
    folder = _trained_adapter(tiny_causal_lm, tmp_path)
    config = json.loads((folder / lora.ADAPTER_CONFIG).read_text())
    assert config["rank"] == 4 and config["alpha"] == 8.0 and config["base_preset"] == "tiny"
    assert config["target_layers"] == ["query", "value"]
    fresh = build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48, seed=0)
    assert not np.allclose(_logits(fresh), _logits(tiny_causal_lm))
    lora.load_adapter(fresh, folder)
    np.testing.assert_array_equal(_logits(fresh), _logits(tiny_causal_lm))


def test_adapter_is_keyed_by_layer_path(tiny_causal_lm, tmp_path):
    from safetensors.numpy import load_file

    folder = _trained_adapter(tiny_causal_lm, tmp_path)
    keys = sorted(load_file(str(folder / lora.ADAPTER_WEIGHTS)))
    assert keys[0] == "decoder_block_0/attention/query/lora_kernel_a"
    assert len(keys) == 8


def test_adapter_for_another_architecture_is_refused(tiny_causal_lm, tiny_tokenizer_proto, tmp_path):
    folder = _trained_adapter(tiny_causal_lm, tmp_path)
    wider = build_tiny_gemma3(tiny_tokenizer_proto, hidden_dim=64)
    with pytest.raises(ModelError, match="was made for .*'hidden_dim': 32.*but the model is"):
        lora.load_adapter(wider, folder)


def test_adapter_of_another_rank_is_refused(tiny_causal_lm, tiny_tokenizer_proto, tmp_path):
    folder = _trained_adapter(tiny_causal_lm, tmp_path)
    other = build_tiny_gemma3(tiny_tokenizer_proto)
    lora.enable_lora(other, lora.LoraConfig(rank=2, alpha=8))
    with pytest.raises(ModelError, match=r"needs LoRA with other ranks, alphas or layers.*\(4, 8.0\)"):
        lora.load_adapter(other, folder)


def test_missing_adapter_folder(tiny_causal_lm, tmp_path):
    with pytest.raises(ModelError, match="is not an adapter folder: adapter_config.json is missing"):
        lora.load_adapter(tiny_causal_lm, tmp_path)


def test_save_without_lora_is_refused(tiny_causal_lm, tmp_path):
    with pytest.raises(ModelError, match="has no LoRA layers"):
        lora.save_adapter(tiny_causal_lm, tmp_path / "adapter", base_preset="tiny")


def test_adapter_is_a_small_fraction_of_the_model(tiny_causal_lm, tmp_path):
    folder = _trained_adapter(tiny_causal_lm, tmp_path)
    adapter_bytes = (folder / lora.ADAPTER_WEIGHTS).stat().st_size
    model_bytes = 4 * sum(int(np.prod(w.shape)) for w in tiny_causal_lm.weights)
    assert adapter_bytes < 0.1 * model_bytes


def _layer(model, path):
    return next(l for l in model.backbone._flatten_layers() if l.path == path)


@pytest.mark.parametrize("use_rslora, scale", [(False, 16 / 4), (True, 16 / 2)])
def test_alpha_and_rslora_scaling_match_a_hand_computation(tiny_causal_lm, use_rslora, scale):
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=16, target_layers=("ffw_linear",), use_rslora=use_rslora))
    layer = _layer(tiny_causal_lm, "decoder_block_0/ffw_linear")
    a = np.full(layer.lora_kernel_a.shape, 0.5, "float32")
    b = np.full(layer.lora_kernel_b.shape, 2.0, "float32")
    layer.lora_kernel_a.assign(a)
    layer.lora_kernel_b.assign(b)
    x = np.random.default_rng(0).normal(size=(1, 3, layer.kernel.shape[0])).astype("float32")
    expected = x @ (np.asarray(layer._kernel) + scale * a @ b)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-5)


def test_all_linear_covers_exactly_the_seven_projections(tiny_causal_lm):
    summary = lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=2, target_layers="all-linear"))
    names = sorted(path.split("/")[-1] for path in summary.lora_layers)
    expected = ["attention_output", "ffw_gating", "ffw_gating_2", "ffw_linear", "key", "query", "value"]
    assert names == sorted(expected * 2)


def test_path_patterns_and_rank_pattern(tiny_causal_lm, tmp_path, tiny_tokenizer_proto):
    summary = lora.enable_lora(tiny_causal_lm, lora.LoraConfig(
        rank=2, target_layers=("decoder_block_1/attention/(query|key)",), rank_pattern={".*/key": 8}))
    assert sorted(summary.lora_layers) == ["decoder_block_1/attention/key", "decoder_block_1/attention/query"]
    assert _layer(tiny_causal_lm, "decoder_block_1/attention/key").lora_rank == 8
    assert _layer(tiny_causal_lm, "decoder_block_1/attention/query").lora_rank == 2
    lora.save_adapter(tiny_causal_lm, tmp_path / "a", base_preset="tiny")
    fresh = build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48, seed=0)
    lora.load_adapter(fresh, tmp_path / "a")
    assert _layer(fresh, "decoder_block_1/attention/key").lora_rank == 8


def test_two_adapters_switch_on_one_base(tiny_causal_lm, tmp_path):
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8))
    rng = np.random.default_rng(1)
    outputs = {}
    for name in ("task_a", "task_b"):
        for variable in tiny_causal_lm.trainable_weights:
            variable.assign(rng.normal(size=variable.shape).astype("float32") * 0.2)
        lora.save_adapter(tiny_causal_lm, tmp_path / name, base_preset="tiny")
        outputs[name] = _logits(tiny_causal_lm)
    assert not np.allclose(outputs["task_a"], outputs["task_b"])
    for name in ("task_a", "task_b", "task_a"):
        lora.load_adapter(tiny_causal_lm, tmp_path / name)
        np.testing.assert_array_equal(_logits(tiny_causal_lm), outputs[name])


def test_merged_model_equals_the_unmerged_one_and_loads_as_a_plain_preset(tiny_causal_lm, tmp_path):
    import keras_hub

    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8, target_layers="all-linear"))
    rng = np.random.default_rng(2)
    for variable in tiny_causal_lm.trainable_weights:
        variable.assign(rng.normal(size=variable.shape).astype("float32") * 0.2)
    merged = lora.merge_lora(tiny_causal_lm)
    assert not any("lora" in w.path for w in merged.weights)
    np.testing.assert_allclose(_logits(merged), _logits(tiny_causal_lm), rtol=1e-4, atol=1e-4)
    merged.save_to_preset(str(tmp_path / "merged"))
    reloaded = keras_hub.models.Gemma3CausalLM.from_preset(str(tmp_path / "merged"))
    np.testing.assert_allclose(_logits(reloaded), _logits(tiny_causal_lm), rtol=1e-4, atol=1e-4)
    with pytest.raises(ModelError, match="no LoRA layers to merge"):
        lora.merge_lora(merged)
