"""A Gemma 3 backbone's forward pass over packed rows.

KerasHub's `Gemma3Backbone` builds each decoder block's attention mask from
`padding_mask` (causal, plus the sliding window of local layers) and applies
RoPE from position 0 of the row, so several examples packed into one row
would attend to each other and the later ones would be rotated as if they
continued the first. This module runs the same backbone with two changes:

- the attention mask is causal AND same-segment (`segment_ids`), so an
  example sees only its own earlier tokens; the attention layer's own
  `_compute_attention` still adds the sliding window of local layers, and
  since an example's tokens are contiguous, a window over row indices is
  the same window over its positions;
- RoPE is applied at per-token `positions` that restart at 0 for each
  example, through the attention layer's own `RotaryEmbedding` (which takes
  `positions`). RoPE scores depend only on the distance between tokens, so
  this is about exactness, not meaning: each token is rotated by exactly the
  angle it gets unpacked, with no rounding from large row offsets.

Everything else is the model's own sublayers, called as they are: the
embedding, the norms, the query/key/value/output and feed-forward
projections (so LoRA, LoRA dropout and int8/int4-quantized layers behave
exactly as in the backbone), the q/k norms, the attention math and the
final norm. Each packed example therefore gets, within float tolerance, the
hidden states it gets alone in KerasHub's backbone (tested in
`tests/test_packing.py`).
"""

from __future__ import annotations

import keras
import keras_hub
from keras import ops

from gemma_lora.errors import ConfigError


def check_packing_supported(backbone: keras.Model) -> None:
    """Raise `ConfigError` unless `backbone` is a causal, text-only Gemma 3.

    Args:
        backbone: the model's backbone.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> check_packing_supported(tiny_causal_lm().backbone)  # a Gemma3CausalLM's: passes
    """
    if (
        not isinstance(backbone, keras_hub.models.Gemma3Backbone)
        or not backbone.text_only_model
        or backbone.use_bidirectional_attention
        or backbone.is_embedding_model
    ):
        raise ConfigError(
            "packing=True needs a text-only, causal Gemma 3 model (Gemma3CausalLM); "
            f"this model's backbone is {type(backbone).__name__}. Set packing=False."
        )


def attention_mask(segment_ids):
    """Causal mask that keeps each token inside its own segment.

    Args:
        segment_ids: `[batch, length]` ints; equal ids mark one example
            (padding is its own segment, so it never reaches a real token).

    Returns:
        `[batch, length, length]` bool, True where query `i` may attend to
        key `j`: `j <= i` and both in the same segment.

    Example:
    >>> import numpy as np
    >>> np.asarray(attention_mask(np.array([[1, 1, 2, 0]])))[0].astype(int)
    array([[1, 0, 0, 0],
           [1, 1, 0, 0],
           [0, 0, 1, 0],
           [0, 0, 0, 1]])
    """
    length = ops.shape(segment_ids)[1]
    index = ops.arange(length)
    causal = ops.expand_dims(index, 1) >= ops.expand_dims(index, 0)
    same = ops.expand_dims(segment_ids, 2) == ops.expand_dims(segment_ids, 1)
    return ops.logical_and(same, ops.expand_dims(causal, 0))


def hidden_states(backbone: keras.Model, token_ids, segment_ids, positions, training: bool = False):
    """The backbone's final hidden states for packed rows.

    Args:
        backbone: a text-only `Gemma3Backbone` (LoRA, quantization allowed).
        token_ids: `[batch, length]` token ids.
        segment_ids: `[batch, length]` example ids within each row (see
            `batching.make_packed_batch`).
        positions: `[batch, length]` position of each token in its example.
        training: passed to the sublayers (dropout, LoRA dropout).

    Returns:
        `[batch, length, hidden_dim]`, what `backbone` returns for each
        example alone at the same tokens.

    Example:
    >>> import numpy as np
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> backbone = tiny_causal_lm().backbone
    >>> token_ids = np.array([[2, 10, 11, 2, 12, 0]])  # two examples in one row, then padding
    >>> segment_ids = np.array([[1, 1, 1, 2, 2, 0]])
    >>> positions = np.array([[0, 1, 2, 0, 1, 0]])
    >>> hidden = hidden_states(backbone, token_ids, segment_ids, positions)
    >>> hidden.shape  # [batch, length, hidden_dim]; positions 3-4 as if example 2 were alone
    (1, 6, 32)
    """
    check_packing_supported(backbone)
    x = backbone.token_embedding(token_ids)
    x = x * ops.cast(ops.sqrt(backbone.hidden_dim), x.dtype)
    mask = attention_mask(segment_ids)
    for block in backbone.transformer_layers:
        x = _decoder_block(block, x, mask, positions, training)
    return backbone.layer_norm(x)


def _decoder_block(block, x, mask, positions, training):
    """`Gemma3DecoderBlock.call` without a cache, with our mask and positions."""
    attention = _attention(block.attention, block.pre_attention_norm(x), mask, positions, training)
    if block.use_post_attention_norm:
        attention = block.post_attention_norm(attention)
    if block.dropout:
        attention = block.attention_dropout(attention, training=training)
    attention_x = x + attention
    normalized = block.pre_ffw_norm(attention_x)
    gate = keras.activations.gelu(block.gating_ffw(normalized, training=training), approximate=True)
    x = block.ffw_linear(gate * block.gating_ffw_2(normalized, training=training), training=training)
    if block.use_post_ffw_norm:
        x = block.post_ffw_norm(x)
    return x + attention_x


def _attention(layer, x, mask, positions, training):
    """`CachedGemma3Attention.call` without a cache, with RoPE at `positions`.

    Every token attends at least to itself, so KerasHub's wipe of rows that
    attend to nothing never applies and is left out.
    """
    query = layer.query_dense(x, training=training)
    key = layer.key_dense(x, training=training)
    if layer.use_query_key_norm:
        query, key = layer.query_norm(query), layer.key_norm(key)
    query = layer.rope_layer(query, positions=positions)
    key = layer.rope_layer(key, positions=positions)
    value = layer.value_dense(x, training=training)
    attended = layer._compute_attention(query, key, value, mask, training=training)
    return layer.output_dense(attended, training=training)
