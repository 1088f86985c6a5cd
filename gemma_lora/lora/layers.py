"""LoRA on KerasHub models: pick the target layers, enable LoRA, count parameters.

`enable_lora(model, LoraConfig(...))` switches LoRA on through the Keras
layers' own `enable_lora(rank, lora_alpha=scale * rank)`, so the low-rank
update `scale * A @ B` is part of each layer's kernel, and everything else in
the model is frozen.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import keras
import numpy as np

from gemma_lora.errors import ConfigError
from gemma_lora.errors import ModelError
from gemma_lora.lora import dropout as lora_dropout
from gemma_lora.lora.config import ALL_LINEAR
from gemma_lora.lora.config import LoraConfig
from gemma_lora.lora.config import compile_pattern


LORA_VARIABLES = ("lora_kernel_a", "lora_kernel_b")


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


def adaptable_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The backbone's `EinsumDense`/`Dense` layers (those that can take LoRA), in order."""
    layers = _backbone(model)._flatten_layers(include_self=False)
    return [
        layer for layer in layers
        if isinstance(layer, (keras.layers.EinsumDense, keras.layers.Dense))
    ]


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
    candidates = adaptable_layers(model)
    selected: set[int] = set()
    for entry in target_layers:
        if entry == ALL_LINEAR:
            matches = {id(layer) for layer in candidates}
        else:
            pattern = compile_pattern("target_layers entry", entry)
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


def enable_lora(model: keras.Model, lora_config: LoraConfig) -> ParameterSummary:
    """Freeze the model and add trainable LoRA weights to the layers `lora_config` targets.

    Like PEFT's `get_peft_model(model, config)`: each target layer's kernel
    becomes `W + scale * A @ B` with `B` starting at zero (so the model is
    unchanged until trained) and `scale = alpha / rank`, or
    `alpha / sqrt(rank)` with `use_rslora`, at each layer's rank. The config
    is kept with the model (`model_lora_config`) for `save_adapter`.

    Args:
        model: a KerasHub task (e.g. `Gemma3CausalLM`) or backbone.
        lora_config: the ranks, scale, targets and dropout (see `LoraConfig`).

    Returns:
        The `ParameterSummary` after enabling LoRA.

    Raises:
        ConfigError: `lora_config` is not a `LoraConfig`, a rank is larger
            than a layer's smaller dimension, a target matches no layer,
            dropout is asked for a layer with an activation, or the model
            already has LoRA. Nothing is changed then.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()
    >>> summary = enable_lora(model, LoraConfig(rank=2, alpha=4, target_layers="all-linear"))
    >>> summary.trainable, len(summary.lora_layers)  # 7 projections in each of 2 blocks
    (2112, 14)
    >>> print(summary)
    trainable params: 2,112 || all params: ... || LoRA layers: 14
    """
    if not isinstance(lora_config, LoraConfig):
        raise ConfigError(
            "enable_lora takes a LoraConfig, e.g. enable_lora(model, LoraConfig(rank=8)) or "
            f"enable_lora(model, LoraConfig.from_run(run_config)); got {lora_config!r}."
        )
    if any(layer.lora_enabled for layer in adaptable_layers(model)):
        raise ConfigError("LoRA is already enabled on this model; load a fresh model first.")
    plan = {}
    for layer in resolve_targets(model, lora_config.target_layers):
        rank = lora_config.rank_for(layer.path)
        plan[layer.path] = (rank, lora_config.scale_for(rank) * rank)  # Keras divides by rank.
    apply_lora_plan(model, plan, dropout=lora_config.dropout)
    set_model_lora_config(model, lora_config)
    return parameter_summary(model)


def apply_lora_plan(
    model: keras.Model, plan: dict[str, tuple[int, float]], dropout: float = 0.0
) -> None:
    """Freeze everything, then enable LoRA with `{path: (rank, Keras lora_alpha)}`.

    Keras' `lora_alpha` is `scale * rank`. Every layer is checked (rank, and
    dropout support when `dropout > 0`) before any layer is changed.

    Args:
        model: a KerasHub task or backbone without LoRA.
        plan: each target layer's path, rank and Keras `lora_alpha`.
        dropout: LoRA dropout rate for every target layer (0: none).

    Raises:
        ConfigError: a rank is larger than its layer's smaller dimension, or
            a layer cannot take dropout.
    """
    layers = {layer.path: layer for layer in adaptable_layers(model)}
    for path, (rank, _) in plan.items():
        smallest = min(_kernel_in_out(layers[path]))
        if rank > smallest:
            raise ConfigError(
                f"rank {rank} is larger than the smaller dimension ({smallest}) of layer "
                f"{path}; a LoRA update cannot have a higher rank than its matrix."
            )
        if dropout > 0:
            lora_dropout.check_dropout_supported(layers[path])
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
    if dropout > 0:
        for index, layer in enumerate(lora_layers(model)):
            lora_dropout.add_dropout(layer, float(dropout), index)


# Attribute of the backbone holding the LoraConfig its LoRA was enabled with.
LORA_CONFIG_ATTRIBUTE = "gemma_lora_lora_config"


def set_model_lora_config(model: keras.Model, lora_config: LoraConfig) -> None:
    """Keep a copy of `lora_config` with the model (on its backbone), for `model_lora_config`."""
    setattr(_backbone(model), LORA_CONFIG_ATTRIBUTE, dataclasses.replace(lora_config))


def model_lora_config(model: keras.Model) -> LoraConfig:
    """The `LoraConfig` of the model's LoRA.

    The one given to `enable_lora` (or read by `load_adapter`); for LoRA
    enabled otherwise (Keras' own `enable_lora`), the one its layers imply
    (`LoraConfig.from_layer_ranks`, targets by layer name).

    Args:
        model: a model with LoRA enabled.

    Returns:
        The `LoraConfig`.

    Raises:
        ModelError: the model has no LoRA layers.
    """
    layers = lora_layers(model)
    if not layers:
        raise ModelError("The model has no LoRA layers; call "
                         "enable_lora(model, LoraConfig(...)) first.")
    recorded = getattr(_backbone(model), LORA_CONFIG_ATTRIBUTE, None)
    if recorded is not None:
        return recorded
    names = sorted({layer.name for layer in layers})
    return LoraConfig.from_layer_ranks(lora_plan(model), names,
                                       dropout=float(getattr(layers[0], "lora_dropout", 0.0)))


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

    Example::

        print(parameter_summary(model))  # as enable_lora's example prints
    """
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    paths = tuple(layer.path for layer in lora_layers(model))
    return ParameterSummary(trainable, total, paths)


def lora_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers that carry LoRA weights, in model order."""
    return [layer for layer in adaptable_layers(model) if layer.lora_enabled]


def lora_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """The adapter's weights as numpy arrays keyed by variable path.

    Args:
        model: a model with LoRA enabled.

    Returns:
        `{"decoder_block_0/attention/query/lora_kernel_a": array, ...}`.
    """
    weights = {}
    for layer in lora_layers(model):
        for name in LORA_VARIABLES:
            variable = getattr(layer, name)
            weights[variable.path] = np.asarray(keras.ops.convert_to_numpy(variable))
    return weights


def architecture(model: keras.Model) -> dict[str, Any]:
    """The backbone's class and widths, which an adapter's shapes depend on."""
    backbone = _backbone(model)
    config = backbone.get_config()
    keys = ("vocabulary_size", "num_layers", "hidden_dim", "intermediate_dim",
            "num_query_heads", "num_key_value_heads", "head_dim")
    return {"class": type(backbone).__name__, **{k: config[k] for k in keys if k in config}}


def lora_plan(model: keras.Model) -> dict[str, tuple[int, float]]:
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
        for layer in lora_layers(model) for name in LORA_VARIABLES
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
