"""Credentials never reach a run's files, its logs or the executed notebook.

Kaggle credentials (`KAGGLE_USERNAME`/`KAGGLE_KEY`, `KAGGLE_API_TOKEN`, or
`~/.kaggle/kaggle.json`) and Hugging Face's `HF_TOKEN` are read by kagglehub
and huggingface_hub from the environment. These tests set fake values there,
run notebook 01 under papermill on a tiny local model, and search every byte
of the run folder and of papermill's output for them (also base64-encoded, as
an HTTP Basic header would carry them). On a simulated Kaggle the secrets come
instead from a fake `kaggle_secrets` client, which the notebook copies into
its environment; the run folder, its adapter zip included, holds none of them
either. A control test plants a secret and checks that the same search finds
it.
"""

import base64
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from gemma_lora import models
from gemma_lora.config import RunConfig
from gemma_lora.errors import ModelError

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "01_finetune_gemma_lora.ipynb"
_TAG = uuid.uuid4().hex[:12]
FAKE_SECRETS = {
    "KAGGLE_USERNAME": f"fake-kaggle-user-{_TAG}",
    "KAGGLE_KEY": f"fake-kaggle-key-{_TAG}",
    "KAGGLE_API_TOKEN": f"fake-kaggle-token-{_TAG}",
    "HF_TOKEN": f"hf_fake_token_{_TAG}",
}
KAGGLE_JSON_KEY = f"fake-kaggle-json-key-{_TAG}"


def _needles() -> dict[str, bytes]:
    """Each fake secret as bytes, plain and base64-encoded (alone and as `user:key`)."""
    values = [*FAKE_SECRETS.values(), KAGGLE_JSON_KEY]
    needles = {value: value.encode() for value in values}
    basic = f"{FAKE_SECRETS['KAGGLE_USERNAME']}:{FAKE_SECRETS['KAGGLE_KEY']}"
    for value in [*values, basic]:
        needles[f"base64({value})"] = base64.b64encode(value.encode()).rstrip(b"=")
    return needles


def find_secrets(folder: Path, extra_texts: dict[str, str] = None) -> list[str]:
    """`"file: secret"` for every fake secret found in any file under `folder`.

    Args:
        folder: searched recursively, every file read as bytes.
        extra_texts: more things to search, by name (e.g. captured output).
    """
    found = []
    blobs = {str(path): path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    blobs.update({name: text.encode() for name, text in (extra_texts or {}).items()})
    for name, blob in blobs.items():
        found += [f"{name}: {label}" for label, needle in _needles().items() if needle in blob]
    return found


def test_the_search_finds_a_planted_secret(tmp_path):
    (tmp_path / "nested" / "deeper").mkdir(parents=True)
    (tmp_path / "nested" / "deeper" / "weights.bin").write_bytes(
        b"\x00\x01" + FAKE_SECRETS["KAGGLE_KEY"].encode() + b"\xff"
    )
    basic = f"{FAKE_SECRETS['KAGGLE_USERNAME']}:{FAKE_SECRETS['KAGGLE_KEY']}"
    (tmp_path / "log.txt").write_text("Authorization: Basic " + base64.b64encode(basic.encode()).decode())
    found = find_secrets(tmp_path, {"stdout": "token=" + FAKE_SECRETS["HF_TOKEN"]})
    assert {
        f"{tmp_path / 'nested' / 'deeper' / 'weights.bin'}: {FAKE_SECRETS['KAGGLE_KEY']}",
        f"{tmp_path / 'log.txt'}: base64({basic})",
        f"stdout: {FAKE_SECRETS['HF_TOKEN']}",
    } <= set(found)
    assert find_secrets(tmp_path / "nested", {"stdout": "nothing here"})  # the file alone
    (tmp_path / "nested" / "deeper" / "weights.bin").unlink()
    assert find_secrets(tmp_path / "nested", {"stdout": "nothing here"}) == []


def test_run_config_reads_only_its_own_names():
    namespace = {"rank": 4, **FAKE_SECRETS, "kaggle_key": FAKE_SECRETS["KAGGLE_KEY"]}
    assert not any(
        secret in json.dumps(RunConfig.from_namespace(namespace).to_dict())
        for secret in FAKE_SECRETS.values()
    )


def test_hub_errors_and_logs_carry_no_secret(monkeypatch, caplog):
    for name, value in FAKE_SECRETS.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.DEBUG), pytest.raises(ModelError) as info:
        models.load_causal_lm("gemma3_1b")  # Kaggle is unreachable here, as in CI
    text = str(info.value) + caplog.text
    assert not [name for name, needle in _needles().items() if needle.decode() in text]


@pytest.fixture
def tiny_run_inputs(tiny_causal_lm, color_examples, tmp_path):
    """A tiny local preset and a 40-record JSONL file for notebook 01."""
    preset = tmp_path / "tiny_preset"
    tiny_causal_lm.save_to_preset(str(preset))
    train = color_examples["train"]
    rows = [
        {"instruction": "Which color is wanted?",
         "input": prompt.split("### Input:\n")[1].split("\n")[0], "output": response}
        for prompt, response in zip(train["prompts"][:40], train["responses"][:40])
    ]
    data_path = tmp_path / "colors.jsonl"
    data_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return preset, data_path


def _run_notebook_01(tiny_run_inputs, tmp_path: Path, environment: dict) -> tuple:
    """Notebook 01 under papermill on the tiny preset; the run folder and papermill's output.

    Args:
        tiny_run_inputs: the `tiny_run_inputs` fixture.
        tmp_path: the test's folder.
        environment: variables added to the notebook's environment.
    """
    preset, data_path = tiny_run_inputs
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    (home / ".kaggle" / "kaggle.json").write_text(
        json.dumps({"username": FAKE_SECRETS["KAGGLE_USERNAME"], "key": KAGGLE_JSON_KEY})
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    parameters = {
        "preset": str(preset), "data_path": str(data_path), "run_dir": str(run_dir),
        "max_steps": 2, "eval_every": 1, "warmup_steps": 0, "sequence_length": 48,
        "batch_size": 4, "eval_batch_size": 8, "max_new_tokens": 4, "num_samples": 2,
        "validation_fraction": 0.1, "test_fraction": 0.1,
    }
    command = [sys.executable, "-m", "papermill", str(NOTEBOOK),
               str(run_dir / NOTEBOOK.name), "--cwd", str(REPO)]
    for name, value in parameters.items():
        command += ["-p", name, str(value)]
    inherited = {name: value for name, value in os.environ.items() if name not in FAKE_SECRETS}
    env = {
        **inherited, "HOME": str(home), "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GEMMA_LORA_CACHE": str(tmp_path / "cache"), **environment,
    }
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (run_dir / NOTEBOOK.name).is_file() and (run_dir / "metrics.json").is_file()
    assert (run_dir / "adapter").is_dir() and (run_dir / "config.json").is_file()
    return run_dir, completed


def test_notebook_run_leaves_no_secret(tiny_run_inputs, tmp_path):
    run_dir, completed = _run_notebook_01(tiny_run_inputs, tmp_path, FAKE_SECRETS)
    leaks = find_secrets(run_dir, {"papermill stdout": completed.stdout,
                                   "papermill stderr": completed.stderr})
    assert leaks == []


def test_notebook_on_kaggle_copies_the_secrets_and_leaves_none(tiny_run_inputs, tmp_path):
    """Simulated Kaggle: the secrets come from a fake `kaggle_secrets` client, not the environment."""
    client = tmp_path / "kaggle_client"
    client.mkdir()
    (client / "kaggle_secrets.py").write_text(
        "import json\n"
        f"_SECRETS = json.loads({json.dumps(json.dumps(FAKE_SECRETS))})\n\n\n"
        "class UserSecretsClient:\n"
        "    def get_secret(self, label):\n"
        "        if label not in _SECRETS:\n"
        "            raise RuntimeError(f'Unexpected response from the service for {label}')\n"
        "        return _SECRETS[label]\n"
    )
    kaggle = {"KAGGLE_KERNEL_RUN_TYPE": "Interactive", "PYTHONPATH": f"{client}{os.pathsep}{REPO}"}
    run_dir, completed = _run_notebook_01(tiny_run_inputs, tmp_path, kaggle)
    outputs = json.dumps(json.loads((run_dir / NOTEBOOK.name).read_text())["cells"])
    assert ("Copied KAGGLE_USERNAME, KAGGLE_KEY, KAGGLE_API_TOKEN, HF_TOKEN from the Kaggle "
            "secrets.") in outputs
    assert (run_dir / "adapter.zip").is_file() and "Files to download from" in outputs
    leaks = find_secrets(run_dir, {"papermill stdout": completed.stdout,
                                   "papermill stderr": completed.stderr})
    assert leaks == []
