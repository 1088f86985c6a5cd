"""Training checkpoints: complete or absent, newest K kept, resumable.

A checkpoint is a folder `<run_dir>/checkpoints/step-000150/` holding
`arrays.safetensors` (trainable weights, optimizer state and the best
adapter so far, as numpy arrays) and `state.json` (step, history, early
stopping counters and the run's fingerprint). It is written under a temporary
name, fsynced and renamed into place, so a run killed at any moment leaves
either the previous checkpoint or the new one, never half of one. The data
position needs no saving: batches are a pure function of (seed, step).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file
from safetensors.numpy import save_file

from gemma_lora import parallel
from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError
from gemma_lora.io_utils import atomic_directory
from gemma_lora.io_utils import write_json_atomic

CHECKPOINTS_DIR = "checkpoints"
ARRAYS_FILE = "arrays.safetensors"
STATE_FILE = "state.json"
_NAME = re.compile(r"step-(\d{6,})")

# Every `RunConfig` field is part of the fingerprint, except these, which
# cannot change what training computes; a field added to `RunConfig` is
# fingerprinted without touching this module.
NOT_FINGERPRINTED = (
    "run_dir",            # where the run is written; resuming reads it
    "resume",             # whether this run resumes
    "checkpoint_every",   # when checkpoints are written, not what is trained
    "keep_checkpoints",   # how many are kept
    "reference_preset",   # an extra untuned model evaluated after training
    "max_new_tokens",     # generation budget of the evaluation after training
    "eval_batch_size",    # evaluation batching (loss is a per-token mean either way)
    "num_samples",        # sample generations shown in the notebook
    "temperature",        # sampling options of generation outside the (greedy) evaluation:
    "top_k",              # generation after training, never the training itself
    "top_p",
    "packing",            # same examples per step, same loss and gradients (tests/test_packing.py)
    "loss_chunk_size",    # memory only; same loss and gradients (tests/test_chunked_loss.py)
    "data_parallel",      # the device mesh: the same global batch on any layout
    "model_parallel",
    "coordinator_address",  # how the hosts of a multi-host run find each other
    "num_processes",
    "process_id",
    "report_to",          # where the numbers are reported (TensorBoard, wandb), not what they are
)
# Fields naming data files whose contents are fingerprinted too.
DATA_FILE_FIELDS = ("data_path", "test_data_path")


def fingerprint(config: RunConfig) -> dict[str, Any]:
    """What a checkpoint must share with the config that resumes it.

    Args:
        config: the run's parameters.

    Returns:
        Every `RunConfig` field but `NOT_FINGERPRINTED`, as JSON values,
        plus `<field>_sha256`: the contents of each data file named by
        `DATA_FILE_FIELDS`, or of a `save_to_disk` folder (None for a TFDS
        or `hf:` name, or an unset field).

    Example:
    >>> from gemma_lora.config import RunConfig
    >>> values = fingerprint(RunConfig(dropout=0.1))
    >>> values["dropout"], "run_dir" in values, len(values["data_path_sha256"])
    (0.1, False, 64)
    """
    values = {name: value for name, value in config.to_dict().items()
              if name not in NOT_FINGERPRINTED}
    for name in DATA_FILE_FIELDS:
        values[f"{name}_sha256"] = _file_sha256(getattr(config, name))
    return json.loads(json.dumps(values))  # as a checkpoint's state.json gives it back


def _file_sha256(path: str | None) -> str | None:
    """Contents of a data file, or of every file under a `save_to_disk` folder.

    A folder may carry a `[SPLIT]` suffix (`"folder[test]"`); the whole
    folder is hashed then, file names included. Anything else (a TFDS or
    `hf:` name, an unset field) gives None.
    """
    if path is None:
        return None
    folder = Path(re.sub(r"\[[^\]]*\]$", "", path))
    if os.path.isfile(path):
        files, root = [Path(path)], None
    elif folder.is_dir():
        files, root = sorted(p for p in folder.rglob("*") if p.is_file()), folder
    else:
        return None
    digest = hashlib.sha256()
    for file_path in files:
        if root is not None:
            digest.update(file_path.relative_to(root).as_posix().encode() + b"\0")
        with open(file_path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def save(run_dir: str | os.PathLike, step: int, arrays: dict[str, np.ndarray],
         state: dict[str, Any], keep: int) -> Path:
    """Write the checkpoint of `step` atomically and prune all but the newest `keep`.

    Args:
        run_dir: the run folder.
        step: the optimizer step the arrays are the result of.
        arrays: named numpy arrays.
        state: JSON-ready training state (must include `fingerprint`).
        keep: how many checkpoints to keep (at least 1).

    Returns:
        The checkpoint folder. On a multi-host run only process 0 writes
        (`parallel.is_writer`); the others return the same path.

    Example:
    >>> import tempfile; run_dir = tempfile.mkdtemp()
    >>> for step in (100, 200, 300):
    ...     folder = save(run_dir, step, {"w": np.zeros(3)}, {"fingerprint": {}}, keep=2)
    >>> folder.name, latest(run_dir) == folder
    ('step-000300', True)
    >>> sorted(path.name for path in folder.parent.iterdir())  # the two newest are kept
    ['step-000200', 'step-000300']
    """
    folder = Path(run_dir) / CHECKPOINTS_DIR / f"step-{step:06d}"
    if not parallel.is_writer():
        return folder
    with atomic_directory(folder) as tmp:
        save_file({name: np.ascontiguousarray(value) for name, value in arrays.items()},
                  str(tmp / ARRAYS_FILE))
        write_json_atomic(tmp / STATE_FILE, {**state, "step": step})
    for old in _complete_checkpoints(run_dir)[:-max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def _complete_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if _NAME.fullmatch(p.name) and (p / STATE_FILE).is_file() and (p / ARRAYS_FILE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.fullmatch(p.name).group(1)))


def latest(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run, or `None`."""
    found = _complete_checkpoints(run_dir)
    return found[-1] if found else None


def load(folder: str | os.PathLike, expected_fingerprint: dict[str, Any]) -> tuple[dict, dict]:
    """Read a checkpoint, refusing one made by a different configuration.

    Args:
        folder: a checkpoint folder from `latest`.
        expected_fingerprint: `fingerprint(config)` of the resuming run.

    Returns:
        `(arrays, state)`.

    Raises:
        ConfigError: if the checkpoint's fingerprint differs; the message
            lists each differing parameter with both values.
    """
    folder = Path(folder)
    with open(folder / STATE_FILE, encoding="utf-8") as file:
        state = json.load(file)
    saved = state["fingerprint"]
    unrecorded = sorted(set(expected_fingerprint) - set(saved))
    if unrecorded:
        raise ConfigError(
            f"Cannot resume from {folder}: it was written by an older gemma_lora that did not "
            f"record {', '.join(unrecorded)}, so it cannot be checked to be the same run. Use "
            "a new run_dir, or set resume=False to start over in this one."
        )
    differences = [
        f"{key}: checkpoint {saved[key]!r}, now {value!r}"
        for key, value in expected_fingerprint.items() if saved[key] != value
    ]
    if differences:
        raise ConfigError(
            f"Cannot resume from {folder}: it was made by a different configuration ("
            + "; ".join(differences)
            + "). Use a new run_dir, or set resume=False to start over in this one."
        )
    return load_file(str(folder / ARRAYS_FILE)), state
