"""Instruction records: read, validate, format as Alpaca prompts and split.

A data set is a list of `Record`s with the three Alpaca fields (`instruction`,
optional `input`, `output`). They are read from a JSON list, a JSONL file, a
CSV file or a TensorFlow Datasets data set, checked field by field (an error
names the file, the line and the field), turned into the
`{"prompts": [...], "responses": [...]}` dictionary that KerasHub's
`CausalLMPreprocessor` takes (so the loss covers the response only), and split
into train, validation and test sets from a seed.

Example:
>>> records = read_records("data/order_extraction.jsonl")
>>> splits = split_records(records, validation_fraction=0.05, test_fraction=0.1)
>>> train = to_prompt_response(splits.train)
>>> train["prompts"][0].endswith("### Response:\\n")
True
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import json
import numbers
import os
import random
import re
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError

ALPACA_FIELDS = ("instruction", "input", "output")
# Fields a file may give besides the Alpaca ones, and the fields that may be absent.
RECORD_FIELDS = ALPACA_FIELDS + ("category",)
OPTIONAL_FIELDS = ("input", "category")
"""The canonical field names; `input` is optional, the others are required."""

DOLLY_FIELDS = {"instruction": "instruction", "input": "context", "output": "response"}
"""Column mapping for Databricks Dolly 15k style files (canonical -> column)."""

FORMATS = (".json", ".jsonl", ".csv")
"""File extensions `read_records` understands."""

ALPACA_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that "
    "provides further context. Write a response that appropriately completes "
    "the request.\n\n"
    "### Instruction:\n{instruction}\n\n"
    "### Input:\n{input}\n\n"
    "### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that "
    "appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n"
    "### Response:\n"
)
GEMMA_CHAT_PROMPT_WITH_INPUT = (
    "<start_of_turn>user\n{instruction}\n\n{input}<end_of_turn>\n<start_of_turn>model\n"
)
GEMMA_CHAT_PROMPT_NO_INPUT = "<start_of_turn>user\n{instruction}<end_of_turn>\n<start_of_turn>model\n"
TEMPLATES = {
    "alpaca": (ALPACA_PROMPT_WITH_INPUT, ALPACA_PROMPT_NO_INPUT),
    "gemma_chat": (GEMMA_CHAT_PROMPT_WITH_INPUT, GEMMA_CHAT_PROMPT_NO_INPUT),
}
"""Prompt templates by name: (with input, without input). `gemma_chat` is
Gemma's own turn format (the instruction and input as the user's turn, the
response as the model's); `alpaca` is Stanford Alpaca's."""

_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")

# Leading bytes of files that are not UTF-8 text, and what they are.
_NOT_UTF8_TEXT = {
    b"\x1f\x8b": "the file is gzip-compressed (decompress it first, e.g. with gunzip)",
    b"PK\x03\x04": "the file is a ZIP archive, e.g. an Excel workbook (export it as CSV)",
    b"\xff\xfe": "the file is UTF-16 text (re-save it as UTF-8)",
    b"\xfe\xff": "the file is UTF-16 text (re-save it as UTF-8)",
}

# Known field layouts (canonical -> column), to explain a record that uses another.
_LAYOUTS = {"Alpaca": {name: name for name in ALPACA_FIELDS}, "Dolly": DOLLY_FIELDS}

_JSONL_EXPECTED = "a JSON object (one complete object per line)"

_MAX_NAME_CHARS = 40  # longer names from a file are cut in messages
_MAX_NAMES_LISTED = 12  # longer lists of fields or columns are cut in messages


@dataclasses.dataclass(frozen=True)
class Record:
    """One instruction example with the canonical Alpaca fields.

    Args:
        instruction: what the model is asked to do; never empty.
        input: the context the instruction applies to; `""` when there is none.
        output: the expected response; never empty.
        source: where the record came from, `"path:line"` for files or
            `"tfds:name[split]#index"` for TensorFlow Datasets, so reports
            and errors can point back at it.
        category: an optional task category (Dolly's `category`); `""`
            when the data has none.

    Example:
    >>> record = Record("Add the numbers.", "2 and 3", "5", "sums.jsonl:1")
    >>> record.output
    '5'
    """

    instruction: str
    input: str
    output: str
    source: str
    category: str = ""


@dataclasses.dataclass(frozen=True)
class Splits:
    """Disjoint train, validation and test records.

    Args:
        train: records to fit on.
        validation: records for the validation loss during training.
        test: records held out for the final evaluation.
    """

    train: list[Record]
    validation: list[Record]
    test: list[Record]


@dataclasses.dataclass(frozen=True)
class TruncationReport:
    """How many examples do not fit in the training sequence length.

    Args:
        total: number of examples measured.
        truncated: examples longer than `sequence_length`; the preprocessor
            cuts their end, so part of (or all of) their response is lost.
        max_tokens: the longest example in model positions, i.e. the smallest
            `sequence_length` that truncates nothing (start token + prompt +
            response; the end token is only ever a label).
        sequence_length: the sequence length measured against.

    Example:
    >>> print(TruncationReport(total=200, truncated=3, max_tokens=141,
    ...                        sequence_length=128))
    3 of 200 examples (1.5%) exceed sequence_length=128 and will be truncated (longest: 141 tokens).
    """

    total: int
    truncated: int
    max_tokens: int
    sequence_length: int

    def __str__(self) -> str:
        share = 100 * self.truncated / self.total if self.total else 0.0
        return (
            f"{self.truncated} of {self.total} examples ({share:.1f}%) exceed "
            f"sequence_length={self.sequence_length} and will be truncated "
            f"(longest: {self.max_tokens} tokens)."
        )


# === Reading files ===


def read_records(
    path: str | os.PathLike,
    fields: Mapping[str, str] | None = None,
) -> list[Record]:
    """Read and validate instruction records from a JSON, JSONL or CSV file.

    The format follows the extension: `.json` holds one list of objects,
    `.jsonl` one object per line (blank lines are skipped), `.csv` a header
    row and one record per row. `instruction` and `output` must be non-empty
    strings; `input` may be absent, null or empty. Other fields are ignored,
    but a field given twice in one object is an error.

    Files are UTF-8; a leading byte order mark (as Excel writes) and Windows
    line endings are accepted. CSV follows RFC 4180 quoting, with fields of
    at most 131,072 characters (the `csv` module's limit). Every rejected
    file gives a `DataError`; `tests/bad_inputs/` holds one of each kind.

    Args:
        path: the file to read.
        fields: maps canonical field names (`instruction`, `input`,
            `output`) to the names used in the file, e.g. `DOLLY_FIELDS`.
            Fields left out keep their canonical name.

    Returns:
        The records in file order, each with its `"path:line"` source.

    Raises:
        DataError: the file is missing, unreadable or empty, or a record is
            malformed; the message names the file, the line and the field.
        ConfigError: `fields` names an unknown canonical field.

    Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "dolly.jsonl"
    >>> _ = path.write_text('{"instruction": "Name a color.", "context": "", "response": "Teal."}')
    >>> read_records(path, fields=DOLLY_FIELDS)[0].output  # from the `response` column
    'Teal.'
    """
    columns = _resolve_fields(fields)
    _check_is_file(path)
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(
            f"{path}: unsupported file extension {suffix or '(none)'!r}; "
            f"expected one of {', '.join(FORMATS)}."
        )
    text = _read_text(path)
    if not text.strip():
        content = "is empty" if not text else "holds only whitespace"
        raise DataError(f"{path}: the file contains no records (it {content}).")
    readers = {".json": _read_json, ".jsonl": _read_jsonl, ".csv": _read_csv}
    records = readers[suffix](str(path), text, columns)
    if not records:
        raise DataError(f"{path}: the file contains no records.")
    return records


def _resolve_fields(fields: Mapping[str, str] | None) -> dict[str, str]:
    """Complete a canonical -> column mapping with the canonical defaults."""
    fields = dict(fields or {})
    unknown = sorted(set(fields) - set(RECORD_FIELDS))
    if unknown:
        raise ConfigError(
            f"fields: unknown field(s) {', '.join(map(repr, unknown))}; "
            f"expected keys among {', '.join(RECORD_FIELDS)}."
        )
    for canonical, column in fields.items():
        if not isinstance(column, str) or not column:
            raise ConfigError(
                f"fields[{canonical!r}] must be a non-empty column name; "
                f"got {column!r}."
            )
    return {name: fields.get(name, name) for name in RECORD_FIELDS}


def _check_is_file(path: str | os.PathLike) -> None:
    """Raise `DataError` unless `path` names an existing file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a {', '.join(FORMATS)} file.")
    if not path.exists():
        where = "" if path.is_absolute() else f" (looked for {path.absolute()})"
        raise DataError(f"{path}: file not found{where}.")


def _read_text(path: str | os.PathLike) -> str:
    """The file decoded as UTF-8 (a leading byte order mark is dropped)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror}).") from None
    for magic, kind in _NOT_UTF8_TEXT.items():
        if data.startswith(magic):
            raise DataError(f"{path}: {kind}; expected UTF-8 text.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        byte = data[error.start:error.start + 1]
        raise DataError(
            f"{path}:{line}: invalid UTF-8 byte {byte!r} at byte {column} of the line; "
            "expected UTF-8 text (re-save the file as UTF-8)."
        ) from None


def _read_jsonl(path: str, text: str, columns: Mapping[str, str]) -> list[Record]:
    """Records from one JSON object per line."""
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            source = f"{path}:{number}"
            if line.strip() in ("{", "["):
                raise DataError(
                    f"{source}: the line holds only {line.strip()!r}; expected {_JSONL_EXPECTED}. "
                    "The file looks pretty-printed: write each object on one line, or "
                    "save one JSON list of objects as .json."
                )
            row = _parse_json(line, source, expected=_JSONL_EXPECTED)
            if isinstance(row, list):
                raise DataError(
                    f"{source}: the line holds a list; expected {_JSONL_EXPECTED}. "
                    "A file holding one JSON list of objects must be named .json."
                )
            records.append(_make_record(row, columns, source))
    return records


def _read_json(path: str, text: str, columns: Mapping[str, str]) -> list[Record]:
    """Records from one JSON list of objects."""
    items = _parse_json(text, path, expected="a JSON list of objects", add_line=True)
    if not isinstance(items, list):
        raise DataError(
            f"{path}:1: the file holds {_describe(items)}; expected a JSON list of "
            f"objects (use .jsonl for one object per line).{_wrapped_list_hint(items)}"
        )
    records = []
    for index, (item, line) in enumerate(zip(items, _json_item_lines(text))):
        source = f"{path}:{line}"
        records.append(_make_record(item, columns, source, where=f"{source} (item [{index}])"))
    return records


def _wrapped_list_hint(value: Any) -> str:
    """A hint when a JSON object wraps the list of records, as in `{"data": [...]}`."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, list):
                return f" Its key {_quote(key)} holds a list: save that list alone."
    return ""


def _parse_json(text: str, source: str, expected: str, add_line: bool = False) -> Any:
    """`json.loads` whose errors become `DataError`s naming `source` and `expected`.

    With `add_line`, `source` is a file name and the decoder's line number is
    appended to it; without, `source` already names the line.
    """
    hint = ""
    try:
        return json.loads(text, object_pairs_hook=_JsonObject.from_pairs)
    except json.JSONDecodeError as error:
        if add_line:
            source = f"{source}:{error.lineno}"
            if error.msg == "Extra data" and text.lstrip().startswith("{"):
                hint = " The file looks like JSON Lines (one object per line): name it .jsonl."
        problem = f"{error.msg.removesuffix(' at')} at column {error.colno}"
        if error.msg.startswith("Unexpected UTF-8 BOM"):
            problem = "a byte order mark (U+FEFF) in the middle of the file; were files joined?"
    except (ValueError, RecursionError) as error:
        problem = str(error) or type(error).__name__
    raise DataError(f"{source}: invalid JSON ({problem}); expected {expected}.{hint}")


class _JsonObject(dict):
    """A decoded JSON object that remembers the first key it held twice.

    JSON parsers silently keep the last of two equal keys; records check
    `duplicate_key` instead, so a file that says two things is reported.
    """

    __slots__ = ("duplicate_key",)

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> "_JsonObject":
        """`json`'s `object_pairs_hook`: build the object from its key/value pairs."""
        obj = cls()
        obj.duplicate_key = None
        for key, value in pairs:
            if key in obj and obj.duplicate_key is None:
                obj.duplicate_key = key
            obj[key] = value
        return obj


def _json_item_lines(text: str) -> list[int]:
    """The 1-based line on which each item of a valid top-level JSON list starts."""
    decoder = json.JSONDecoder()
    position = _JSON_WHITESPACE.match(text).end() + 1  # just after "["
    line, counted_to, lines = 1, 0, []
    while True:
        position = _JSON_WHITESPACE.match(text, position).end()
        if text[position] == "]":
            return lines
        line += text.count("\n", counted_to, position)
        counted_to = position
        lines.append(line)
        _, position = decoder.raw_decode(text, position)
        position = _JSON_WHITESPACE.match(text, position).end()
        position += text[position] == ","


def _read_csv(path: str, text: str, columns: Mapping[str, str]) -> list[Record]:
    """Records from a CSV file with a header row."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header, records = None, []
    line = 1
    try:
        for row in reader:
            source = f"{path}:{line}"
            first_line, line = line, reader.line_num + 1  # the next row starts after this one
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if header is None:
                header = _check_header(row, columns, source)
                continue
            if len(row) != len(header):
                last_line = line - 1
                span = (f" The row spans lines {first_line}-{last_line}: look for an "
                        'unbalanced double quote (").' if last_line > first_line else "")
                raise DataError(
                    f"{source}: the row has {len(row)} values but the header "
                    f"has {len(header)} columns.{span}"
                )
            records.append(_make_record(dict(zip(header, row)), columns, source))
    except csv.Error as error:
        raise DataError(f"{path}:{line}: {_csv_problem(error)}") from None
    return records


def _csv_problem(error: csv.Error) -> str:
    """What a `csv.Error` means for the row it was raised in."""
    message = str(error)
    if message == "unexpected end of data":
        return ('a quoted field opened in the row starting on this line is never closed: '
                'a double quote (") is unbalanced; expected a closing quote before the end '
                'of the file.')
    if message.startswith("field larger than field limit"):
        return (f"a field in the row starting on this line is longer than "
                f"{csv.field_size_limit():,} characters, the CSV reader's limit; if that is "
                'not intended, look for an unbalanced double quote (") there.')
    return f'malformed CSV ({message}); expected RFC 4180 quoting ("a ""quoted"" word").'


def _check_header(header: list[str], columns: Mapping[str, str], source: str) -> list[str]:
    """The header row, once every required column is known to be in it, once."""
    for canonical, column in columns.items():
        name = f"column {_quote(column)} (the {canonical} field)"
        if header.count(column) > 1:
            raise DataError(
                f"{source}: {name} appears {header.count(column)} times in the header; "
                "expected it once."
            )
        if canonical not in OPTIONAL_FIELDS and column not in header:
            raise DataError(
                f"{source}: no {name} in the header; the columns are "
                f"{_quote_list(header)}.{_separator_hint(header)}{_close_match(column, header)}"
            )
    return header


def _separator_hint(header: list[str]) -> str:
    """A hint when a one-column header looks separated by something else than commas."""
    if len(header) == 1:
        for separator, name in (("\t", "tabs"), (";", "semicolons")):
            if separator in header[0]:
                return f" The file seems separated by {name}: save it with commas."
    return ""


# === Validating records ===


def _make_record(
    row: Any,
    columns: Mapping[str, str],
    source: str,
    where: str | None = None,
) -> Record:
    """Validate one parsed row and return it as a `Record`.

    Args:
        row: the parsed object (a dict for valid rows).
        columns: canonical field -> column name.
        source: the record's `"path:line"`.
        where: how errors locate the row; defaults to `source`.
    """
    where = where or source
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: the record is {_describe(row)}; expected a JSON object.")
    duplicate = getattr(row, "duplicate_key", None)
    if duplicate is not None:
        raise DataError(
            f"{where}: field {_quote(duplicate)} appears twice in the object; "
            "expected each field once."
        )
    values = {
        canonical: _field_value(row, canonical, column, where)
        for canonical, column in columns.items()
    }
    return Record(**values, source=source)


def _field_value(row: Mapping[str, Any], canonical: str, column: str, where: str) -> str:
    """The validated text of one field (`""` for a missing optional input)."""
    required = canonical not in OPTIONAL_FIELDS
    name = f"field {_quote(column)}" + ("" if column == canonical else f" (the {canonical})")
    expected = "expected a non-empty string" if required else "expected a string"
    if column not in row or row[column] is None:
        if not required:
            return ""
        if column in row:
            raise DataError(f"{where}: {name} is null; {expected}.")
        raise DataError(
            f"{where}: {name} is missing; {expected}. Fields present: "
            f"{_quote_list(row) or 'none'}.{_layout_hint(row)}{_close_match(column, row)}"
        )
    value = row[column]
    if not isinstance(value, str):
        quoted = (f' (write it in quotes: "{value}")'
                  if isinstance(value, int) and not isinstance(value, bool) else "")
        raise DataError(f"{where}: {name} is {_describe(value)}; {expected}{quoted}.")
    if not value.strip():
        if not required:
            return ""
        raise DataError(f"{where}: {name} is empty or whitespace only; {expected}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(
            f"{where}: {name} contains an unpaired surrogate; {expected} of valid Unicode."
        ) from None
    return value


def _describe(value: Any) -> str:
    """A short phrase naming a JSON value's type, e.g. `a number (42)`."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, float):
        return f"a number ({json.dumps(value)})"  # spelled as in JSON: NaN, Infinity
    if isinstance(value, numbers.Number):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return "null" if value is None else type(value).__name__


def _layout_hint(row: Mapping[str, Any]) -> str:
    """A hint when a record that lacks a field has a known layout's fields instead."""
    for layout, fields in _LAYOUTS.items():
        if fields["instruction"] in row and fields["output"] in row:
            setting = ("leave data_fields unset" if layout == "Alpaca"
                       else f"set data_fields={ {k: v for k, v in fields.items() if k != v} }")
            return (
                f" This record uses {layout}'s field names ({', '.join(fields.values())}); "
                f"every record of a file must use the same names: rename the fields, or "
                f"{setting} if all records use {layout}'s."
            )
    return ""


def _close_match(name: str, names: Iterable[str]) -> str:
    """` Did you mean 'X'?` for a name in `names` that is nearly `name`, else `""`."""
    folded = {candidate.strip().lower(): candidate for candidate in names}
    if name.strip().lower() in folded:
        return f" Did you mean {_quote(folded[name.strip().lower()])}?"
    close = difflib.get_close_matches(name, list(folded.values())[:1000], n=1, cutoff=0.8)
    return f" Did you mean {_quote(close[0])}?" if close else ""


def _quote(name: str) -> str:
    """`repr(name)`, cut to `_MAX_NAME_CHARS` characters for error messages."""
    if len(name) <= _MAX_NAME_CHARS:
        return repr(name)
    return f"{name[:_MAX_NAME_CHARS]!r}... ({len(name):,} characters)"


def _quote_list(names: Iterable[str]) -> str:
    """Quoted names joined by commas, at most `_MAX_NAMES_LISTED` of them."""
    names = list(names)
    shown = ", ".join(_quote(name) for name in names[:_MAX_NAMES_LISTED])
    more = len(names) - _MAX_NAMES_LISTED
    return f"{shown} and {more:,} more" if more > 0 else shown


# === TensorFlow Datasets ===


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
        DataError: the data set or split does not exist, or an example lacks
            a field or has an empty or non-text one.

    Example:
    >>> records = load_tfds_records(  # doctest: +SKIP
    ...     "cnn_dailymail", fields={"instruction": "article", "output": "highlights"},
    ...     limit=100)
    """
    import tensorflow_datasets as tfds

    columns = _resolve_fields(fields)
    if limit is not None and (type(limit) is not int or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None; got {limit!r}.")
    origin = f"tfds:{name}[{split}]"
    try:
        dataset = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
    except ValueError as error:  # includes tfds's DatasetNotFoundError
        raise DataError(f"{origin}: {_summarize_tfds_error(error)}") from None
    if limit is not None:
        dataset = dataset.take(limit)
    records = []
    for index, example in enumerate(tfds.as_numpy(dataset)):
        source = f"{origin}#{index}"
        records.append(_make_record(_decode_example(example, source), columns, source))
    if not records:
        raise DataError(f"{origin}: the split contains no examples.")
    return records


def _decode_example(example: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A TFDS example with its byte strings decoded as UTF-8."""
    decoded = {}
    for key, value in example.items():
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{source}: feature {key!r} is not valid UTF-8 text.") from None
        decoded[key] = value
    return decoded


def _summarize_tfds_error(error: Exception) -> str:
    """The first line of a TFDS error plus its "Did you mean" hint, if any."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    hints = [line.strip() for line in lines[1:] if line.strip().startswith("Did you mean")]
    return " ".join([lines[0], *hints])


# === Prompts ===


def format_prompt(record: Record, template: str = "alpaca") -> str:
    """The prompt for one record, ending where the response begins.

    The `"alpaca"` template is Stanford Alpaca's, in its with-input and
    no-input variants; both end with `"### Response:\\n"`.

    Args:
        record: the record to format.
        template: a name in `TEMPLATES`.

    Returns:
        The prompt text; the record's `output` is the text that follows it.

    Raises:
        ConfigError: `template` is not a name in `TEMPLATES`.
        DataError: `record` is not a `Record`.

    Example:
    >>> print(format_prompt(Record("Say hi.", "", "Hi!", "x.jsonl:1")))
    Below is an instruction that describes a task. Write a response that appropriately completes the request.
    <BLANKLINE>
    ### Instruction:
    Say hi.
    <BLANKLINE>
    ### Response:
    <BLANKLINE>
    """
    if not isinstance(template, str) or template not in TEMPLATES:
        raise ConfigError(
            f"template must be one of {', '.join(map(repr, TEMPLATES))}; got {template!r}."
        )
    if not isinstance(record, Record):
        raise DataError(
            f"format_prompt takes a Record (from read_records); got {type(record).__name__}."
        )
    with_input, no_input = TEMPLATES[template]
    if record.input:
        return with_input.format(instruction=record.instruction, input=record.input)
    return no_input.format(instruction=record.instruction)


def to_prompt_response(
    records: Iterable[Record], template: str = "alpaca"
) -> dict[str, list[str]]:
    """Records as the `{"prompts", "responses"}` input of a CausalLMPreprocessor.

    KerasHub's `CausalLMPreprocessor` packs each prompt and response into one
    sequence and weights the loss on the response tokens only.

    Args:
        records: the records to format.
        template: a name in `TEMPLATES`.

    Returns:
        `{"prompts": [...], "responses": [...]}`, aligned by index.

    Example:
    >>> examples = to_prompt_response([Record("Say hi.", "", "Hi!", "x.jsonl:1")])
    >>> examples["responses"]
    ['Hi!']
    """
    records = list(records)
    return {
        "prompts": [format_prompt(record, template) for record in records],
        "responses": [record.output for record in records],
    }


# === Splitting ===


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


# === Truncation ===


def truncation_report(
    tokenizer: Any,
    examples: Mapping[str, Sequence[str]],
    sequence_length: int,
) -> TruncationReport:
    """Count the examples that do not fit in `sequence_length` tokens.

    A KerasHub `CausalLMPreprocessor` packs start token + prompt + response +
    end token into `sequence_length + 1` tokens and shifts them by one into
    inputs and labels, cutting the end of longer examples. So an example
    needs `1 + len(prompt) + len(response)` positions (its end token is only
    a label) and is truncated when that exceeds `sequence_length`. Truncated
    examples still train, on whatever part of their response fits.

    Args:
        tokenizer: a KerasHub tokenizer (e.g. the model's
            `preprocessor.tokenizer`) without a fixed sequence length.
        examples: `{"prompts": [...], "responses": [...]}` as made by
            `to_prompt_response`.
        sequence_length: the training sequence length.

    Returns:
        A `TruncationReport`; `str()` of it is a one-line summary.

    Example:
    >>> report = truncation_report(causal_lm.preprocessor.tokenizer,  # doctest: +SKIP
    ...                            to_prompt_response(records), 128)
    >>> print(report)  # doctest: +SKIP
    0 of 2500 examples (0.0%) exceed sequence_length=128 and will be truncated (longest: 122 tokens).
    """
    prompts, responses = examples["prompts"], examples["responses"]
    if len(prompts) != len(responses):
        raise DataError(
            f"examples has {len(prompts)} prompts but {len(responses)} responses."
        )
    prompt_lengths = _token_counts(tokenizer, prompts)
    response_lengths = _token_counts(tokenizer, responses)
    needed = [1 + prompt + response for prompt, response in zip(prompt_lengths, response_lengths)]
    return TruncationReport(
        total=len(needed),
        truncated=sum(length > sequence_length for length in needed),
        max_tokens=max(needed, default=0),
        sequence_length=sequence_length,
    )


def _token_counts(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Number of tokens of each text."""
    if not texts:
        return []
    ids = tokenizer(list(texts))
    if hasattr(ids, "row_lengths"):  # a tf.RaggedTensor
        return [int(length) for length in ids.row_lengths().numpy()]
    return [len(row) for row in ids]


# === Sources and splits ===

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


def read_source(
    source: str | os.PathLike, fields: Mapping[str, str] | None = None
) -> list[Record]:
    """Instruction records from a file or from a TFDS split.

    Args:
        source: a `.json`, `.jsonl` or `.csv` file (see `read_records`) or
            `"tfds:NAME[SPLIT]"` (see `load_tfds_records`).
        fields: canonical field -> column or feature name.

    Returns:
        The validated records.

    Example:
    >>> len(read_source("data/order_extraction.jsonl"))
    2500
    """
    source = os.fspath(source)
    if source.startswith(TFDS_PREFIX):
        name, split = parse_tfds_source(source)
        return load_tfds_records(name, split, fields)
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


def load_splits(config: Any) -> Splits:
    """Read a run's data and split it, as its `RunConfig` says.

    Args:
        config: a `RunConfig` (`data_path`, `data_fields`, `data_categories`, `test_data_path`,
            `validation_fraction`, `test_fraction`, `seed`).

    Returns:
        A `Splits` of instruction records.

    Example:
    >>> from gemma_lora.config import RunConfig
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
