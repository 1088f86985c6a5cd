"""A run's data: read from its source, filtered, and split into train, validation and test.

`read_source` reads records from a file or a TFDS split, `split_records`
shuffles them with a seed and cuts them into disjoint sets, and
`load_splits` does both as a `RunConfig` says (with an optional separate
test set and category filter).

Example:
>>> from gemma_lora.data.templates import to_prompt_response
>>> records = read_source("data/order_extraction.jsonl")
>>> splits = split_records(records, validation_fraction=0.05, test_fraction=0.1)
>>> train = to_prompt_response(splits.train)
>>> train["prompts"][0].endswith("### Response:\\n")
True
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import random
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from gemma_lora.config import RunConfig
from gemma_lora.data.files import read_records
from gemma_lora.data.hf import is_hf_source
from gemma_lora.data.hf import load_hf_records
from gemma_lora.data.records import Record
from gemma_lora.data.tfds import TFDS_PREFIX
from gemma_lora.data.tfds import load_tfds_records
from gemma_lora.data.tfds import parse_tfds_source
from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError


@dataclasses.dataclass(frozen=True)
class Splits:
    """Disjoint train, validation and test records.

    Args:
        train: records to fit on.
        validation: records for the validation loss during training.
        test: records held out for the final evaluation.

    Example:
    >>> records = [Record(f"Echo {i}.", "", str(i), f"x.jsonl:{i}") for i in range(1, 4)]
    >>> len(Splits(train=records[:2], validation=[], test=records[2:]).train)
    2
    """

    train: list[Record]
    validation: list[Record]
    test: list[Record]


def split_records(
    records: Sequence[Record],
    validation_fraction: float = 0.05,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> Splits:
    """Shuffle records with `seed` and cut them into train, validation and test.

    The same records, fractions and seed always give the same splits. Each
    held-out split gets `round(fraction * len(records))` records, and at
    least one when its fraction is above zero; train gets the rest. The test
    split is cut first, so changing `validation_fraction` keeps the test set.

    Args:
        records: all records.
        validation_fraction: share for validation, in `[0, 1)`.
        test_fraction: share for test, in `[0, 1)`.
        seed: the shuffle seed.

    Returns:
        A `Splits` of disjoint lists that together hold every record once.

    Raises:
        ConfigError: a fraction is out of range, they sum to 1 or more, or
            the seed is not an integer.
        DataError: too few records to give every split at least one.

    Example:
    >>> records = [Record(f"Echo {i}.", "", str(i), f"x.jsonl:{i}") for i in range(1, 21)]
    >>> splits = split_records(records, validation_fraction=0.1, test_fraction=0.1)
    >>> len(splits.train), len(splits.validation), len(splits.test)
    (16, 2, 2)
    """
    _check_fraction("validation_fraction", validation_fraction)
    _check_fraction("test_fraction", test_fraction)
    if validation_fraction + test_fraction >= 1:
        raise ConfigError(
            f"validation_fraction + test_fraction must be below 1; got "
            f"{validation_fraction} + {test_fraction}."
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer; got {seed!r}.")
    records = list(records)
    n_test = _split_size(len(records), test_fraction)
    n_validation = _split_size(len(records), validation_fraction)
    if n_test + n_validation >= len(records):
        raise DataError(
            f"{len(records)} records are too few for validation_fraction="
            f"{validation_fraction} and test_fraction={test_fraction}: they "
            f"need {n_test + n_validation + 1} (at least one per split)."
        )
    random.Random(seed).shuffle(records)
    return Splits(
        train=records[n_test + n_validation :],
        validation=records[n_test : n_test + n_validation],
        test=records[:n_test],
    )


def _check_fraction(name: str, value: Any) -> None:
    """Raise `ConfigError` unless `value` is a number in `[0, 1)`."""
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not is_number or not 0 <= value < 1:
        raise ConfigError(f"{name} must be a number in [0, 1); got {value!r}.")


def _split_size(total: int, fraction: float) -> int:
    """Records a held-out split gets: at least one when `fraction > 0`."""
    return 0 if fraction == 0 else max(1, round(total * fraction))


def read_source(
    source: str | os.PathLike, fields: Mapping[str, str] | None = None
) -> list[Record]:
    """Instruction records or conversations from a file, a TFDS split or a Hugging Face data set.

    Args:
        source: a `.json`, `.jsonl` or `.csv` file (see `read_records`),
            `"tfds:NAME[SPLIT]"` (see `load_tfds_records`), or
            `"hf:NAME[SPLIT]"`, a `save_to_disk` folder or a `.parquet` or
            `.arrow` file (see `load_hf_records`).
        fields: canonical field -> column or feature name.

    Returns:
        The validated records.

    Raises:
        ConfigError: `fields` names an unknown field, or a `tfds:` source
            is malformed.
        DataError: the file or data set is missing or malformed.

    Example:
    >>> len(read_source("data/order_extraction.jsonl"))
    2500
    """
    source = os.fspath(source)
    if source.startswith(TFDS_PREFIX):
        name, split = parse_tfds_source(source)
        return load_tfds_records(name, split, fields)
    if is_hf_source(source):
        return load_hf_records(source, fields)
    return read_records(source, fields)


def make_splits(
    records: Sequence[Record],
    test_records: Sequence[Record] | None = None,
    validation_fraction: float = 0.05,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> Splits:
    """Train, validation and test splits, with or without a separate test set.

    Args:
        records: the records to split.
        test_records: a separate test set; when given, `records` is split
            into training and validation only and `test_fraction` is unused.
        validation_fraction: share of `records` for validation.
        test_fraction: share of `records` for test (without `test_records`).
        seed: the shuffle seed.

    Returns:
        A `Splits`.

    Raises:
        ConfigError: a fraction or the seed is invalid (see `split_records`).
        DataError: too few records for the fractions.

    Example:
    >>> records = [Record(f"Echo {i}.", "", str(i), f"x.jsonl:{i}") for i in range(1, 21)]
    >>> splits = make_splits(records[:15], records[15:], validation_fraction=0.2)
    >>> len(splits.train), len(splits.validation), len(splits.test)
    (12, 3, 5)
    """
    if test_records is None:
        return split_records(records, validation_fraction, test_fraction, seed)
    held_out = split_records(records, validation_fraction, 0.0, seed)
    return Splits(held_out.train, held_out.validation, list(test_records))


def load_splits(config: RunConfig) -> Splits:
    """Read a run's data and split it, as its `RunConfig` says.

    Args:
        config: the run's parameters (`data_path`, `data_fields`,
            `data_categories`, `test_data_path`, `validation_fraction`,
            `test_fraction`, `seed`).

    Returns:
        A `Splits` of instruction records.

    Raises:
        ConfigError: `data_fields` names an unknown field.
        DataError: a file or record is malformed, a wanted category does
            not occur, or there are too few records for the fractions.

    Example:
    >>> len(load_splits(RunConfig()).test)
    250
    """
    records = read_source(config.data_path, config.data_fields)
    test = (read_source(config.test_data_path, config.data_fields)
            if config.test_data_path else None)
    if config.data_categories:
        records = filter_categories(records, config.data_categories)
        test = filter_categories(test, config.data_categories) if test else None
    return make_splits(records, test, config.validation_fraction, config.test_fraction,
                       config.seed)


def filter_categories(records: Sequence[Record], categories: Sequence[str]) -> list[Record]:
    """Keep the records whose `category` is one of `categories`.

    Args:
        records: records read with a `category` field (e.g. Dolly's).
        categories: the categories to keep.

    Returns:
        The matching records, in their original order.

    Raises:
        DataError: if a wanted category does not occur in the data (the
            message lists the categories that do).

    Example:
    >>> records = [Record("Q1", "", "A1", "d.jsonl:1", "open_qa"),
    ...            Record("Q2", "", "A2", "d.jsonl:2", "summarization")]
    >>> [record.source for record in filter_categories(records, ["open_qa"])]
    ['d.jsonl:1']
    """
    present = sorted({record.category for record in records})
    missing = sorted(set(categories) - set(present))
    if missing:
        shown = ", ".join(repr(c) for c in present[:20]) or "none (no 'category' field)"
        source = records[0].source.rsplit(":", 1)[0] if records else "the data"
        raise DataError(
            f"{source}: data_categories {missing} do not occur in the data; categories "
            f"present: {shown}."
        )
    return [record for record in records if record.category in categories]
