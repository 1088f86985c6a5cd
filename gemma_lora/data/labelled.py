"""Labelled texts for classification: read, check, and turn into records.

A classification data set is a list of (text, label) pairs, read from

- a JSON, JSONL or CSV file with a text and a label column (`text` and
  `label` unless `fields` maps them to other names), or
- a TensorFlow Datasets data set named `"tfds:NAME[SPLIT]"`, e.g.
  `"tfds:imdb_reviews[train]"` or `"tfds:glue/sst2[validation]"`; class
  labels are stored as integers there and become their class names.

Labels are checked before anything trains (at least two classes, and no test
label that training never shows). Each pair then becomes a `Record`
whose instruction asks for the label, whose input is the text and whose
output is the label, so a causal LM learns classification with the same
training as any other instruction task. `load_labelled_splits` returns the
same `Splits` as the instruction data's `load_splits`; `check_labels` gives
its label set.

Example:
>>> items = read_labelled("data/sentiment_train.jsonl")
>>> items[0].label
'positive'
>>> records = to_records(items, "Is this review positive or negative?")
>>> splits = make_splits(records, validation_fraction=0.05, test_fraction=0.2)
>>> check_labels(splits)
['negative', 'positive']
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from gemma_lora.config import RunConfig
from gemma_lora.data.files import read_records
from gemma_lora.data.records import Record
from gemma_lora.data.records import resolve_fields
from gemma_lora.data.splits import Splits
from gemma_lora.data.splits import make_splits
from gemma_lora.data.templates import format_prompt
from gemma_lora.data.tfds import TFDS_PREFIX
from gemma_lora.data.tfds import decode_feature
from gemma_lora.data.tfds import parse_tfds_source
from gemma_lora.data.tfds import summarize_tfds_error
from gemma_lora.data.truncation import token_counts
from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError

LABELLED_FIELDS = ("text", "label")
"""The canonical field names of a labelled text."""


@dataclasses.dataclass(frozen=True)
class LabelledText:
    """One text and its class label.

    Args:
        text: the text to classify; never empty.
        label: the class name, e.g. `"positive"`.
        source: where it came from, `"path:line"` or `"tfds:name[split]#index"`.

    Example:
    >>> LabelledText("Loved it.", "positive", "reviews.csv:2").label
    'positive'
    """

    text: str
    label: str
    source: str


def read_labelled(
    source: str | os.PathLike,
    fields: Mapping[str, str] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> list[LabelledText]:
    """Read labelled texts from a file or a TensorFlow Datasets split.

    Args:
        source: a `.json`, `.jsonl` or `.csv` file, or `"tfds:NAME[SPLIT]"`
            (the split defaults to `train`; slicing such as
            `"tfds:imdb_reviews[test[:500]]"` works).
        fields: maps `text` and `label` to the names used in the file or
            data set, e.g. `{"text": "sentence"}` for `glue/sst2`.
        data_dir: where TFDS keeps its data; `None` for its default.

    Returns:
        The labelled texts in source order.

    Raises:
        DataError: the source is missing or malformed, a text is empty
            (the message names the file and line, or the TFDS example), or
            the TFDS data set, split or feature does not exist.
        ConfigError: `fields` names an unknown field.

    Example:
    >>> read_labelled("data/sentiment_test.jsonl")[0].source
    'data/sentiment_test.jsonl:1'

    A TFDS split (downloaded the first time)::

        items = read_labelled("tfds:glue/sst2[validation]", {"text": "sentence"})
    """
    columns = resolve_fields(fields, LABELLED_FIELDS)
    source = os.fspath(source)
    if source.startswith(TFDS_PREFIX):
        name, split = parse_tfds_source(source)
        return _read_tfds(name, split, columns, data_dir)
    records = read_records(
        source, {"instruction": columns["text"], "output": columns["label"]}
    )
    return [LabelledText(record.instruction, record.output, record.source) for record in records]


def _read_tfds(
    name: str, split: str, columns: Mapping[str, str], data_dir: str | os.PathLike | None
) -> list[LabelledText]:
    """Labelled texts from one TFDS split; class ids become class names."""
    import tensorflow_datasets as tfds  # heavy (TensorFlow); only loaded for TFDS sources

    origin = f"tfds:{name}[{split}]"
    try:
        dataset, info = tfds.load(name, split=split, data_dir=data_dir,
                                  shuffle_files=False, with_info=True)
    except (ValueError, KeyError, OSError) as error:  # includes DatasetNotFoundError
        raise DataError(f"{origin}: {summarize_tfds_error(error)}") from None
    missing = [column for column in columns.values() if column not in info.features]
    if missing:
        raise DataError(
            f"{origin}: no feature {missing[0]!r}; the features are "
            f"{sorted(info.features)}. Map them with data_fields, e.g. "
            "{'text': 'sentence', 'label': 'label'}."
        )
    class_names = getattr(info.features[columns["label"]], "names", None)
    items = []
    for index, example in enumerate(tfds.as_numpy(dataset)):
        where = f"{origin}#{index}"
        text = _text_value(example[columns["text"]], where, columns["text"])
        label = _label_value(example[columns["label"]], class_names, where, columns["label"])
        items.append(LabelledText(text, label, where))
    if not items:
        raise DataError(f"{origin}: the split contains no examples.")
    return items


def _text_value(value: Any, where: str, feature: str) -> str:
    """A TFDS text feature as a non-empty `str`."""
    value = decode_feature(value, where, feature)
    if not isinstance(value, str):
        raise DataError(f"{where}: feature {feature!r} is {type(value).__name__}; expected text.")
    if not value.strip():
        raise DataError(f"{where}: feature {feature!r} is empty; expected a non-empty text.")
    return value


def _label_value(value: Any, class_names: Sequence[str] | None, where: str, feature: str) -> str:
    """A TFDS label as a class name (class ids are looked up in `class_names`)."""
    if isinstance(value, bytes):
        return _text_value(value, where, feature)
    index = int(value)
    if index < 0:
        raise DataError(
            f"{where}: feature {feature!r} is {index}, which marks an unlabelled "
            "example (e.g. GLUE test splits); use a labelled split such as 'validation'."
        )
    if class_names is None:
        return str(index)
    return class_names[index]


def labels_of(records: Iterable[Record]) -> list[str]:
    """The distinct labels (outputs) of classification records, sorted.

    Example:
    >>> labels_of(to_records([LabelledText("Great.", "pos", "x:1"),
    ...                       LabelledText("Awful.", "neg", "x:2")], "Sentiment?"))
    ['neg', 'pos']
    """
    return sorted({record.output for record in records})


def check_labels(splits: Splits) -> list[str]:
    """Check that the splits' label sets can work, before anything trains.

    Args:
        splits: classification records (`output` = label) for training,
            validation and test.

    Returns:
        The label set: the training labels, sorted.

    Raises:
        DataError: training has fewer than two labels, or the validation or
            test split has a label that training never shows; the message
            names the labels and where the first one occurs.

    Example:
    >>> records = to_records([LabelledText("Great.", "positive", "t.csv:2"),
    ...                       LabelledText("Awful.", "negative", "t.csv:3")], "Sentiment?")
    >>> check_labels(Splits(train=records, validation=[], test=records[:1]))
    ['negative', 'positive']
    """
    labels = labels_of(splits.train)
    if len(labels) < 2:
        where = splits.train[0].source.rsplit(":", 1)[0] if splits.train else "training"
        found = f"only the label {labels[0]!r}" if labels else "no texts"
        raise DataError(
            f"{where}: the training split has {found}; classification needs texts "
            "of at least two different labels."
        )
    for name in ("validation", "test"):
        records = getattr(splits, name)
        unseen = sorted({record.output for record in records} - set(labels))
        if unseen:
            first = next(record.source for record in records if record.output in unseen)
            raise DataError(
                f"{name} label(s) {unseen} never appear in training (first at {first}); "
                f"the training labels are {labels}. A model cannot learn a label it "
                "never sees: add training examples or drop those texts."
            )
    return labels


def default_instruction(labels: Sequence[str]) -> str:
    """An instruction that asks for one of `labels` (at least two).

    Example:
    >>> default_instruction(["negative", "positive"])
    'Classify the text. Answer with one word: negative or positive.'
    """
    return f"Classify the text. Answer with one word: {', '.join(labels[:-1])} or {labels[-1]}."


def to_records(items: Iterable[LabelledText], instruction: str) -> list[Record]:
    """Labelled texts as instruction records: the label is the response.

    Args:
        items: the labelled texts.
        instruction: what the model is asked, e.g. `default_instruction(labels)`.

    Returns:
        `Record(instruction, input=text, output=label, source)` per item.

    Example:
    >>> to_records([LabelledText("Loved it.", "positive", "r.csv:2")], "Sentiment?")[0].output
    'positive'
    """
    return [Record(instruction, item.text, item.label, item.source) for item in items]


def load_labelled_splits(config: RunConfig) -> Splits:
    """Read a classification run's data, split it and check its labels.

    The labelled texts of `config.data_path` (and `config.test_data_path`,
    if set) become records whose instruction is `config.instruction`, or
    one listing the labels found in `data_path`, and are split as in
    `make_splits`. The labels are checked before this returns; their list
    is `check_labels(splits)`.

    Args:
        config: the run's parameters.

    Returns:
        The `Splits` of classification records (`output` = label).

    Raises:
        ConfigError: `data_fields` names an unknown field.
        DataError: a file or text is malformed, or the labels cannot work
            (see `check_labels`).

    Example:
    >>> config = RunConfig(data_path="data/sentiment_train.jsonl",
    ...                    test_data_path="data/sentiment_test.jsonl")
    >>> splits = load_labelled_splits(config)
    >>> check_labels(splits), len(splits.test)
    (['negative', 'positive'], 300)
    """
    items = read_labelled(config.data_path, config.data_fields)
    test_items = (read_labelled(config.test_data_path, config.data_fields)
                  if config.test_data_path else None)
    instruction = config.instruction or default_instruction(sorted({i.label for i in items}))
    splits = make_splits(
        to_records(items, instruction),
        None if test_items is None else to_records(test_items, instruction),
        config.validation_fraction, config.test_fraction, config.seed,
    )
    check_labels(splits)
    return splits


def shorten_texts(
    records: Sequence[Record],
    tokenizer: Any,
    sequence_length: int,
    template: str = "alpaca",
) -> tuple[list[Record], int]:
    """Cut long texts so that prompt and label always fit in `sequence_length`.

    A causal LM's preprocessor truncates the end of an example, which for a
    classification record is the label, so a long text would train on
    nothing and be scored on a cut label. Instead the text (the record's
    `input`) is cut, keeping its beginning, until start token + prompt + the
    longest label + end token fit.

    Args:
        records: records from `to_records`.
        tokenizer: the model's tokenizer (`model.preprocessor.tokenizer`).
        sequence_length: the model's sequence length.
        template: the prompt template name.

    Returns:
        The records (shortened ones replaced) and how many were shortened.

    Raises:
        ConfigError: the instruction and template alone leave no room for
            any text.

    Example (`causal_lm` a KerasHub causal LM)::

        records, cut = shorten_texts(records, causal_lm.preprocessor.tokenizer, 128)
    """
    records = list(records)
    budget = sequence_length - 2 - max(token_counts(tokenizer, [r.output for r in records]))
    shortened: set[int] = set()
    while True:  # token counts are not additive at a cut, so re-measure until all fit
        lengths = token_counts(tokenizer, [format_prompt(r, template) for r in records])
        over = [i for i, length in enumerate(lengths) if length > budget]
        if not over:
            return records, len(shortened)
        for i in over:
            text_ids = _token_ids(tokenizer, records[i].input)
            keep = len(text_ids) - (lengths[i] - budget) - 1
            if keep < 1:
                raise ConfigError(
                    f"sequence_length={sequence_length} is too short for the instruction "
                    f"and the {template!r} template with any text ({records[i].source}); "
                    "raise sequence_length or shorten the instruction."
                )
            text = _detokenize(tokenizer, text_ids[:keep])
            records[i] = dataclasses.replace(records[i], input=text)
            shortened.add(i)


def _token_ids(tokenizer: Any, text: str) -> list[int]:
    """The token ids of one text, as Python ints."""
    ids = tokenizer(text)
    return [int(i) for i in (ids.numpy() if hasattr(ids, "numpy") else ids)]


def _detokenize(tokenizer: Any, ids: list[int]) -> str:
    """The text of one sequence of token ids."""
    text = tokenizer.detokenize([ids])[0]
    text = text.numpy() if hasattr(text, "numpy") else text
    return text.decode("utf-8") if isinstance(text, bytes) else str(text)
