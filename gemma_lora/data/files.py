"""Instruction records from JSON, JSONL and CSV files, validated line by line.

The format follows the extension: `.json` holds one list of objects, `.jsonl`
one object per line, `.csv` a header row and one record per row. Every
rejected file gives a `DataError` that names the file, the line (and, for a
JSON list, the item) and the field, and says what was expected;
`tests/bad_inputs/` holds one file of each kind.

Example:
>>> records = read_records("data/order_extraction.jsonl")
>>> records[0].source
'data/order_extraction.jsonl:1'
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gemma_lora.data.conversations import CONVERSATION_FORMATS
from gemma_lora.data.conversations import detect_format
from gemma_lora.data.conversations import format_name
from gemma_lora.data.conversations import make_conversation
from gemma_lora.data.messages import close_match
from gemma_lora.data.messages import describe
from gemma_lora.data.messages import quote
from gemma_lora.data.messages import quote_list
from gemma_lora.data.records import OPTIONAL_FIELDS
from gemma_lora.data.records import Record
from gemma_lora.data.records import make_record
from gemma_lora.data.records import resolve_fields
from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError
from gemma_lora.io_utils import read_text

FORMATS = (".json", ".jsonl", ".csv")
"""File extensions `read_records` understands."""

_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")

_JSONL_EXPECTED = "a JSON object (one complete object per line)"


def read_records(
    path: str | os.PathLike,
    fields: Mapping[str, str] | None = None,
    data_format: str | None = None,
) -> list[Record]:
    """Read and validate instruction records or conversations from a JSON, JSONL or CSV file.

    The format follows the extension: `.json` holds one list of objects,
    `.jsonl` one object per line (blank lines are skipped), `.csv` a header
    row and one record per row. `instruction` and `output` must be non-empty
    strings; `input` may be absent, null or empty. Other fields are ignored,
    but a field given twice in one object is an error.

    A JSON or JSONL record with a `messages` or `conversations` list is a
    conversation (see `data.conversations`), read as a `Conversation`;
    every record of one file must then be in the same format.

    Files are UTF-8; a leading byte order mark (as Excel writes) and Windows
    line endings are accepted. CSV follows RFC 4180 quoting, with fields of
    at most 131,072 characters (the `csv` module's limit). Every rejected
    file gives a `DataError`; `tests/bad_inputs/` holds one of each kind.

    Args:
        path: the file to read.
        fields: maps canonical field names (`instruction`, `input`,
            `output`) to the names used in the file, e.g. `DOLLY_FIELDS`.
            Fields left out keep their canonical name.
        data_format: `"messages"` or `"sharegpt"` to read every record as a
            conversation in that format; `None` (the default) detects each
            record's format from its fields.

    Returns:
        The records in file order, each with its `"path:line"` source.

    Raises:
        DataError: the file is missing, unreadable or empty, or a record is
            malformed; the message names the file, the line and the field.
        ConfigError: `fields` names an unknown canonical field, or
            `data_format` an unknown format.

    Example:
    >>> import pathlib, tempfile
    >>> from gemma_lora.data.records import DOLLY_FIELDS
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "dolly.jsonl"
    >>> _ = path.write_text('{"instruction": "Name a color.", "context": "", "response": "Teal."}')
    >>> read_records(path, fields=DOLLY_FIELDS)[0].output  # from the `response` column
    'Teal.'
    """
    columns = resolve_fields(fields)
    if data_format is not None and data_format not in CONVERSATION_FORMATS:
        raise ConfigError(f"data_format must be one of {', '.join(map(repr, CONVERSATION_FORMATS))} "
                          f"or None (detect it); got {data_format!r}.")
    _check_is_file(path)
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(
            f"{path}: unsupported file extension {suffix or '(none)'!r}; "
            f"expected one of {', '.join(FORMATS)}."
        )
    text = read_text(path)
    if not text.strip():
        content = "is empty" if not text else "holds only whitespace"
        raise DataError(f"{path}: the file contains no records (it {content}).")
    if suffix == ".csv":
        if data_format is not None:
            raise DataError(f"{path}: a CSV file holds instruction records, not conversations; "
                            f"expected a .json or .jsonl file for data_format={data_format!r}.")
        records = _read_csv(str(path), text, columns)
    else:
        reader = _read_json if suffix == ".json" else _read_jsonl
        records = reader(str(path), text, RecordMaker(columns, data_format))
    if not records:
        raise DataError(f"{path}: the file contains no records.")
    return records


def _check_is_file(path: str | os.PathLike) -> None:
    """Raise `DataError` unless `path` names an existing file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a {', '.join(FORMATS)} file.")
    if not path.exists():
        where = "" if path.is_absolute() else f" (looked for {path.absolute()})"
        raise DataError(f"{path}: file not found{where}.")


# === JSON and JSON Lines ===


class RecordMaker:
    """Makes each parsed row a `Record` or a `Conversation`, all rows of a source in one format.

    Args:
        columns: canonical field -> column name (see `resolve_fields`),
            for instruction records.
        data_format: `"messages"` or `"sharegpt"` to read every row as a
            conversation in that format; `None` detects each row's format.

    Example:
    >>> make = RecordMaker(resolve_fields(None), None)
    >>> make({"instruction": "Say hi.", "output": "Hi!"}, "x.jsonl:1").output
    'Hi!'
    >>> make({"messages": []}, "x.jsonl:2")
    Traceback (most recent call last):
    ...
    gemma_lora.errors.DataError: x.jsonl:2: the record is a 'messages' conversation, but line 1 holds an instruction record; expected every record of a file in one format.
    """

    def __init__(self, columns: Mapping[str, str], data_format: str | None) -> None:
        self.columns, self.data_format = columns, data_format
        self.first: tuple[str | None, str] | None = None  # (format, source) of the first row

    def __call__(self, row: Any, source: str, where: str | None = None) -> Record:
        """The row as a `Record` or `Conversation`, from `source` (errors say `where`)."""
        data_format = self.data_format or detect_format(row)
        if self.first is None:
            self.first = (data_format, source)
        elif data_format != self.first[0]:
            first_format, first_source = self.first
            raise DataError(
                f"{where or source}: the record is {format_name(data_format)}, but "
                f"{_position(first_source)} holds "
                f"{format_name(first_format)}; expected every record of a file in one format."
            )
        if data_format is None:
            return make_record(row, self.columns, source, where)
        return make_conversation(row, source, data_format, where)


def _position(source: str) -> str:
    """`"line 3"` for a `"path:3"` source, `"example 3"` for a `"name#3"` one."""
    if "#" in source:
        return f"example {source.rsplit('#', 1)[-1]}"
    return f"line {source.rsplit(':', 1)[-1]}"


def _read_jsonl(path: str, text: str, make: RecordMaker) -> list[Record]:
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
            records.append(make(row, source))
    return records


def _read_json(path: str, text: str, make: RecordMaker) -> list[Record]:
    """Records from one JSON list of objects."""
    items = _parse_json(text, path, expected="a JSON list of objects", add_line=True)
    if not isinstance(items, list):
        raise DataError(
            f"{path}:1: the file holds {describe(items)}; expected a JSON list of "
            f"objects (use .jsonl for one object per line).{_wrapped_list_hint(items)}"
        )
    records = []
    for index, (item, line) in enumerate(zip(items, _json_item_lines(text))):
        source = f"{path}:{line}"
        records.append(make(item, source, where=f"{source} (item [{index}])"))
    return records


def _wrapped_list_hint(value: Any) -> str:
    """A hint when a JSON object wraps the list of records, as in `{"data": [...]}`."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, list):
                return f" Its key {quote(key)} holds a list: save that list alone."
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


# === CSV ===


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
            records.append(make_record(dict(zip(header, row)), columns, source))
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
        name = f"column {quote(column)} (the {canonical} field)"
        if header.count(column) > 1:
            raise DataError(
                f"{source}: {name} appears {header.count(column)} times in the header; "
                "expected it once."
            )
        if canonical not in OPTIONAL_FIELDS and column not in header:
            raise DataError(
                f"{source}: no {name} in the header; the columns are "
                f"{quote_list(header)}.{_separator_hint(header)}{close_match(column, header)}"
            )
    return header


def _separator_hint(header: list[str]) -> str:
    """A hint when a one-column header looks separated by something else than commas."""
    if len(header) == 1:
        for separator, name in (("\t", "tabs"), (";", "semicolons")):
            if separator in header[0]:
                return f" The file seems separated by {name}: save it with commas."
    return ""
