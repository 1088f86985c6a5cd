"""Classify texts with a causal LM by scoring each label; accuracy and macro-F1.

A causal LM is never asked to generate a label. For each text, every label
is scored by the log-probability the model gives to that label's tokens and
the end token right after the prompt, and the best-scoring label is the
prediction, so the answer is always one of the labels. The scoring runs as
one compiled JAX function over batches of (prompt, label) pairs; like
training, it computes the vocabulary projection only at the label's
positions.

The same `evaluate_classifier` call measures the untuned model, the tuned
one and any reference model, and also a KerasHub `TextClassifier` (whose
prediction is its logits' argmax). `load_model`, `fit_texts` and
`train_classifier` likewise take either kind, so a notebook runs the same
cells for Gemma and for, say, DistilBERT (see `text_classifier`).

Example (downloads Gemma 3 270M and trains for minutes)::

    splits = data.load_labelled_splits(config)
    labels = data.check_labels(splits)
    model = load_model(config.preset, labels)
    lora.enable_lora(model, lora.LoraConfig.from_run(config))
    splits, _ = fit_texts(splits, model, config.sequence_length, config.template)
    baseline = evaluate_classifier(model, splits.test, labels, config.template)
    train_classifier(model, config, splits, labels)
    tuned = evaluate_classifier(model, splits.test, labels, config.template)
    baseline.macro_f1, tuned.macro_f1  # (0.785, 0.98) on the shipped sentiment data
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import keras
import keras_hub
import numpy as np

from gemma_lora import data
from gemma_lora import models
from gemma_lora import training
from gemma_lora.config import RunConfig
from gemma_lora.errors import DataError
from gemma_lora.tasks import text_classifier
from gemma_lora.training import batching
from gemma_lora.training.steps import CompiledSteps


@dataclasses.dataclass
class ClassificationEvaluation:
    """Results of one model on one labelled test split.

    Args:
        accuracy: share of texts whose predicted label is right, in [0, 1].
        macro_f1: F1 averaged over the labels that occur in the references
            or the predictions, each label counting the same, in [0, 1].
        per_class_f1: F1 of each label.
        confusion: `[len(labels), len(labels)]` counts; row = true label,
            column = predicted label, in the order of `labels`.
        labels: the label set.
        predictions: the predicted label of each text, in test order.
        loss: for a causal LM, the mean cross-entropy per token of the true
            label (and end token), as in training; `None` otherwise.
        num_examples: number of test texts.
        seconds: time spent predicting.
    """

    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]
    confusion: np.ndarray
    labels: list[str]
    predictions: list[str]
    loss: float | None
    num_examples: int
    seconds: float

    def scores(self) -> dict[str, Any]:
        """The results as JSON-ready values, for tables and `metrics.json`."""
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_class_f1": self.per_class_f1,
            "confusion_matrix": self.confusion.tolist(),
            "labels": list(self.labels),
            "loss": self.loss,
            "num_examples": self.num_examples,
            "seconds": self.seconds,
        }


# === Metrics ===


def confusion_matrix(
    references: Sequence[str], predictions: Sequence[str], labels: Sequence[str]
) -> np.ndarray:
    """Count (true label, predicted label) pairs.

    Args:
        references: the true labels.
        predictions: the predicted labels, in the same order.
        labels: the label set; fixes the row and column order.

    Returns:
        An integer matrix; `[i, j]` counts texts of label `labels[i]`
        predicted as `labels[j]`.

    Raises:
        DataError: a reference or prediction is not in `labels`.

    Example:
    >>> confusion_matrix(["a", "a", "b"], ["a", "b", "b"], ["a", "b"]).tolist()
    [[1, 1], [0, 1]]
    """
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted((set(references) | set(predictions)) - set(index))
    if unknown:
        raise DataError(f"label(s) {unknown} are not in the label set {list(labels)}.")
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for reference, prediction in zip(references, predictions, strict=True):
        matrix[index[reference], index[prediction]] += 1
    return matrix


def classification_metrics(
    references: Sequence[str],
    predictions: Sequence[str],
    labels: Sequence[str],
    loss: float | None = None,
    seconds: float = 0.0,
) -> ClassificationEvaluation:
    """Accuracy, per-class and macro F1, and the confusion matrix.

    F1 of a label is `2·TP / (2·TP + FP + FN)`. The macro average leaves out
    labels that occur neither in the references nor in the predictions
    (their F1 is undefined), so a test split without some training label is
    not penalised for it.

    Args:
        references: the true labels.
        predictions: the predicted labels, in the same order.
        labels: the label set.
        loss: the mean loss on the true labels, if measured.
        seconds: time the predictions took.

    Returns:
        A `ClassificationEvaluation`.

    Example:
    >>> result = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    >>> result.accuracy, round(result.macro_f1, 3)
    (0.75, 0.733)
    """
    confusion = confusion_matrix(references, predictions, labels)
    true_positive = np.diag(confusion)
    support = true_positive * 2 + (confusion.sum(0) - true_positive) + (confusion.sum(1) - true_positive)
    f1 = np.divide(2 * true_positive, support, out=np.zeros(len(labels)), where=support > 0)
    total = int(confusion.sum())
    return ClassificationEvaluation(
        accuracy=float(true_positive.sum() / total) if total else 0.0,
        macro_f1=float(f1[support > 0].mean()) if (support > 0).any() else 0.0,
        per_class_f1={label: float(value) for label, value in zip(labels, f1)},
        confusion=confusion,
        labels=list(labels),
        predictions=list(predictions),
        loss=loss,
        num_examples=total,
        seconds=seconds,
    )


# === Scoring labels with a causal LM ===


def label_log_likelihoods(
    model: keras_hub.models.CausalLM,
    prompts: Sequence[str],
    labels: Sequence[str],
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-probability of each label (its tokens and the end token) after each prompt.

    Every (prompt, label) pair is packed exactly as in training (start
    token, prompt, label, end token), long enough that no label is cut.
    Pairs are sorted by length and cut into equal-size batches, so little
    is padded and each length bucket compiles once.

    Args:
        model: a KerasHub `CausalLM` with a preprocessor.
        prompts: formatted prompts (see `data.format_prompt`).
        labels: the label set.
        batch_size: (prompt, label) pairs per forward pass.

    Returns:
        `(log_likelihoods, token_counts)`, both `[len(prompts), len(labels)]`:
        the summed log-probability of each label and how many tokens
        (label + end token) it covers.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()  # random weights: its scores mean nothing yet
    >>> prompts = ["Review: I loved it. Sentiment:", "Review: Awful. Sentiment:"]
    >>> scores, tokens = label_log_likelihoods(model, prompts, ["negative", "positive"])
    >>> scores.shape, bool((scores < 0).all())
    ((2, 2), True)
    >>> predictions = scores.argmax(axis=1)  # the most likely label of each prompt
    """
    pairs = {
        "prompts": [prompt for prompt in prompts for _ in labels],
        "responses": [label for _ in prompts for label in labels],
    }
    preprocessor = model.preprocessor
    previous_length = preprocessor.sequence_length
    # The longest pair is start + longest prompt + longest label + end; the end
    # token must be a target, which the packed sequence (one longer than the
    # model's inputs) holds when the inputs are `needed - 1` long.
    needed = (2 + max(data.token_counts(preprocessor.tokenizer, list(prompts)))
              + max(data.token_counts(preprocessor.tokenizer, list(labels))))
    sequence_length = math.ceil((needed - 1) / 8) * 8
    try:
        split = batching.tokenize(preprocessor, pairs, sequence_length)
    finally:
        preprocessor.sequence_length = previous_length
    buckets = batching.bucket_lengths(sequence_length)
    loss_buffer = batching.loss_buffer_size(split)
    steps = CompiledSteps(model)
    order = np.argsort(split.lengths, kind="stable")
    scores = np.zeros(len(order), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        padded = np.concatenate([indices, np.repeat(indices[:1], batch_size - len(indices))])
        batch = batching.make_batch(split, padded, buckets, loss_buffer)
        scores[indices] = steps.log_likelihoods(batch)[: len(indices)]
    shape = (len(prompts), len(labels))
    return scores.reshape(shape), split.loss_tokens.reshape(shape)


# === Evaluating any classifier ===


def evaluate_classifier(
    model: keras.Model,
    records: Sequence[data.Record],
    labels: Sequence[str],
    template: str = "alpaca",
    batch_size: int = 16,
) -> ClassificationEvaluation:
    """Predict the label of every record and measure the predictions.

    A causal LM scores every label after the record's prompt (see
    `label_log_likelihoods`) and picks the most likely; a KerasHub
    `TextClassifier` classifies the record's text (its `input`).

    Args:
        model: a KerasHub `CausalLM` or `TextClassifier`.
        records: labelled records from `data.to_records`; the output is
            the true label.
        labels: the label set, in the classifier's class order.
        template: the prompt template (causal LMs only).
        batch_size: examples per forward pass.

    Returns:
        A `ClassificationEvaluation`.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()  # random weights: its predictions are guesses
    >>> test = [data.Record("Sentiment?", "I loved it.", "positive", "r.csv:2"),
    ...         data.Record("Sentiment?", "Awful.", "negative", "r.csv:3")]
    >>> baseline = evaluate_classifier(model, test, ["negative", "positive"])
    >>> baseline.num_examples, set(baseline.predictions) <= {"negative", "positive"}
    (2, True)
    >>> baseline.confusion.shape  # row = true label, column = predicted label
    (2, 2)
    """
    references = [record.output for record in records]
    unknown = sorted(set(references) - set(labels))
    if unknown:
        raise DataError(f"test label(s) {unknown} are not in the label set {list(labels)}.")
    start = time.perf_counter()
    if isinstance(model, keras_hub.models.TextClassifier):
        predictions = text_classifier.predict_labels(
            model, [record.input for record in records], labels, batch_size)
        loss = None
    else:
        prompts = [data.format_prompt(record, template) for record in records]
        scores, tokens = label_log_likelihoods(model, prompts, labels, batch_size)
        predictions = [labels[i] for i in scores.argmax(axis=1)]
        truth = np.array([list(labels).index(label) for label in references], dtype=int)
        rows = np.arange(len(records))
        loss = float(-scores[rows, truth].sum() / tokens[rows, truth].sum())
    return classification_metrics(references, predictions, labels, loss,
                                  seconds=time.perf_counter() - start)


# === Any classifier: load, fit the texts, train ===


def load_model(
    preset: str, labels: Sequence[str], dtype: str = "float32", sequence_length: int = 128
) -> keras.Model:
    """Load a causal LM, or a KerasHub text classifier with a head for `labels`.

    Args:
        preset: a causal LM preset (anything `models.load_causal_lm` takes)
            or a text-classifier preset (see
            `text_classifier.is_text_classifier_preset`).
        labels: the label set (a classifier gets one output per label).
        dtype: the Keras dtype policy name.
        sequence_length: the preprocessor's sequence length.

    Returns:
        A `CausalLM` or a `TextClassifier`, with its preprocessor.

    Example (downloads the preset)::

        model = load_model("gemma3_270m", ["negative", "positive"])
        model = load_model("distil_bert_base_en_uncased", ["negative", "positive"])
    """
    if text_classifier.is_text_classifier_preset(preset):
        return text_classifier.load_text_classifier(preset, len(labels), dtype, sequence_length)
    model = models.load_causal_lm(preset, dtype=dtype)
    model.preprocessor.sequence_length = sequence_length
    return model


def fit_texts(
    splits: data.Splits, model: keras.Model, sequence_length: int, template: str = "alpaca"
) -> tuple[data.Splits, int]:
    """Cut texts too long for a causal LM, so that the label always fits.

    See `data.shorten_texts`. A `TextClassifier`'s preprocessor cuts
    its texts itself, so its splits come back unchanged.

    Args:
        splits: classification records.
        model: the model they are for.
        sequence_length: the model's sequence length.
        template: the prompt template name.

    Returns:
        The splits, and how many texts were shortened.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()
    >>> review = data.Record("Sentiment?", "I loved it. " * 40, "positive", "r.csv:2")
    >>> splits = data.Splits(train=[review], validation=[], test=[])
    >>> splits, shortened = fit_texts(splits, model, sequence_length=64)
    >>> shortened, len(splits.train[0].input) < len(review.input)
    (1, True)
    """
    if isinstance(model, keras_hub.models.TextClassifier):
        return splits, 0
    tokenizer = model.preprocessor.tokenizer
    parts, shortened = {}, 0
    for name in ("train", "validation", "test"):
        records = getattr(splits, name)
        parts[name], count = (data.shorten_texts(records, tokenizer, sequence_length, template)
                              if records else (records, 0))
        shortened += count
    return data.Splits(**parts), shortened


def train_classifier(
    model: keras.Model,
    config: RunConfig,
    splits: data.Splits,
    labels: Sequence[str],
    log: Callable[[str], None] = print,
) -> training.TrainResult:
    """Fine-tune a LoRA-enabled classifier on the training split.

    A causal LM trains with `train.train` on prompt -> label examples (the
    loss covers the label and end token only); a `TextClassifier` trains
    with `text_classifier.train_text_classifier`. Both keep the adapter with
    the best validation loss.

    Args:
        model: a `CausalLM` or `TextClassifier` after `lora.enable_lora`.
        config: the run's parameters.
        splits: classification records.
        labels: the label set.
        log: where progress lines go.

    Returns:
        A `training.TrainResult`.

    Example (trains for minutes; see the module's example)::

        lora.enable_lora(model, lora.LoraConfig.from_run(config))
        result = train_classifier(model, config, splits, labels)
        result.best_val_loss
    """
    if isinstance(model, keras_hub.models.TextClassifier):
        return text_classifier.train_text_classifier(
            model, config, splits.train, splits.validation, labels, log)
    return training.train(model, config, label_examples(splits.train, config.template),
                          label_examples(splits.validation, config.template), log=log)


def label_examples(records: Sequence[data.Record], template: str) -> dict[str, list[str]]:
    """Prompt -> label pairs for training, the label closed by the end token.

    The label is trained exactly as `label_log_likelihoods` scores it (its
    tokens, then the end token), with either template: a `gemma_chat` record
    is not closed by `<end_of_turn>` here. Trained that way, 12 steps on the
    real Gemma 3 270M learnt the closing token at the cost of the labels
    (macro-F1 0.65 -> 0.36 on 48 reviews, `tests/test_classify_real_model.py`).

    Args:
        records: labelled records (`data.to_records`).
        template: the prompt template.

    Returns:
        `{"prompts": [...], "responses": [...]}`.

    Example:
    >>> from gemma_lora.data import Record
    >>> label_examples([Record("Sentiment?", "Loved it.", "positive", "r:1")], "gemma_chat")["responses"]
    ['positive']
    """
    return {"prompts": [data.format_prompt(record, template) for record in records],
            "responses": [record.output for record in records]}


def example_text(model: keras.Model, record: data.Record, template: str = "alpaca") -> str:
    """One training example as the model sees it, for showing in a notebook.

    Args:
        model: a `CausalLM` or `TextClassifier`.
        record: a classification record.
        template: the prompt template (causal LMs).

    Returns:
        For a causal LM, the prompt followed by the label (the response it
        learns); for a text classifier, the text and its label.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> review = data.Record("Sentiment?", "I loved it.", "positive", "r.csv:2")
    >>> print(example_text(tiny_causal_lm(), review))
    Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.
    <BLANKLINE>
    ### Instruction:
    Sentiment?
    <BLANKLINE>
    ### Input:
    I loved it.
    <BLANKLINE>
    ### Response:
    positive
    """
    if isinstance(model, keras_hub.models.TextClassifier):
        return f"text: {record.input}\nlabel: {record.output}"
    return data.format_prompt(record, template) + record.output
