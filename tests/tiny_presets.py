"""Tiny random models for the classification tests, built in seconds.

- `sentiment_proto()`: a SentencePiece tokenizer trained on the shipped
  sentiment reviews and the prompt templates (with Gemma's special tokens).
- `save_tiny_gemma_preset(folder, seed)`: a tiny Gemma 3 causal LM with that
  tokenizer, written with `save_to_preset`, so it loads like any local preset
  (the offline stand-in for a larger `reference_preset` too).
- `tiny_distilbert_classifier(num_classes)`: a tiny randomly initialised
  DistilBERT `TextClassifier` with a word-level vocabulary of the reviews.
"""

import functools
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SENTIMENT_TRAIN = REPO / "data" / "sentiment_train.jsonl"
SENTIMENT_TEST = REPO / "data" / "sentiment_test.jsonl"


def sentiment_rows(path=SENTIMENT_TRAIN, count=None):
    """The first `count` rows of a shipped sentiment file, as dicts."""
    with open(path, encoding="utf-8") as file:
        rows = [json.loads(line) for line in file]
    return rows[:count]


@functools.cache
def sentiment_proto() -> bytes:
    from gemma_lora import data
    from gemma_lora.testing import train_tiny_tokenizer

    texts = [row["text"] for row in sentiment_rows(count=400)]
    texts += [template.format(instruction="Classify the sentiment.", input="x")
              for pair in data.PROMPT_TEMPLATES.values() for template in pair] * 10
    return train_tiny_tokenizer(texts + ["positive", "negative"] * 20, vocabulary_size=600)


def save_tiny_gemma_preset(folder, seed=0, sequence_length=96) -> Path:
    """Write a tiny Gemma 3 causal LM preset to `folder`; returns it."""
    from gemma_lora.testing import build_tiny_gemma3

    model = build_tiny_gemma3(sentiment_proto(), sequence_length=sequence_length, seed=seed)
    model.save_to_preset(str(folder))
    return Path(folder)


def tiny_distilbert_classifier(num_classes=2, seed=0, sequence_length=16):
    """A tiny random DistilBERT text classifier (2 layers, width 32, 4 heads)."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    words = sorted({word.strip(".,:!?").lower() for row in sentiment_rows(count=600)
                    for word in row["text"].split()} - {""})
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    tokenizer = keras_hub.models.DistilBertTokenizer(vocabulary=vocabulary, lowercase=True)
    backbone = keras_hub.models.DistilBertBackbone(
        vocabulary_size=len(vocabulary), num_layers=2, num_heads=4, hidden_dim=32,
        intermediate_dim=64, max_sequence_length=64)
    preprocessor = keras_hub.models.DistilBertTextClassifierPreprocessor(
        tokenizer, sequence_length=sequence_length)
    return keras_hub.models.DistilBertTextClassifier(
        backbone=backbone, preprocessor=preprocessor, num_classes=num_classes)
