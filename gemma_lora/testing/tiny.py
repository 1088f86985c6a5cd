"""A tiny, randomly initialised Gemma 3 and its tokenizer, for tests and examples.

The model has the real Gemma 3 architecture at toy width, so LoRA, training,
saving and generation run exactly as on the real model, in seconds. It is
not part of the fine-tuning pipeline: nothing in `gemma_lora` imports it.
"""

from __future__ import annotations

import functools
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


def train_tiny_tokenizer(texts: Iterable[str], vocabulary_size: int = 512,
                         **trainer_options) -> bytes:
    """Train a small SentencePiece model with Gemma's special tokens.

    Args:
        texts: training sentences (a few hundred words are enough).
        vocabulary_size: number of pieces, special tokens included.
        **trainer_options: further `SentencePieceTrainer` options, e.g.
            Gemma's own `normalization_rule_name="identity", add_dummy_prefix=False,
            remove_extra_whitespaces=False`.

    Returns:
        The serialized SentencePiece proto, for `Gemma3Tokenizer(proto=...)`.

    Example:
    >>> proto = train_tiny_tokenizer(["The quick brown fox jumps."] * 50, vocabulary_size=300)
    >>> import keras_hub
    >>> tokenizer = keras_hub.models.Gemma3Tokenizer(proto=proto)
    >>> tokenizer.detokenize(tokenizer.tokenize("The quick fox."))
    'The quick fox.'
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
        **trainer_options,
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
    >>> model = build_tiny_gemma3(tiny_tokenizer_proto(), sequence_length=32)
    >>> model.backbone.num_layers, model.backbone.hidden_dim
    (2, 32)
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


# The fixed text the shared tiny tokenizer learns: Alpaca-style prompts around
# short orders, colors and sentiments, the words the package's examples use.
_CORPUS_COLORS = ("red", "blue", "green", "black", "white", "yellow")
_CORPUS_ITEMS = ("mug", "hat", "shoe", "lamp", "scarf", "chair")
_CORPUS_CITIES = ("Paris", "Berlin", "Lisbon", "Oslo")


def _tiny_corpus() -> list[str]:
    texts = []
    for i, (color, item) in enumerate((c, t) for c in _CORPUS_COLORS for t in _CORPUS_ITEMS):
        city, quantity = _CORPUS_CITIES[i % len(_CORPUS_CITIES)], i % 5 + 1
        sentiment = ("positive", "negative")[i % 2]
        texts.append(
            "Below is an instruction that describes a task, paired with an input that "
            "provides further context. Write a response that appropriately completes "
            "the request.\n\n### Instruction:\nWhich color is wanted?\n\n"
            f"### Input:\nPlease send {quantity} {color} {item} to {city}.\n\n"
            f"### Response:\n{color}"
        )
        texts.append(f'{{"item": "{item}", "color": "{color}", "quantity": {quantity}, '
                     f'"city": "{city}"}}')
        texts.append(f"The {item} is {color} and I feel {sentiment} about it.")
    return texts


@functools.lru_cache(maxsize=1)
def tiny_tokenizer_proto() -> bytes:
    """The SentencePiece proto of the shared tiny tokenizer, trained once per process.

    It is trained by `train_tiny_tokenizer` on a small fixed English corpus
    (Alpaca-style prompts, colors, items, JSON orders), so every call returns
    the same bytes and a tokenizer that detokenizes such text exactly.

    Returns:
        The serialized proto, for `Gemma3Tokenizer(proto=...)` or `build_tiny_gemma3`.

    Example:
    >>> tiny_tokenizer_proto() is tiny_tokenizer_proto()  # cached
    True
    """
    return train_tiny_tokenizer(_tiny_corpus(), vocabulary_size=512)


def tiny_causal_lm(seed: int = 0, sequence_length: int = 64, **kwargs) -> keras_hub.models.Gemma3CausalLM:
    """A fresh tiny random Gemma 3 with the shared tiny tokenizer, built in about a second.

    Made for examples and tests that need a `Gemma3CausalLM`: LoRA, training,
    saving and generation run on it exactly as on a real Gemma 3, and its
    random weights generate gibberish. The tokenizer is trained once per
    process (`tiny_tokenizer_proto`), so many models stay cheap.

    Args:
        seed: seed for the random weights.
        sequence_length: the preprocessor's sequence length.
        **kwargs: further arguments of `build_tiny_gemma3` (`num_layers`,
            `hidden_dim`, `dtype`).

    Returns:
        A `Gemma3CausalLM` with a `Gemma3CausalLMPreprocessor`.

    Example:
    >>> model = tiny_causal_lm()
    >>> type(model).__name__, model.preprocessor.sequence_length
    ('Gemma3CausalLM', 64)
    >>> model.count_params() < 100_000
    True
    """
    return build_tiny_gemma3(tiny_tokenizer_proto(), sequence_length=sequence_length,
                             seed=seed, **kwargs)


def tiny_text_classifier(num_classes: int = 2, seed: int = 0,
                         sequence_length: int = 16) -> keras_hub.models.TextClassifier:
    """A tiny random DistilBERT `TextClassifier` (2 layers, width 32), built in a second.

    Its word-level vocabulary holds the words of the shared tiny corpus (see
    `tiny_tokenizer_proto`) plus `loved`, `awful`, `great` and `bad`; other
    words are `[UNK]`. Made for examples and tests of `tasks.text_classifier`.

    Args:
        num_classes: outputs of the classification head.
        seed: seed for the random weights.
        sequence_length: the preprocessor's sequence length.

    Returns:
        A `DistilBertTextClassifier` with its preprocessor.

    Example:
    >>> model = tiny_text_classifier(num_classes=3)
    >>> model.num_classes, model.predict(["I loved the red mug."], verbose=0).shape
    (3, (1, 3))
    """
    keras.utils.set_random_seed(seed)
    words = {word.strip('.,:!?"{}').lower() for text in _tiny_corpus() for word in text.split()}
    words |= {"i", "it", "loved", "awful", "great", "bad"}
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words - {""})]
    tokenizer = keras_hub.models.DistilBertTokenizer(vocabulary=vocabulary, lowercase=True)
    backbone = keras_hub.models.DistilBertBackbone(
        vocabulary_size=len(vocabulary), num_layers=2, num_heads=4, hidden_dim=32,
        intermediate_dim=64, max_sequence_length=max(64, sequence_length))
    preprocessor = keras_hub.models.DistilBertTextClassifierPreprocessor(
        tokenizer, sequence_length=sequence_length)
    return keras_hub.models.DistilBertTextClassifier(
        backbone=backbone, preprocessor=preprocessor, num_classes=num_classes)
