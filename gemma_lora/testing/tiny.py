"""A tiny, randomly initialised Gemma 3 and its tokenizer, for tests and examples.

The model has the real Gemma 3 architecture at toy width, so LoRA, training,
saving and generation run exactly as on the real model, in seconds. It is
not part of the fine-tuning pipeline: nothing in `gemma_lora` imports it.
"""

from __future__ import annotations

import io
from typing import Iterable

import keras
import keras_hub
import sentencepiece


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
