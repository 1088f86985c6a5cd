"""Dropout on the LoRA branch only, during training only (PEFT's `lora_dropout`).

Keras folds LoRA into the kernel (`x @ (W + s·A·B)`), which leaves no place
to drop the branch's input. A layer with LoRA dropout therefore adds a
rank-`r` correction to its normal output:

    y = x·(W + s·A·B) + s·(dropout(x) − x)·A·B = x·W + s·dropout(x)·A·B

which is exactly PEFT's `W x + s·B·A·dropout(x)`. The correction costs two
thin products per layer (the same shape as Keras' own int8/int4 LoRA path),
works on float and quantized layers alike, and is only computed while a
dropout key is active and the layer is called with `training` not False.

Keys are explicit, not hidden in layer state: the compiled training step
opens `dropout_keys(key)` with a key folded from the run's seed and the
optimizer step, so a resumed run draws the same masks as an uninterrupted
one, and nothing about dropout is saved with the model.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import jax
import keras

from gemma_lora.errors import ConfigError

_ACTIVE_KEY: contextvars.ContextVar = contextvars.ContextVar("lora_dropout_key", default=None)


@contextlib.contextmanager
def dropout_keys(key: jax.Array) -> Iterator[None]:
    """Turn LoRA dropout on inside the block, drawing masks from `key`.

    Args:
        key: a JAX PRNG key (`jax.random.key(seed)`), typically folded with
            the step number; each layer folds in its own index.

    Example:
    >>> import numpy as np
    >>> layer = keras.layers.Dense(4, use_bias=False)
    >>> layer.build((1, 8))
    >>> layer.enable_lora(2)
    >>> _ = layer.lora_kernel_b.assign(np.ones((2, 4)))
    >>> add_dropout(layer, rate=0.5, index=0)
    >>> x = np.ones((1, 8), "float32")
    >>> bool((layer(x, training=True) == layer(x)).all())   # no key: no dropout
    True
    >>> with dropout_keys(jax.random.key(0)):
    ...     dropped = layer(x, training=True)
    >>> bool((dropped == layer(x)).all())
    False
    """
    token = _ACTIVE_KEY.set(key)
    try:
        yield
    finally:
        _ACTIVE_KEY.reset(token)


def check_dropout_supported(layer: keras.layers.Layer) -> None:
    """Raise `ConfigError` unless `layer` can take LoRA dropout (no activation).

    Args:
        layer: a `Dense` or `EinsumDense` layer that would get LoRA.

    Raises:
        ConfigError: the layer has an activation, so its LoRA branch cannot
            be added to a linear output.

    Example:
    >>> check_dropout_supported(keras.layers.Dense(4))
    >>> check_dropout_supported(keras.layers.Dense(4, activation="relu", name="ffw"))
    Traceback (most recent call last):
    ...
    gemma_lora.errors.ConfigError: dropout > 0 needs target layers without an activation ...
    """
    if layer.activation not in (None, keras.activations.linear):
        raise ConfigError(
            f"dropout > 0 needs target layers without an activation (the LoRA branch is added "
            f"to the linear output); {layer.path} has one. Leave it out of target_layers, or "
            "set dropout=0."
        )


def add_dropout(layer: keras.layers.Layer, rate: float, index: int) -> None:
    """Give a LoRA-enabled `Dense`/`EinsumDense` layer dropout on its LoRA branch.

    Args:
        layer: a layer on which `enable_lora` was called, accepted by
            `check_dropout_supported`.
        rate: the fraction of the branch's inputs dropped, in [0, 1).
        index: the layer's position among the LoRA layers, folded into the
            key so each layer draws its own mask.

    Example:
    >>> layer = keras.layers.EinsumDense("ab,bc->ac", output_shape=4)
    >>> layer.build((1, 8))
    >>> layer.enable_lora(2)
    >>> add_dropout(layer, rate=0.05, index=0)
    >>> layer.lora_dropout
    0.05
    """
    equation = getattr(layer, "equation", None)
    for method in ("call", "quantized_call"):
        setattr(layer, method, _with_branch_dropout(layer, getattr(layer, method), rate, index,
                                                    equation))
    layer.lora_dropout = rate


def _with_branch_dropout(layer, call, rate: float, index: int, equation: str | None):
    def call_with_dropout(inputs, training=None):
        outputs = call(inputs, training=training)
        key = _ACTIVE_KEY.get()
        if key is None or training is False:
            return outputs
        keep = jax.random.bernoulli(jax.random.fold_in(key, index), 1.0 - rate, inputs.shape)
        change = jax.numpy.where(keep, inputs / (1.0 - rate), 0.0).astype(inputs.dtype) - inputs
        if equation is None:
            branch = keras.ops.matmul(change, layer.lora_kernel_a)
        else:
            branch = keras.ops.einsum(equation, change, layer.lora_kernel_a)
        branch = keras.ops.matmul(branch, layer.lora_kernel_b)
        scale = layer.lora_alpha / layer.lora_rank
        return outputs + keras.ops.cast(scale * branch, outputs.dtype)

    return call_with_dropout
