import pytest

from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError


def test_round_trips_through_json(tmp_path):
    config = RunConfig(rank=4, alpha=8.0, target_layers=["query", "key"], max_steps=None)
    config.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == config
    assert config.target_layers == ("query", "key")


def test_comma_separated_targets_from_papermill():
    assert RunConfig(target_layers="query, value,key").target_layers == ("query", "value", "key")


def test_alpha_none_means_rank():
    assert RunConfig(rank=16, alpha=None).effective_alpha == 16.0
    assert RunConfig(rank=16, alpha=32).effective_alpha == 32.0


def test_training_steps_from_epochs():
    assert RunConfig(max_steps=None, epochs=2, batch_size=4).training_steps(10) == 5
    assert RunConfig(max_steps=7).training_steps(10) == 7


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"rank": 0}, "rank must be an integer >= 1; got 0"),
        ({"rank": 2.5}, "rank must be an integer >= 1; got 2.5"),
        ({"alpha": -1}, "alpha must be a number > 0; got -1"),
        ({"learning_rate": 0}, "learning_rate must be a number > 0"),
        ({"dtype": "float16"}, "dtype must be one of ['float32', 'bfloat16', 'mixed_bfloat16']"),
        ({"lr_schedule": "step"}, "lr_schedule must be one of"),
        ({"test_fraction": 1.5}, "test_fraction must be a number in [0, 1)"),
        ({"validation_fraction": 0.5, "test_fraction": 0.5}, "validation_fraction + test_fraction must be below 1"),
        ({"target_layers": []}, "target_layers must name at least one layer"),
        ({"target_layers": 3}, "target_layers must be a list of layer names"),
        ({"batch_size": True}, "batch_size must be an integer >= 1"),
        ({"data_fields": ["input"]}, "data_fields must be a mapping"),
    ],
)
def test_bad_values_name_the_parameter(overrides, message):
    with pytest.raises(ConfigError) as error:
        RunConfig(**overrides)
    assert message in str(error.value)


def test_unknown_parameter_is_named():
    with pytest.raises(ConfigError, match=r"Unknown run parameter\(s\) \['rnak'\]"):
        RunConfig.from_dict({"rnak": 8})


def test_papermill_text_values_are_parsed_as_json():
    config = RunConfig(data_fields='{"input": "context", "output": "response"}',
                       rank_pattern='{".*/key": 16}', target_layers='["decoder_block_(0|1)/.*", "value"]')
    assert config.data_fields == {"input": "context", "output": "response"}
    assert config.rank_pattern == {".*/key": 16}
    assert config.target_layers == ("decoder_block_(0|1)/.*", "value")
    with pytest.raises(ConfigError, match="data_fields is not valid JSON"):
        RunConfig(data_fields="{input: context}")


def _notebook_parameters(name: str) -> dict:
    import json
    from pathlib import Path

    notebook = json.loads((Path(__file__).parent.parent / "notebooks" / name).read_text())
    cell = next(cell for cell in notebook["cells"]
                if "parameters" in cell.get("metadata", {}).get("tags", []))
    namespace: dict = {}
    exec("".join(cell["source"]), namespace)
    return {key: value for key, value in namespace.items() if not key.startswith("__")}


def test_the_default_notebook_trains_with_the_library_defaults():
    """One default per parameter: notebook 01 and `RunConfig()` are the same run."""
    from_notebook = RunConfig.from_namespace(_notebook_parameters("01_finetune_gemma_lora.ipynb"))
    assert from_notebook == RunConfig()


def test_the_sentiment_notebook_changes_only_its_task_and_budget():
    parameters = _notebook_parameters("02_sentiment_classification.ipynb")
    config, defaults = RunConfig.from_namespace(parameters), RunConfig()
    changed = {name for name in parameters
               if hasattr(defaults, name) and getattr(config, name) != getattr(defaults, name)}
    assert changed == {"data_path", "test_data_path", "instruction", "template",
                       "validation_fraction", "test_fraction", "alpha", "sequence_length",
                       "learning_rate", "warmup_steps", "max_steps", "eval_every", "num_samples",
                       "run_dir"}
