"""TensorFlow Datasets sources: `"tfds:NAME[SPLIT]"` names and their records.

A run's `data_path` may name a TFDS split instead of a file, e.g.
`"tfds:imdb_reviews[train]"`. This module parses such names, reads
instruction records from them (text features decoded from UTF-8 and
validated like file records) and turns TFDS's long errors into one line.
`tensorflow_datasets` is imported only when a data set is read, so reading
files never loads TensorFlow.

Example:
>>> parse_tfds_source("tfds:glue/sst2[validation]")
('glue/sst2', 'validation')
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from gemma_lora.data.records import Record
from gemma_lora.data.records import make_record
from gemma_lora.data.records import resolve_fields
from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError

TFDS_PREFIX = "tfds:"
"""How `data_path` names a TensorFlow Datasets split: `"tfds:NAME[SPLIT]"`."""

_TFDS_SOURCE = re.compile(r"^tfds:(?P<name>[^\[\]]+?)(?:\[(?P<split>.+)\])?$")


def parse_tfds_source(source: str) -> tuple[str, str]:
    """Split `"tfds:NAME[SPLIT]"` into the TFDS name and split.

    Args:
        source: e.g. `"tfds:glue/sst2[validation]"`; the name may carry a
            version (`"tfds:cnn_dailymail:3.4.0[train]"`) and the split
            TFDS's slicing syntax (`"tfds:imdb_reviews[test[:10%]]"`).

    Returns:
        `(name, split)`; the split is `"train"` when none is given.

    Raises:
        ConfigError: `source` is not of that form.

    Example:
    >>> parse_tfds_source("tfds:imdb_reviews[test[:10%]]")
    ('imdb_reviews', 'test[:10%]')
    """
    match = _TFDS_SOURCE.match(source)
    if not match or not match["name"].strip():
        raise ConfigError(
            f"{source!r} is not a TFDS source; expected 'tfds:NAME' or "
            "'tfds:NAME[SPLIT]', e.g. 'tfds:imdb_reviews[train]'."
        )
    return match["name"].strip(), (match["split"] or "train").strip()


def load_tfds_records(
    name: str,
    split: str = "train",
    fields: Mapping[str, str] | None = None,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
) -> list[Record]:
    """Read instruction records from a TensorFlow Datasets data set.

    The data set is downloaded and prepared by `tfds.load` the first time
    (into `data_dir`, or TFDS's default folder). Text features are decoded
    from UTF-8 and validated like file records.

    Args:
        name: the TFDS name, optionally with config and version
            (`"cnn_dailymail:3.4.0"`).
        split: the TFDS split, including slicing syntax (`"train[:10%]"`).
        fields: maps `instruction`, `input` and `output` to feature names;
            fields left out keep their canonical name.
        data_dir: where TFDS keeps its data; `None` for its default.
        limit: read at most this many examples; `None` reads them all.

    Returns:
        The records, each with the source `"tfds:name[split]#index"`.

    Raises:
        ConfigError: `fields` names an unknown field, or `limit` is not a
            positive integer or `None`.
        DataError: the data set or split does not exist, or an example lacks
            a field or has an empty or non-text one.

    Example (downloads the data set the first time)::

        records = load_tfds_records(
            "cnn_dailymail", fields={"instruction": "article", "output": "highlights"},
            limit=100)
    """
    import tensorflow_datasets as tfds  # heavy (TensorFlow); only loaded for TFDS sources

    columns = resolve_fields(fields)
    if limit is not None and (type(limit) is not int or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None; got {limit!r}.")
    origin = f"tfds:{name}[{split}]"
    try:
        dataset = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
    except ValueError as error:  # includes tfds's DatasetNotFoundError
        raise DataError(f"{origin}: {summarize_tfds_error(error)}") from None
    if limit is not None:
        dataset = dataset.take(limit)
    records = []
    for index, example in enumerate(tfds.as_numpy(dataset)):
        source = f"{origin}#{index}"
        example = {key: decode_feature(value, source, key) for key, value in example.items()}
        records.append(make_record(example, columns, source))
    if not records:
        raise DataError(f"{origin}: the split contains no examples.")
    return records


def decode_feature(value: Any, where: str, feature: str) -> Any:
    """A TFDS feature value with a byte string decoded as UTF-8 text.

    Args:
        value: the feature's value in a NumPy example (`bytes` for text).
        where: the example, e.g. `"tfds:imdb_reviews[train]#3"`.
        feature: the feature's name.

    Returns:
        The decoded `str` for `bytes`; any other value unchanged.

    Raises:
        DataError: the bytes are not UTF-8; the message names the example
            and the feature.

    Example:
    >>> decode_feature(b"caf\\xc3\\xa9", "tfds:x[train]#0", "text"), decode_feature(1, "", "label")
    ('café', 1)
    """
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{where}: feature {feature!r} is not valid UTF-8 text.") from None
    return value


def summarize_tfds_error(error: Exception) -> str:
    """The first line of a TFDS error plus its "Did you mean" hint, if any.

    Args:
        error: the exception `tfds.load` raised.

    Returns:
        A one-line summary for a `DataError` message.

    Example:
    >>> summarize_tfds_error(ValueError("Dataset imdb_reviewz not found.\\n"
    ...                                 "Available datasets: ...\\n"
    ...                                 "  Did you mean: imdb_reviewz -> imdb_reviews"))
    'Dataset imdb_reviewz not found. Did you mean: imdb_reviewz -> imdb_reviews'
    """
    lines = str(error).strip().splitlines() or [type(error).__name__]
    hints = [line.strip() for line in lines[1:] if line.strip().startswith("Did you mean")]
    return " ".join([lines[0], *hints])
