"""LoRA on KerasHub models: enable, count, save and load adapters.

LoRA is switched on through the Keras layers' own `enable_lora(rank,
lora_alpha=...)`, so the low-rank update `alpha / rank * A @ B` is part of
each layer's kernel, and everything else in the model is frozen.

Adapters are saved alone: a `adapter.safetensors` file holding each layer's
`lora_kernel_a`/`lora_kernel_b` keyed by the variable's path in the model
(`decoder_block_3/attention/query/lora_kernel_a`), next to an
`adapter_config.json` that says how to re-create them. Keying by path, not by
position, means an adapter can never be restored into the wrong layers
(KerasHub's index-keyed `save_lora_weights` can: keras-hub issue #2701).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
from safetensors.numpy import load_file
from safetensors.numpy import save_file

from gemma_lora.errors import ConfigError
from gemma_lora.errors import ModelError
from gemma_lora.io_utils import atomic_directory
from gemma_lora.io_utils import write_json_atomic

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
_LORA_VARIABLES = ("lora_kernel_a", "lora_kernel_b")


@dataclasses.dataclass(frozen=True)
class ParameterSummary:
    """Trainable and total parameter counts of a model.

    Args:
        trainable: number of trainable parameters.
        total: number of parameters, trainable or not.
        lora_layers: paths of the layers that carry LoRA weights.
    """

    trainable: int
    total: int
    lora_layers: tuple[str, ...]

    @property
    def percent(self) -> float:
        """Trainable parameters as a percentage of all parameters."""
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return (
            f"trainable params: {self.trainable:,} || all params: {self.total:,} "
            f"|| trainable%: {self.percent:.4f} || LoRA layers: {len(self.lora_layers)}"
        )


def _backbone(model: keras.Model) -> keras.Model:
    return getattr(model, "backbone", model)


def _adaptable_layers(model: keras.Model) -> list[keras.layers.Layer]:
    layers = _backbone(model)._flatten_layers(include_self=False)
    return [
        layer for layer in layers
        if isinstance(layer, (keras.layers.EinsumDense, keras.layers.Dense))
    ]


def enable_lora(
    model: keras.Model,
    rank: int,
    alpha: float | None = None,
    target_layers: Sequence[str] = ("query", "value"),
) -> ParameterSummary:
    """Freeze the model and add trainable LoRA weights to the target layers.

    Args:
        model: a KerasHub task (e.g. `Gemma3CausalLM`) or backbone.
        rank: the rank `r` of the update `A @ B`.
        alpha: scale numerator; the update is multiplied by `alpha / rank`.
            `None` means `alpha = rank` (PEFT's `lora_alpha`).
        target_layers: names of the `EinsumDense`/`Dense` layers to adapt;
            for Gemma: `query`, `key`, `value`, `attention_output`,
            `ffw_gating`, `ffw_gating_2`, `ffw_linear`.

    Returns:
        The `ParameterSummary` after enabling LoRA.

    Raises:
        ConfigError: for a rank or alpha that is not positive, a target name
            that matches no layer, or a model that already has LoRA.

    Example:
    >>> summary = enable_lora(model, rank=8, alpha=16)
    >>> print(summary)
    trainable params: 737,280 || all params: 268,835,456 || ...
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"rank must be an integer >= 1; got {rank!r}.")
    if alpha is not None and not alpha > 0:
        raise ConfigError(f"alpha must be > 0; got {alpha!r}.")
    candidates = _adaptable_layers(model)
    if any(layer.lora_enabled for layer in candidates):
        raise ConfigError("LoRA is already enabled on this model; load a fresh model first.")
    names = {layer.name for layer in candidates}
    missing = sorted(set(target_layers) - names)
    if missing:
        raise ConfigError(
            f"target_layers {missing} match no layer of this model. "
            f"Layers that can take LoRA: {sorted(names)}."
        )
    backbone = _backbone(model)
    backbone.trainable = True
    for layer in backbone._flatten_layers(include_self=False):
        layer.trainable = False
    for layer in candidates:
        if layer.name in target_layers:
            layer.trainable = True
            layer.enable_lora(rank, lora_alpha=alpha)
            if getattr(layer, "bias", None) is not None:
                layer.bias.trainable = False
    return parameter_summary(model)


def parameter_summary(model: keras.Model) -> ParameterSummary:
    """Count trainable and total parameters, and list the LoRA layers.

    Args:
        model: any Keras model.

    Returns:
        A `ParameterSummary`.

    Example:
    >>> print(parameter_summary(model))
    """
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    lora_layers = tuple(layer.path for layer in _lora_layers(model))
    return ParameterSummary(trainable, total, lora_layers)


def _lora_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in _adaptable_layers(model) if layer.lora_enabled]


def lora_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """The adapter's weights as numpy arrays keyed by variable path.

    Args:
        model: a model with LoRA enabled.

    Returns:
        `{"decoder_block_0/attention/query/lora_kernel_a": array, ...}`.
    """
    weights = {}
    for layer in _lora_layers(model):
        for name in _LORA_VARIABLES:
            variable = getattr(layer, name)
            weights[variable.path] = np.asarray(keras.ops.convert_to_numpy(variable))
    return weights


def _architecture(model: keras.Model) -> dict[str, Any]:
    backbone = _backbone(model)
    config = backbone.get_config()
    keys = ("vocabulary_size", "num_layers", "hidden_dim", "intermediate_dim",
            "num_query_heads", "num_key_value_heads", "head_dim")
    return {"class": type(backbone).__name__, **{k: config[k] for k in keys if k in config}}


def save_adapter(model: keras.Model, path: str | os.PathLike, base_preset: str) -> Path:
    """Save only the LoRA weights and how to re-create them, atomically.

    Writes the folder `path` with `adapter.safetensors` and
    `adapter_config.json` (base preset, rank, alpha, target layers,
    architecture, package versions). An existing adapter at `path` is
    replaced only once the new one is complete.

    Args:
        model: a model with LoRA enabled.
        path: the adapter folder to write.
        base_preset: the preset the base model was loaded from.

    Returns:
        The adapter folder.

    Example:
    >>> save_adapter(model, "runs/demo/adapter", base_preset="gemma3_270m")
    """
    layers = _lora_layers(model)
    if not layers:
        raise ModelError("The model has no LoRA layers; call enable_lora(model, rank) first.")
    import gemma_lora
    import keras_hub

    config = {
        "base_preset": base_preset,
        "rank": int(layers[0].lora_rank),
        "alpha": float(layers[0].lora_alpha),
        "target_layers": sorted({layer.name for layer in layers}),
        "architecture": _architecture(model),
        "gemma_lora_version": gemma_lora.__version__,
        "keras_version": keras.__version__,
        "keras_hub_version": keras_hub.__version__,
    }
    path = Path(path)
    with atomic_directory(path) as tmp:
        save_file(lora_weights(model), str(tmp / ADAPTER_WEIGHTS))
        write_json_atomic(tmp / ADAPTER_CONFIG, config)
    return path


def read_adapter_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read an adapter folder's `adapter_config.json`.

    Args:
        path: an adapter folder written by `save_adapter`.

    Returns:
        The adapter config as a dict.
    """
    config_file = Path(path) / ADAPTER_CONFIG
    if not config_file.is_file():
        raise ModelError(
            f"{str(path)!r} is not an adapter folder: {ADAPTER_CONFIG} is missing."
        )
    with open(config_file, encoding="utf-8") as file:
        return json.load(file)


def load_adapter(model: keras.Model, path: str | os.PathLike) -> ParameterSummary:
    """Load a saved adapter onto a model of the same architecture.

    Enables LoRA with the adapter's rank, alpha and targets when the model
    has none yet; otherwise the model's LoRA must match the adapter's.

    Args:
        model: the base model (or the same model with LoRA already on).
        path: an adapter folder written by `save_adapter`.

    Returns:
        The model's `ParameterSummary`.

    Raises:
        ModelError: if the adapter was made for another architecture, rank,
            alpha or set of layers, or its files are incomplete.

    Example:
    >>> model = load_causal_lm("gemma3_270m")
    >>> load_adapter(model, "runs/demo/adapter")
    """
    config = read_adapter_config(path)
    expected = _architecture(model)
    if config["architecture"] != expected:
        raise ModelError(
            f"Adapter {str(path)!r} was made for {config['architecture']}, but the "
            f"model is {expected}. Load it onto its base preset "
            f"{config['base_preset']!r}."
        )
    if not _lora_layers(model):
        enable_lora(model, config["rank"], config["alpha"], config["target_layers"])
    layers = _lora_layers(model)
    found = (int(layers[0].lora_rank), float(layers[0].lora_alpha),
             sorted({layer.name for layer in layers}))
    wanted = (config["rank"], config["alpha"], config["target_layers"])
    if found != wanted:
        raise ModelError(
            f"Adapter {str(path)!r} has rank, alpha, targets = {wanted}, but the "
            f"model's LoRA has {found}. Load it onto a model without LoRA."
        )
    assign_lora_weights(model, load_file(str(Path(path) / ADAPTER_WEIGHTS)), source=str(path))
    return parameter_summary(model)


def assign_lora_weights(
    model: keras.Model, weights: dict[str, np.ndarray], source: str = "weights"
) -> None:
    """Copy LoRA weights keyed by variable path into the model's LoRA layers.

    Args:
        model: a model with LoRA enabled.
        weights: arrays keyed like `lora_weights(model)`.
        source: where the weights came from, for error messages.

    Raises:
        ModelError: if the keys or shapes do not match the model's LoRA layers.
    """
    variables = {
        getattr(layer, name).path: getattr(layer, name)
        for layer in _lora_layers(model) for name in _LORA_VARIABLES
    }
    if set(weights) != set(variables):
        raise ModelError(
            f"{source} holds weights for other layers than the model's LoRA "
            f"layers (e.g. {sorted(set(weights) ^ set(variables))[:3]})."
        )
    for key, variable in variables.items():
        if tuple(weights[key].shape) != tuple(variable.shape):
            raise ModelError(
                f"{source}: weight {key} has shape {tuple(weights[key].shape)}, "
                f"the model expects {tuple(variable.shape)}."
            )
        variable.assign(weights[key])
