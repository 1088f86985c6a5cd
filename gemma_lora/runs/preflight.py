"""Checks run before training, so that a mistake costs seconds, not an hour.

`check_run` checks everything that needs no model, right after the
`RunConfig` is built: the preset names a model, the data file parses and is
large enough to split, and `run_dir` can be created, written and has room.
`check_model` checks what needs the loaded model, before any training step:
the sequence length fits the model's context, and the disk has room for the
checkpoints this model's adapter will produce. Each failure raises a `ConfigError`, `DataError` or
`ModelError` that names the parameter and says what to do.

Example:
>>> import tempfile
>>> from gemma_lora.testing import tiny_causal_lm
>>> config = RunConfig(preset="gemma3_270m_pypi", run_dir=tempfile.mkdtemp())
>>> check_run(config)  # the preset, the data file and run_dir: no model loaded yet
>>> model = tiny_causal_lm()  # a real run loads models.load_causal_lm(config.preset)
>>> summary = lora.enable_lora(model, lora.LoraConfig.from_run(config))
>>> check_model(config, model)
>>> check_model(RunConfig(sequence_length=40_000, run_dir=config.run_dir), model)
Traceback (most recent call last):
...
gemma_lora.errors.ConfigError: sequence_length=40000 exceeds the 32,768 tokens this model (Gemma3CausalLM) handles; use at most 32768.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras_hub

from gemma_lora import data
from gemma_lora import lora
from gemma_lora import models
from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError
from gemma_lora.errors import ModelError

MIN_FREE_BYTES = 100 * 1024**2
"""Free space every run needs besides its checkpoints: the executed notebook,
plots, history, metrics, logs and a margin."""

GEMMA3_CONTEXT = 32_768
"""Trained context of Gemma 3 270M and 1B (global RoPE scaling factor 1)."""

GEMMA3_LONG_CONTEXT = 131_072
"""Trained context of Gemma 3 4B, 12B and 27B (global RoPE scaling factor 8)."""

GEMMA_CONTEXT = 8_192
"""Trained context of Gemma and Gemma 2."""

# A checkpoint holds the LoRA weights, AdamW's two moments and the best
# adapter so far: four copies of the LoRA weights (see `gemma_lora.checkpoint`).
_COPIES_PER_CHECKPOINT = 4
# Saving the adapter atomically briefly holds the new and the old folder.
_COPIES_PER_ADAPTER = 2
_BYTES_PER_WEIGHT = 4  # LoRA weights and optimizer state: float32 at most
# Each held-out split, the parameter that sizes it and what a run uses it for.
_HELD_OUT_SPLITS = {
    "validation": ("validation_fraction", "the validation loss that picks the best adapter"),
    "test": ("test_fraction", "the before/after evaluation"),
}


def check_run(config: RunConfig) -> None:
    """Check everything a run needs that can be checked without the model.

    For an instruction-tuning run (notebook 01). Reads, validates and splits
    the data as the run will (`data.load_splits`: `data_path`, and
    `test_data_path` when set; reading it again later is cheap), and creates
    `run_dir` if it does not exist.

    Args:
        config: the run's parameters (already validated one by one by
            `RunConfig` itself).

    Raises:
        ConfigError: a held-out split would be empty, or `run_dir`
            cannot be created or written or lacks `MIN_FREE_BYTES`.
        DataError: the data file is missing or malformed, or too small to
            split (the message names the file, line and field).
        ModelError: `preset` or `reference_preset` is a missing folder or an
            unknown name.

    Example:
    >>> import tempfile
    >>> check_run(RunConfig(preset="gemma3_270m_pypi", run_dir=tempfile.mkdtemp()))
    >>> check_run(RunConfig(data_path="data/missing.jsonl", run_dir=tempfile.mkdtemp()))
    Traceback (most recent call last):
    ...
    gemma_lora.errors.DataError: ...
    """
    models.check_preset(config.preset)
    if config.reference_preset is not None:
        models.check_preset(config.reference_preset)
    splits = data.load_splits(config)
    for split, (parameter, use) in _HELD_OUT_SPLITS.items():
        if not getattr(splits, split):
            raise ConfigError(
                f"{parameter}={getattr(config, parameter)} leaves the {split} split empty, "
                f"but the run uses it for {use}; use e.g. 0.05."
            )
    check_run_dir(config.run_dir, MIN_FREE_BYTES)


def check_model(config: RunConfig, model: Any) -> None:
    """Check the loaded model against the run: context length and disk space.

    Call it after `lora.enable_lora`, so that the disk estimate includes the
    checkpoints of this model's adapter (`required_disk_bytes`).

    Args:
        config: the run's parameters.
        model: the KerasHub `CausalLM` the run will train.

    Raises:
        ConfigError: `sequence_length` (plus `max_new_tokens` when
            generating) exceeds the model's context, or `run_dir` lacks the
            space for the checkpoints.
        ModelError: the model has no preprocessor to tokenize the data.

    Example:
    >>> import tempfile
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()
    >>> summary = lora.enable_lora(model, lora.LoraConfig(rank=8))
    >>> check_model(RunConfig(sequence_length=128, run_dir=tempfile.mkdtemp()), model)
    """
    if getattr(model, "preprocessor", None) is None:
        raise ModelError(
            f"The model loaded from preset {config.preset!r} has no preprocessor, so the "
            "data cannot be tokenized; load it with models.load_causal_lm."
        )
    limit = context_length(model)
    if limit is not None:
        if config.sequence_length > limit:
            raise ConfigError(
                f"sequence_length={config.sequence_length} exceeds the {limit:,} tokens "
                f"this model ({type(model).__name__}) handles; use at most {limit}."
            )
        if config.sequence_length + config.max_new_tokens > limit:
            raise ConfigError(
                f"sequence_length + max_new_tokens = {config.sequence_length} + "
                f"{config.max_new_tokens} exceeds the {limit:,} tokens this model handles "
                "when generating; lower max_new_tokens or sequence_length."
            )
    check_run_dir(config.run_dir, required_disk_bytes(config, model))


def context_length(model: Any) -> int | None:
    """The most token positions the model handles, when that is known.

    A backbone with learned position embeddings has a hard limit, its
    `max_sequence_length`. Gemma's rotary position embeddings have none, so
    the limit is the context its checkpoints were trained for, from the
    Gemma 3 technical report: 32K tokens for 270M and 1B (global RoPE
    scaling factor 1), 128K for 4B, 12B and 27B (factor 8); 8K for Gemma and
    Gemma 2.

    Args:
        model: a KerasHub task (`CausalLM`) or backbone.

    Returns:
        The limit in tokens, or `None` for a model with no known limit.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> context_length(tiny_causal_lm())  # a Gemma 3 with global RoPE scaling 1, as 270M and 1B
    32768
    """
    backbone = getattr(model, "backbone", model)
    limit = getattr(backbone, "max_sequence_length", None)
    if isinstance(limit, int) and limit > 0:
        return limit
    if isinstance(backbone, keras_hub.models.Gemma3Backbone):
        long_context = backbone.global_rope_scaling_factor > 1
        return GEMMA3_LONG_CONTEXT if long_context else GEMMA3_CONTEXT
    if isinstance(backbone, keras_hub.models.GemmaBackbone):
        return GEMMA_CONTEXT
    return None


def required_disk_bytes(config: RunConfig, model: Any) -> int:
    """Free space a run needs in `run_dir`: `MIN_FREE_BYTES` plus its checkpoints.

    Up to `keep_checkpoints + 1` checkpoints exist at once (the newest is
    written before the oldest is removed), each four copies of the LoRA
    weights (weights, AdamW's two moments, the best adapter so far), plus
    two copies for the adapter folder while it is replaced. For Gemma 3
    270M with rank 8 on query and value (737,280 LoRA weights, 2.9 MB) and
    the default `keep_checkpoints=2` that is 100 MiB + 41 MB.

    Args:
        config: the run's parameters.
        model: the model with LoRA enabled (without LoRA, only
            `MIN_FREE_BYTES` is counted).

    Returns:
        The estimate in bytes.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()
    >>> required_disk_bytes(RunConfig(), model) == MIN_FREE_BYTES  # no LoRA weights yet
    True
    >>> summary = lora.enable_lora(model, lora.LoraConfig(rank=8))
    >>> summary.trainable  # LoRA weights
    2048
    >>> required_disk_bytes(RunConfig(keep_checkpoints=2), model) - MIN_FREE_BYTES  # 14 copies
    114688
    """
    lora_weights = sum(
        math.prod(variable.shape)
        for variable in model.weights
        if variable.path.rsplit("/", 1)[-1] in lora.LORA_VARIABLES
    )
    copies = (config.keep_checkpoints + 1) * _COPIES_PER_CHECKPOINT + _COPIES_PER_ADAPTER
    return MIN_FREE_BYTES + copies * lora_weights * _BYTES_PER_WEIGHT


def check_run_dir(run_dir: str | os.PathLike, required_bytes: int) -> None:
    """Create `run_dir` if needed, write a file in it, and check its free space.

    Args:
        run_dir: the run folder.
        required_bytes: free space the run needs there.

    Raises:
        ConfigError: the folder cannot be created or written, or has less
            than `required_bytes` free; the message names `run_dir`.

    Example:
    >>> import tempfile
    >>> check_run_dir(tempfile.mkdtemp(), MIN_FREE_BYTES)
    >>> check_run_dir(tempfile.mkdtemp(), 10**18)
    Traceback (most recent call last):
    ...
    gemma_lora.errors.ConfigError: run_dir='...' has ... MB free but this run needs about 1,000,000,000,000 MB (checkpoints, adapter, notebook, plots); free some space or choose another run_dir.
    """
    folder = Path(run_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"gemma_lora preflight")
            probe.flush()
    except OSError as error:
        raise ConfigError(
            f"run_dir={str(run_dir)!r} cannot be created or written "
            f"({error.strerror or type(error).__name__}); choose a folder you can write to."
        ) from None
    free = shutil.disk_usage(folder).free
    if free < required_bytes:
        raise ConfigError(
            f"run_dir={str(run_dir)!r} has {free / 1e6:,.0f} MB free but this run needs "
            f"about {required_bytes / 1e6:,.0f} MB (checkpoints, adapter, notebook, plots); "
            "free some space or choose another run_dir."
        )
