"""Run folders written before the pipeline layout (gemma_lora 0.1.0) still read."""

from pathlib import Path

import pytest
from safetensors.numpy import load_file

from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError
from gemma_lora.runs import compare
from gemma_lora.training import checkpoint

RUN = Path(__file__).parent / "fixtures" / "run_v0_1"


def test_compare_reads_an_old_run():
    run = compare.load_run(RUN)
    assert run.metric == ("exact_match", 0.25)
    assert run.config["rank"] == 2 and run.config["alpha"] == 4.0
    assert [row["step"] for row in run.history] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert run.results["best_val_loss"] == pytest.approx(6.1284134)


def test_an_old_config_loads_with_its_own_values():
    config = RunConfig.load(RUN / "config.json")
    assert (config.rank, config.alpha, config.learning_rate, config.max_steps) == (2, 4.0, 3e-2, 4)


def test_an_old_checkpoint_reads_but_a_resume_names_what_it_did_not_record():
    latest = checkpoint.latest(RUN)
    assert latest.name == "step-000004"
    arrays = load_file(str(latest / checkpoint.ARRAYS_FILE))
    assert any(key.endswith("lora_kernel_a") for key in arrays)
    config = RunConfig.load(RUN / "config.json")
    with pytest.raises(ConfigError, match=r"older gemma_lora that did not record .*dropout.*use_rslora"):
        checkpoint.load(latest, checkpoint.fingerprint(config))
