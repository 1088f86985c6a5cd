"""The tuned Gemma 3 as a Hugging Face folder: transformers, vLLM and TGI load it as is.

`export_transformers_folder` merges the LoRA adapter into the base
(`lora.merge_lora`) and writes the result through KerasHub's own exporter,
`CausalLM.export_to_transformers` (`keras_hub/src/utils/transformers/export/`:
`config.json`, `model.safetensors`, `generation_config.json`, `tokenizer.model`,
`tokenizer_config.json`, `special_tokens_map.json`). What KerasHub 0.32 writes
for a text-only Gemma 3 is right except for the following, which this module
adds or corrects by hand:

- **chat template**: KerasHub writes none; `tokenizer_config.json` gets
  Gemma's (`GEMMA_CHAT_TEMPLATE`), so `tokenizer.apply_chat_template` and
  vLLM's chat endpoint render exactly what `data.conversation_segments`
  trains on.
- **generation_config.json**: KerasHub's stops only at `<eos>` (and marks it
  `_from_model_config`, which lets transformers rebuild it from
  `config.json`); ours stops at `<eos>` and `<end_of_turn>`, with the
  tokenizer's own ids.
- **dtype**: the weights are cast (after merging, in float32 when the model
  is float32) to the chosen `float32`, `bfloat16` or `float16`, and
  `config.json` says so in `torch_dtype` (transformers 4) and `dtype` (5).
- **RoPE**: KerasHub writes `rope_type: linear` with factor 1.0 and no
  `max_position_embeddings` (transformers then assumes 131072). The Keras
  backbone holds a scaling factor per layer type and each block's wavelength:
  a factor of 1 is written as `default`, any other as `linear` with that
  factor, in `rope_parameters` (transformers 5) and in the older
  `rope_scaling` / `rope_local_base_freq` keys (transformers 4, vLLM). Keras
  holds no context length (its RoPE positions are unbounded), so
  `max_position_embeddings` is Gemma 3's published one unless given: 32768
  without long-context scaling (270M, 1B), 131072 with it (4B to 27B).
- **architecture fields** KerasHub leaves to transformers' defaults, written
  from the backbone: `layer_types` (from each block), `tie_word_embeddings`,
  `final_logit_softcapping`, `attn_logit_softcapping`.

Refused with `ModelError`: a model that is not a text-only Gemma 3 causal LM
(Gemma 2, other backbones, Gemma 3 with vision), a Gemma 3 variant
`Gemma3ForCausalLM` cannot hold (no query/key norms or post norms), a
quantized (int8/int4) base (the folder holds float weights; KerasHub would
write the integer values without their scales), and a SentencePiece model
that normalizes text unlike Gemma's (transformers' `GemmaTokenizer` would
tokenize it differently). The folder is built next to the target and renamed
into place only when complete, as `lora.export_peft_adapter` does: an
existing folder is replaced, an interrupted export leaves nothing new.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import keras_hub

from gemma_lora.data.conversations import END_OF_TURN
from gemma_lora.data.conversations import START_OF_TURN
from gemma_lora.errors import ModelError
from gemma_lora.export.checks import check_not_quantized
from gemma_lora.export.checks import gemma3_causal_lm_backbone
from gemma_lora.export.checks import missing_parts
from gemma_lora.export.checks import sentencepiece_proto
from gemma_lora.io_utils import atomic_directory
from gemma_lora.io_utils import write_json_atomic
from gemma_lora.lora import lora_layers
from gemma_lora.lora import merge_lora
from gemma_lora.validation import check_choice
from gemma_lora.validation import check_int

EXPORT_DTYPES = ("float32", "bfloat16", "float16")
"""The weight dtypes `export_transformers_folder` writes."""

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] in ('assistant', 'model') else message['role'] -%}"
    f"{{{{ '{START_OF_TURN}' + role + '\\n' + (first_user_prefix if loop.first else '') }}}}"
    "{{ message['content'] | trim }}"
    f"{{{{ '{END_OF_TURN}\\n' }}}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    f"{{{{ '{START_OF_TURN}model\\n' }}}}"
    "{%- endif -%}"
)
"""Gemma's chat template (text turns): the system text and a blank line open the
first user turn; every turn is `<start_of_turn>{user|model}\\n{text}<end_of_turn>\\n`."""

# Gemma 3's published context lengths: without long-context RoPE scaling
# (270M, 1B) and with it (4B, 12B, 27B: global factor 8).
_CONTEXT_WITHOUT_SCALING = 32_768
_CONTEXT_WITH_SCALING = 131_072


def export_transformers_folder(
    model: keras_hub.models.CausalLM,
    folder: str | os.PathLike,
    dtype: str = "float32",
    chat_template: str | None = GEMMA_CHAT_TEMPLATE,
    max_position_embeddings: int | None = None,
) -> Path:
    """Write the model, LoRA merged, as a Hugging Face transformers folder.

    `transformers.AutoModelForCausalLM.from_pretrained(folder)` and
    `AutoTokenizer.from_pretrained(folder)` load it, and `vllm serve folder`
    serves it (see the module docstring for what is written). The model is
    left unchanged: LoRA is merged into a copy (`lora.merge_lora`; LoRA
    dropout plays no part), and a model without LoRA is exported as is.

    Args:
        model: a text-only `Gemma3CausalLM` with its preprocessor, with or
            without LoRA, not quantized.
        folder: the folder to write; an existing one is replaced once the
            new one is complete.
        dtype: weight dtype in `model.safetensors`: `"float32"`,
            `"bfloat16"` (what Gemma is usually served in) or `"float16"`.
        chat_template: the Jinja chat template stored in
            `tokenizer_config.json`; `None` stores none.
        max_position_embeddings: the context length in `config.json`;
            `None` takes Gemma 3's published one (module docstring).

    Returns:
        The folder.

    Raises:
        ConfigError: `dtype` or `max_position_embeddings` is invalid.
        ModelError: the model cannot be written in this format (module
            docstring); the message says what and why.

    Example:
    >>> import tempfile, json
    >>> from gemma_lora import lora
    >>> from gemma_lora.testing import build_tiny_gemma3, train_tiny_tokenizer
    >>> proto = train_tiny_tokenizer(["Send one red mug to Paris."] * 40, 300,
    ...     normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False)
    >>> model = build_tiny_gemma3(proto)
    >>> _ = lora.enable_lora(model, lora.LoraConfig(rank=2))
    >>> folder = export_transformers_folder(model, Path(tempfile.mkdtemp()) / "hf", "bfloat16")
    >>> sorted(path.name for path in folder.iterdir())[:3]
    ['config.json', 'generation_config.json', 'model.safetensors']
    >>> config = json.loads((folder / "config.json").read_text())
    >>> config["dtype"], config["rope_parameters"]["full_attention"]["rope_type"]
    ('bfloat16', 'default')
    """
    check_choice("dtype", dtype, EXPORT_DTYPES)
    if max_position_embeddings is not None:
        check_int("max_position_embeddings", max_position_embeddings, minimum=1)
    backbone = check_exportable(model)
    merged = merge_lora(model) if lora_layers(model) else model
    merged = _with_dtype(merged, dtype)
    folder = Path(folder)
    with atomic_directory(folder) as tmp:
        merged.export_to_transformers(str(tmp))
        tokenizer = model.preprocessor.tokenizer
        config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        write_json_atomic(tmp / "config.json",
                          hf_config(config, backbone, dtype, max_position_embeddings))
        write_json_atomic(tmp / "generation_config.json", {
            "bos_token_id": tokenizer.start_token_id,
            "eos_token_id": [tokenizer.end_token_id, tokenizer.token_to_id(END_OF_TURN)],
            "pad_token_id": tokenizer.pad_token_id,
        })
        if chat_template is not None:
            tokenizer_config_file = tmp / "tokenizer_config.json"
            tokenizer_config = json.loads(tokenizer_config_file.read_text(encoding="utf-8"))
            write_json_atomic(tokenizer_config_file,
                              {**tokenizer_config, "chat_template": chat_template})
    return folder


def check_exportable(model: keras.Model) -> keras_hub.models.Gemma3Backbone:
    """The model's backbone, once checked that a Hugging Face folder can hold the model.

    Args:
        model: the model to export.

    Returns:
        Its `Gemma3Backbone`.

    Raises:
        ModelError: the model is not a text-only `Gemma3CausalLM` with a
            Gemma tokenizer, lacks a part `Gemma3ForCausalLM` always has, or
            is quantized.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> check_exportable(tiny_causal_lm())  # its tokenizer is trained with SentencePiece's defaults
    Traceback (most recent call last):
    ...
    gemma_lora.errors.ModelError: The tokenizer's SentencePiece model normalizes text unlike Gemma's ({'normalization': 'nmt_nfkc', 'add_dummy_prefix': True, 'remove_extra_whitespaces': True}; Gemma's is {'normalization': 'identity', 'add_dummy_prefix': False, 'remove_extra_whitespaces': False}): transformers' GemmaTokenizer, which loads the folder's tokenizer.model with Gemma's rules, would tokenize differently from this model.
    """
    backbone = gemma3_causal_lm_backbone(model, "Hugging Face export")
    missing = missing_parts(backbone)
    if missing:
        raise ModelError(
            f"This Gemma 3 backbone has {', '.join(missing)}, but transformers' "
            "Gemma3ForCausalLM always has these parts: the folder cannot hold it."
        )
    check_not_quantized(backbone, "a Hugging Face folder holds float weights, and KerasHub's "
                                  "exporter would write the integer values without their scales")
    _check_tokenizer(model.preprocessor.tokenizer)
    return backbone


def _check_tokenizer(tokenizer: keras_hub.tokenizers.SentencePieceTokenizer) -> None:
    """Raise unless transformers' GemmaTokenizer tokenizes as this SentencePiece model."""
    spec = sentencepiece_proto(tokenizer).normalizer_spec
    found = {"normalization": spec.name, "add_dummy_prefix": spec.add_dummy_prefix,
             "remove_extra_whitespaces": spec.remove_extra_whitespaces}
    gemma = {"normalization": "identity", "add_dummy_prefix": False,
             "remove_extra_whitespaces": False}
    if found != gemma:
        raise ModelError(
            f"The tokenizer's SentencePiece model normalizes text unlike Gemma's ({found}; "
            f"Gemma's is {gemma}): transformers' GemmaTokenizer, which loads the folder's "
            "tokenizer.model with Gemma's rules, would tokenize differently from this model."
        )


def _with_dtype(model: keras_hub.models.CausalLM, dtype: str) -> keras_hub.models.CausalLM:
    """The model with weights and dtype policy `dtype` (itself when they already are)."""
    backbone = model.backbone
    if backbone.dtype_policy.name == dtype and all(
            variable.dtype == dtype for variable in backbone.weights):
        return model
    cast = type(backbone).from_config({**backbone.get_config(), "dtype": dtype})
    values = {variable.path: variable for variable in backbone.weights}
    for variable in cast.weights:
        variable.assign(keras.ops.cast(values[variable.path], dtype))
    return type(model)(backbone=cast, preprocessor=model.preprocessor)


def hf_config(config: dict, backbone: keras_hub.models.Gemma3Backbone, dtype: str,
              max_position_embeddings: int | None = None) -> dict:
    """KerasHub's `config.json` for a Gemma 3, made exact (see the module docstring).

    Args:
        config: the `config.json` KerasHub wrote.
        backbone: the exported backbone.
        dtype: the weights' dtype.
        max_position_embeddings: the context length; `None` for Gemma 3's published one.

    Returns:
        The corrected config.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> config = hf_config({"rope_theta": 1e6}, tiny_causal_lm().backbone, "float32")
    >>> config["max_position_embeddings"], config["rope_parameters"]["sliding_attention"]
    (32768, {'rope_type': 'default', 'rope_theta': 10000.0})
    """
    blocks = [backbone.get_layer(f"decoder_block_{index}") for index in range(backbone.num_layers)]
    layer_types = ["sliding_attention" if block.use_sliding_window_attention else "full_attention"
                   for block in blocks]
    factors = {"sliding_attention": backbone.local_rope_scaling_factor,
               "full_attention": backbone.global_rope_scaling_factor}
    thetas = {**{"sliding_attention": 10_000.0, "full_attention": 1_000_000.0},
              **{kind: float(block.rope_wavelength) for kind, block in zip(layer_types, blocks)}}
    rope = {kind: _rope(factors[kind], thetas[kind]) for kind in factors}
    if max_position_embeddings is None:
        max_position_embeddings = (_CONTEXT_WITHOUT_SCALING if factors["full_attention"] == 1.0
                                   else _CONTEXT_WITH_SCALING)
    full = {key: value for key, value in rope["full_attention"].items() if key != "rope_theta"}
    return {
        **config,
        "layer_types": layer_types,
        "max_position_embeddings": max_position_embeddings,
        "rope_parameters": rope,
        "rope_theta": thetas["full_attention"],
        "rope_local_base_freq": thetas["sliding_attention"],
        "rope_scaling": None if full["rope_type"] == "default" else full,
        "tie_word_embeddings": bool(backbone.token_embedding.tie_weights),
        "final_logit_softcapping": backbone.final_logit_soft_cap,
        "attn_logit_softcapping": backbone.attention_logit_soft_cap,
        "torch_dtype": dtype,
        "dtype": dtype,
    }


def _rope(factor: float, theta: float) -> dict:
    if float(factor) == 1.0:
        return {"rope_type": "default", "rope_theta": theta}
    return {"rope_type": "linear", "factor": float(factor), "rope_theta": theta}
