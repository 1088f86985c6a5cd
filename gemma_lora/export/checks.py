"""What every deployment format needs of a model: a text-only Gemma 3 causal LM, whole, in float.

`export.transformers` and `export.gguf` both call these before writing, so
a model a format cannot hold is refused with one message whichever format
is asked for; each adds its own reason where the formats differ.
"""

from __future__ import annotations

import keras_hub
from sentencepiece import sentencepiece_model_pb2 as sp_model

from gemma_lora.errors import ModelError
from gemma_lora.lora.peft_layout import gemma3_text_backbone

# Backbone options transformers' Gemma3ForCausalLM and llama.cpp's gemma3
# graph always have: (attribute, what it is).
REQUIRED_OPTIONS = (
    ("use_query_key_norm", "query/key RMS norms"),
    ("use_post_attention_norm", "post-attention norms"),
    ("use_post_ffw_norm", "post-feed-forward norms"),
)


def gemma3_causal_lm_backbone(model: object, action: str) -> keras_hub.models.Gemma3Backbone:
    """The backbone of a text-only `Gemma3CausalLM` with its preprocessor; `ModelError` otherwise.

    Args:
        model: the model to export.
        action: what is being done (`"GGUF export"`), for the message.

    Returns:
        Its `Gemma3Backbone`.

    Raises:
        ModelError: the model is not a Gemma 3, has a vision encoder, or is
            a backbone or task without the preprocessor (its tokenizer).

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> gemma3_causal_lm_backbone(tiny_causal_lm().backbone, "GGUF export")
    Traceback (most recent call last):
    ...
    gemma_lora.errors.ModelError: GGUF export needs a Gemma3CausalLM with its preprocessor (for the tokenizer); got Gemma3Backbone with preprocessor NoneType.
    """
    backbone = gemma3_text_backbone(model, action)
    if not isinstance(model, keras_hub.models.Gemma3CausalLM) or model.preprocessor is None:
        raise ModelError(
            f"{action} needs a Gemma3CausalLM with its preprocessor (for the tokenizer); got "
            f"{type(model).__name__} with preprocessor "
            f"{type(getattr(model, 'preprocessor', None)).__name__}."
        )
    return backbone


def missing_parts(backbone: keras_hub.models.Gemma3Backbone) -> list[str]:
    """The parts of `REQUIRED_OPTIONS` the backbone lacks, e.g. `["use_query_key_norm=False (query/key RMS norms)"]`.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> missing_parts(tiny_causal_lm().backbone)
    []
    """
    return [f"{option}=False ({what})" for option, what in REQUIRED_OPTIONS
            if not getattr(backbone, option)]


def check_not_quantized(backbone: keras_hub.models.Gemma3Backbone, why: str) -> None:
    """Raise `ModelError` when any layer of the backbone is quantized (int8/int4).

    Args:
        backbone: the backbone to export.
        why: why the format cannot take it, for the message.

    Raises:
        ModelError: naming the modes, how many layers and one of them, `why`,
            and how to export instead (the float base with the adapter).

    Example:
    >>> from gemma_lora.models import quantize_base
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()
    >>> quantize_base(model, "int4")
    >>> check_not_quantized(model.backbone, "this format holds float weights")
    Traceback (most recent call last):
    ...
    gemma_lora.errors.ModelError: The base model is quantized (int4 in 15 layers, e.g. 'token_embedding'): this format holds float weights. Load the base again without quantization (models.load_causal_lm(preset)), load the adapter onto it (lora.load_adapter), and export that model.
    """
    quantized = [layer for layer in backbone._flatten_layers(include_self=False)
                 if getattr(layer, "quantization_mode", None)]
    if quantized:
        modes = ", ".join(sorted({layer.quantization_mode for layer in quantized}))
        raise ModelError(
            f"The base model is quantized ({modes} in {len(quantized)} layers, e.g. "
            f"{quantized[0].path!r}): {why}. Load the base again without quantization "
            "(models.load_causal_lm(preset)), load the adapter onto it (lora.load_adapter), and "
            "export that model."
        )


def sentencepiece_proto(tokenizer: keras_hub.tokenizers.SentencePieceTokenizer) -> sp_model.ModelProto:
    """The SentencePiece model of a KerasHub SentencePiece tokenizer, parsed.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> sentencepiece_proto(tiny_causal_lm().preprocessor.tokenizer).normalizer_spec.name
    'nmt_nfkc'
    """
    proto = sp_model.ModelProto()
    proto.ParseFromString(tokenizer.proto)
    return proto
