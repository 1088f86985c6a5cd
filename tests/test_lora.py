import json

import numpy as np
import pytest

from gemma_lora import lora
from gemma_lora.errors import ConfigError
from gemma_lora.errors import ModelError
from gemma_lora.models import build_tiny_gemma3


def _logits(model, text="Please send one red mug."):
    x = model.preprocessor.generate_preprocess([text], sequence_length=16)
    return np.asarray(model.backbone(x))


def test_enable_lora_freezes_everything_but_the_adapter(tiny_causal_lm):
    summary = lora.enable_lora(tiny_causal_lm, rank=4, alpha=8, target_layers=("query", "value"))
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
    lora.enable_lora(tiny_causal_lm, rank=4, alpha=16, target_layers=("key",))
    layer = next(l for l in tiny_causal_lm.backbone._flatten_layers() if l.name == "key")
    a = np.asarray(layer.lora_kernel_a)
    layer.lora_kernel_b.assign(np.ones(layer.lora_kernel_b.shape, "float32"))
    expected = np.asarray(layer._kernel) + (16 / 4) * np.matmul(a, np.ones(layer.lora_kernel_b.shape))
    np.testing.assert_allclose(np.asarray(layer.kernel), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rank": 0}, "rank must be an integer >= 1"),
        ({"rank": 4, "alpha": 0}, "alpha must be > 0"),
        ({"rank": 4, "target_layers": ("qurey",)}, "target_layers ['qurey'] match no layer"),
    ],
)
def test_bad_lora_arguments(tiny_causal_lm, kwargs, message):
    with pytest.raises(ConfigError) as error:
        lora.enable_lora(tiny_causal_lm, **kwargs)
    assert message in str(error.value)


def test_enabling_twice_is_refused(tiny_causal_lm):
    lora.enable_lora(tiny_causal_lm, rank=2)
    with pytest.raises(ConfigError, match="already enabled"):
        lora.enable_lora(tiny_causal_lm, rank=2)


def _trained_adapter(model, tmp_path):
    lora.enable_lora(model, rank=4, alpha=8)
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
    lora.enable_lora(other, rank=2, alpha=8)
    with pytest.raises(ModelError, match=r"has rank, alpha, targets = \(4, 8.0"):
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
