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
import math
import os
import re
from pathlib import Path
from typing import Any, Sequence

import keras
import keras_hub
import numpy as np
from safetensors.numpy import load_file
from safetensors.numpy import save_file

from gemma_lora import distribution
from gemma_lora import lora_dropout
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


ALL_LINEAR = "all-linear"


def resolve_targets(model: keras.Model, target_layers: Sequence[str]) -> list[keras.layers.Layer]:
    """The layers that `target_layers` selects, in model order.

    Each entry selects layers by exact name (`"query"`), by a regular
    expression that must match the whole layer path
    (`"decoder_block_(0|1)/attention/query"`), or is `"all-linear"`: every
    `EinsumDense`/`Dense` layer of the backbone (for Gemma the 7 projections
    `query`, `key`, `value`, `attention_output`, `ffw_gating`,
    `ffw_gating_2`, `ffw_linear` of every block).

    Args:
        model: a KerasHub task or backbone.
        target_layers: names, path patterns, or `"all-linear"`.

    Returns:
        The selected layers.

    Raises:
        ConfigError: if an entry selects no layer (the message lists the
            layer names that can take LoRA).
    """
    candidates = _adaptable_layers(model)
    selected: set[int] = set()
    for entry in target_layers:
        if entry == ALL_LINEAR:
            matches = {id(layer) for layer in candidates}
        else:
            pattern = _compile_pattern(entry)
            matches = {id(layer) for layer in candidates
                       if layer.name == entry or pattern.fullmatch(layer.path)}
        if not matches:
            raise ConfigError(
                f"target_layers entry {entry!r} matches no layer of this model. Layers that "
                f"can take LoRA: {sorted({layer.name for layer in candidates})}, or "
                f"{ALL_LINEAR!r}, or a regular expression over paths like "
                f"{candidates[0].path!r}."
            )
        selected |= matches
    return [layer for layer in candidates if id(layer) in selected]


def _compile_pattern(entry: str) -> re.Pattern:
    try:
        return re.compile(entry)
    except re.error as error:
        raise ConfigError(f"target_layers entry {entry!r} is not a valid pattern: {error}.") from error


def enable_lora(
    model: keras.Model,
    rank: int,
    alpha: float | None = None,
    target_layers: Sequence[str] = ("query", "value"),
    use_rslora: bool = False,
    rank_pattern: dict[str, int] | None = None,
    dropout: float = 0.0,
) -> ParameterSummary:
    """Freeze the model and add trainable LoRA weights to the target layers.

    Each target layer's kernel becomes `W + scale * A @ B` with `B` starting
    at zero (so the model is unchanged until trained) and
    `scale = alpha / rank`, or `alpha / sqrt(rank)` with `use_rslora`
    (rank-stabilised LoRA, which keeps high ranks from learning slower).

    Args:
        model: a KerasHub task (e.g. `Gemma3CausalLM`) or backbone.
        rank: the rank `r` of the update `A @ B`.
        alpha: scale numerator (PEFT's `lora_alpha`); `None` means
            `alpha = rank`.
        target_layers: layer names, path patterns or `"all-linear"` (see
            `resolve_targets`).
        use_rslora: scale by `alpha / sqrt(rank)` instead of `alpha / rank`.
        rank_pattern: optional `{path pattern: rank}` overriding `rank` for
            the layers whose path the pattern fully matches (PEFT's
            `rank_pattern`), e.g. `{"decoder_block_1[0-7]/.*": 16}`.
        dropout: fraction of each LoRA branch's inputs dropped while
            training with `gemma_lora.train` (PEFT's `lora_dropout`); the
            frozen path and inference are never affected. See
            `lora_dropout`.

    Returns:
        The `ParameterSummary` after enabling LoRA.

    Raises:
        ConfigError: for a rank or alpha that is not positive, a dropout
            outside [0, 1), a rank larger
            than a layer's smaller dimension, a target that matches no
            layer, or a model that already has LoRA.

    Example:
    >>> summary = enable_lora(model, rank=8, alpha=16, target_layers="all-linear")
    >>> print(summary)
    trainable params: 3,796,992 || all params: 271,895,168 || ...
    """
    if isinstance(target_layers, str):
        target_layers = (target_layers,)
    _check_rank("rank", rank)
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                              or not alpha > 0):
        raise ConfigError(f"alpha must be a number > 0; got {alpha!r}.")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be a number in [0, 1); got {dropout!r}.")
    if any(layer.lora_enabled for layer in _adaptable_layers(model)):
        raise ConfigError("LoRA is already enabled on this model; load a fresh model first.")
    alpha = float(rank if alpha is None else alpha)
    plan = {}
    for layer in resolve_targets(model, target_layers):
        if dropout > 0:
            lora_dropout.check_supported(layer)  # before any layer is changed
        layer_rank = _pattern_rank(layer.path, rank, rank_pattern or {})
        scale = alpha / math.sqrt(layer_rank) if use_rslora else alpha / layer_rank
        plan[layer.path] = (layer_rank, scale * layer_rank)  # Keras scales by alpha / rank.
    _apply_lora(model, plan)
    if dropout > 0:
        for index, layer in enumerate(lora_layers(model)):
            lora_dropout.add_dropout(layer, float(dropout), index)
    return parameter_summary(model)


def _check_rank(name: str, rank: Any) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"{name} must be an integer >= 1; got {rank!r}.")


def _pattern_rank(path: str, rank: int, rank_pattern: dict[str, int]) -> int:
    for pattern, pattern_rank in rank_pattern.items():
        if _compile_pattern(pattern).fullmatch(path):
            _check_rank(f"rank_pattern[{pattern!r}]", pattern_rank)
            return pattern_rank
    return rank


def _apply_lora(model: keras.Model, plan: dict[str, tuple[int, float]]) -> None:
    """Freeze everything, then enable LoRA with `{path: (rank, keras_alpha)}`."""
    layers = {layer.path: layer for layer in _adaptable_layers(model)}
    for path, (rank, _) in plan.items():
        smallest = min(_kernel_in_out(layers[path]))
        if rank > smallest:
            raise ConfigError(
                f"rank {rank} is larger than the smaller dimension ({smallest}) of layer "
                f"{path}; a LoRA update cannot have a higher rank than its matrix."
            )
    backbone = _backbone(model)
    backbone.trainable = True
    for layer in backbone._flatten_layers(include_self=False):
        layer.trainable = False
    for path, (rank, keras_alpha) in plan.items():
        layer = layers[path]
        layer.trainable = True
        layer.enable_lora(rank, lora_alpha=keras_alpha)
        if getattr(layer, "bias", None) is not None:
            layer.bias.trainable = False


def _kernel_in_out(layer: keras.layers.Layer) -> tuple[int, int]:
    """The shape of the matrix whose update Keras factors for LoRA.

    Keras' LoRA is `A @ B` with `A: kernel.shape[:-1] + (rank,)` and
    `B: (rank, kernel.shape[-1])`; flattened, the update is a
    `(prod(kernel.shape[:-1]), kernel.shape[-1])` matrix of rank <= `rank`.
    """
    shape = tuple(int(size) for size in layer.kernel.shape)
    return int(np.prod(shape[:-1])), shape[-1]


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
    paths = tuple(layer.path for layer in lora_layers(model))
    return ParameterSummary(trainable, total, paths)


def lora_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers that carry LoRA weights, in model order."""
    return [layer for layer in _adaptable_layers(model) if layer.lora_enabled]


def lora_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """The adapter's weights as numpy arrays keyed by variable path.

    Args:
        model: a model with LoRA enabled.

    Returns:
        `{"decoder_block_0/attention/query/lora_kernel_a": array, ...}`.
    """
    weights = {}
    for layer in lora_layers(model):
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
    architecture, package versions, and each layer's rank and Keras
    `lora_alpha`). An existing adapter at `path` is replaced only once the
    new one is complete.

    Args:
        model: a model with LoRA enabled.
        path: the adapter folder to write.
        base_preset: the preset the base model was loaded from.

    Returns:
        The adapter folder (written by process 0 only on a multi-host run).

    Example:
    >>> save_adapter(model, "runs/demo/adapter", base_preset="gemma3_270m")
    """
    layers = lora_layers(model)
    if not layers:
        raise ModelError("The model has no LoRA layers; call enable_lora(model, rank) first.")
    import gemma_lora

    plan = _lora_plan(model)
    ranks = [rank for rank, _ in plan.values()]
    config = {
        "base_preset": base_preset,
        "rank": max(set(ranks), key=ranks.count),
        "alpha": float(layers[0].lora_alpha),
        "dropout": float(getattr(layers[0], "lora_dropout", 0.0)),
        "target_layers": sorted({layer.name for layer in layers}),
        "layers": {path: {"rank": rank, "alpha": alpha} for path, (rank, alpha) in plan.items()},
        "architecture": _architecture(model),
        "gemma_lora_version": gemma_lora.__version__,
        "keras_version": keras.__version__,
        "keras_hub_version": keras_hub.__version__,
    }
    path = Path(path)
    if not distribution.is_writer():  # a multi-host run's other processes
        return path
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
    wanted = {path: (spec["rank"], spec["alpha"]) for path, spec in config["layers"].items()}
    if not lora_layers(model):
        _apply_lora(model, wanted)
    found = _lora_plan(model)
    if found != wanted:
        differing = sorted(set(found.items()) ^ set(wanted.items()))[:2]
        raise ModelError(
            f"Adapter {str(path)!r} needs LoRA with other ranks, alphas or layers than the "
            f"model has (first differences as (layer, (rank, alpha)): {differing}). Load it "
            "onto a model without LoRA."
        )
    assign_lora_weights(model, load_file(str(Path(path) / ADAPTER_WEIGHTS)), source=str(path))
    return parameter_summary(model)


def _lora_plan(model: keras.Model) -> dict[str, tuple[int, float]]:
    """`{layer path: (rank, Keras lora_alpha)}` of the model's LoRA layers."""
    return {layer.path: (int(layer.lora_rank), float(layer.lora_alpha))
            for layer in lora_layers(model)}


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
        for layer in lora_layers(model) for name in _LORA_VARIABLES
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


def merge_lora(model: keras_hub.models.CausalLM) -> keras_hub.models.CausalLM:
    """A copy of the model with each LoRA update folded into its kernel.

    The copy has no LoRA layers and no extra cost at inference; it saves
    with `save_to_preset` as an ordinary KerasHub preset that loads with
    plain `from_preset`. The original model is left as it was, so adapters
    can still be switched on it.

    Args:
        model: a KerasHub `CausalLM` with LoRA enabled.

    Returns:
        A new model of the same class, preprocessor shared, weights merged.

    Raises:
        ModelError: if the model has no LoRA layers.

    Example:
    >>> merged = merge_lora(model)
    >>> merged.save_to_preset("runs/demo/merged_preset")
    """
    layers = lora_layers(model)
    if not layers:
        raise ModelError("The model has no LoRA layers to merge (it is merged already, or "
                         "enable_lora/load_adapter was never called).")
    merged_kernels = {layer._kernel.path: layer.kernel for layer in layers}
    backbone = type(model.backbone).from_config(model.backbone.get_config())
    values = {
        variable.path: merged_kernels.get(variable.path, variable)
        for variable in model.backbone.weights if "lora_kernel" not in variable.path
    }
    for variable in backbone.weights:
        variable.assign(values[variable.path])
    return type(model)(backbone=backbone, preprocessor=model.preprocessor)
