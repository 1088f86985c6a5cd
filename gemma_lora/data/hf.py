"""Hugging Face datasets as a source: `"hf:NAME[SPLIT]"`, saved folders, Parquet and Arrow files.

A run's `data_path` may name a data set on the Hugging Face hub,
`"hf:NAME[SPLIT]"` (e.g. `"hf:HuggingFaceH4/no_robots[train]"`), or, offline,
a folder written by `Dataset.save_to_disk` (or `DatasetDict.save_to_disk`,
with `"[SPLIT]"` after the folder to pick a split) or a local `.parquet` or
`.arrow` file. Rows with a `messages` or `conversations` column are read as
conversations (see `data.conversations`), others as instruction records
with `data_fields` mapping the columns, as for files and TFDS. The
`datasets` package is optional: it is imported only when such a source is
read, and a clear error says how to install it.

Example:
>>> parse_hf_source("hf:HuggingFaceH4/no_robots[test]")
('HuggingFaceH4/no_robots', 'test')
>>> is_hf_source("data/order_extraction.jsonl")
False
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gemma_lora.data.files import RecordMaker
from gemma_lora.data.records import Record
from gemma_lora.data.records import resolve_fields
from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError

HF_PREFIX = "hf:"
"""How `data_path` names a Hugging Face hub data set: `"hf:NAME[SPLIT]"`."""

HF_FILE_FORMATS = (".parquet", ".arrow")
"""Local files read through `datasets`."""

_SOURCE = re.compile(r"^(?P<name>.+?)(?:\[(?P<split>[^\[\]]+(?:\[[^\[\]]*\])?)\])?$")


def parse_hf_source(source: str) -> tuple[str, str]:
    """Split `"hf:NAME[SPLIT]"` (or `"FOLDER[SPLIT]"`) into the name and split.

    Args:
        source: e.g. `"hf:HuggingFaceH4/no_robots[test]"`; the split may use
            `datasets`' slicing syntax (`"train[:10%]"`).

    Returns:
        `(name, split)`; the split is `"train"` when none is given.

    Raises:
        ConfigError: no name.

    Example:
    >>> parse_hf_source("hf:imdb[train[:100]]")
    ('imdb', 'train[:100]')
    """
    text = source[len(HF_PREFIX):] if source.startswith(HF_PREFIX) else source
    match = _SOURCE.match(text.strip())
    if not match or not match["name"].strip():
        raise ConfigError(f"{source!r} is not a Hugging Face source; expected 'hf:NAME' or "
                          "'hf:NAME[SPLIT]', e.g. 'hf:HuggingFaceH4/no_robots[train]'.")
    return match["name"].strip(), (match["split"] or "train").strip()


def is_hf_source(source: str | os.PathLike) -> bool:
    """Whether `read_source` reads `source` through `datasets`.

    True for `"hf:..."`, a `.parquet` or `.arrow` file, and a folder (or
    `"folder[split]"`) written by `save_to_disk`.

    Example:
    >>> is_hf_source("hf:imdb"), is_hf_source("train.parquet"), is_hf_source("x.csv")
    (True, True, False)
    """
    source = os.fspath(source)
    if source.startswith(HF_PREFIX) or Path(source).suffix.lower() in HF_FILE_FORMATS:
        return True
    return _saved_folder(source) is not None


def _saved_folder(source: str) -> tuple[Path, str | None] | None:
    """`(folder, split or None)` when `source` names a `save_to_disk` folder."""
    name, split = parse_hf_source(source)
    folder = Path(name)
    if folder.is_dir() and any((folder / marker).is_file() for marker in
                               ("dataset_info.json", "state.json", "dataset_dict.json")):
        return folder, (split if name != source.strip() else None)
    return None


def _import_datasets(source: str):
    try:
        import datasets  # optional: only for Hugging Face sources
    except ImportError:
        raise DataError(
            f"{source}: reading Hugging Face data sets needs the optional `datasets` package, "
            "which is not installed; install it (pip install datasets, or make setup-interop) "
            "or convert the data to a .jsonl file."
        ) from None
    return datasets


def load_hf_records(source: str | os.PathLike, fields: Mapping[str, str] | None = None,
                    data_format: str | None = None) -> list[Record]:
    """Instruction records or conversations from a Hugging Face data set.

    Args:
        source: `"hf:NAME[SPLIT]"` (downloaded by `datasets.load_dataset`
            the first time), a `save_to_disk` folder (`"folder[SPLIT]"` for a
            `DatasetDict`; default `train`), or a `.parquet`/`.arrow` file.
        fields: canonical field -> column name, for instruction records.
        data_format: `"messages"` or `"sharegpt"`; `None` detects it.

    Returns:
        The records in order, each with the source `"<source>#<index>"`.

    Raises:
        DataError: `datasets` is not installed; the data set, split or file
            does not exist or the hub cannot be reached; or a row is
            malformed (the message names the row and the field).
        ConfigError: `fields` names an unknown field.

    Example (needs the optional `datasets` package)::

        import datasets
        datasets.Dataset.from_dict({"instruction": ["Say hi."], "output": ["Hi!"]}
                                   ).save_to_disk("hi_data")
        load_hf_records("hi_data")[0].source  # 'hi_data#0'
        load_hf_records("hf:HuggingFaceH4/no_robots[test]")  # messages, from the hub
    """
    source = os.fspath(source)
    columns = resolve_fields(fields)
    datasets = _import_datasets(source)
    dataset = _open(datasets, source)
    origin = source if source.startswith(HF_PREFIX) else source.strip()
    make = RecordMaker(columns, data_format)
    records = [make(dict(row), f"{origin}#{index}") for index, row in enumerate(dataset)]
    if not records:
        raise DataError(f"{origin}: the data set contains no rows.")
    return records


def _open(datasets, source: str):
    """The `datasets.Dataset` that `source` names; its errors as `DataError`s."""
    try:
        return _load(datasets, source)
    except DataError:
        raise
    except Exception as error:  # datasets' own errors (DatasetNotFoundError, ...) too
        if _is_unreachable(error):
            raise DataError(
                f"{source}: the Hugging Face hub cannot be reached ({_first_line(error)}); "
                "offline, give a folder written by save_to_disk or a .parquet file.") from None
        kind = "" if isinstance(error, (FileNotFoundError, ValueError)) else (
            f"{type(error).__name__}: ")
        raise DataError(f"{source}: {kind}{_first_line(error)}") from None


def _load(datasets, source: str):
    """The `datasets.Dataset` that `source` names."""
    saved = _saved_folder(source)
    if saved is not None:
        folder, split = saved
        loaded = datasets.load_from_disk(str(folder))
        if isinstance(loaded, datasets.DatasetDict):
            split = split or "train"
            if split not in loaded:
                raise DataError(f"{source}: the saved data set has no split {split!r}; its "
                                f"splits are {', '.join(map(repr, loaded))}.")
            return loaded[split]
        if split is not None:
            raise DataError(f"{source}: the folder holds one data set without splits; "
                            f"name the folder alone, without [{split}].")
        return loaded
    suffix = Path(source).suffix.lower()
    if suffix in HF_FILE_FORMATS:
        if not Path(source).is_file():
            raise DataError(f"{source}: file not found.")
        if suffix == ".parquet":
            return datasets.Dataset.from_parquet(source)
        return datasets.Dataset.from_file(source)
    name, split = parse_hf_source(source)
    return datasets.load_dataset(name, split=split)


def _is_unreachable(error: Exception) -> bool:
    """Whether an error from `datasets` means the hub could not be reached."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    name, text = type(error).__name__, str(error).lower()
    return ("Connect" in name or "Timeout" in name or "offline" in text
            or "couldn't reach" in text)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
