"""Instruction records: the `Record`, its field names and their validation.

A record has the three Alpaca fields (`instruction`, optional `input`,
`output`) and an optional `category`. Files and data sets may name them
differently: `resolve_fields` completes a mapping from canonical field to
column name, and `make_record` checks one parsed row field by field (an error
names the row and the field, and what was expected).

Example:
>>> columns = resolve_fields({"output": "response"})
>>> make_record({"instruction": "Say hi.", "response": "Hi!"}, columns, "x.jsonl:1")
Record(instruction='Say hi.', input='', output='Hi!', source='x.jsonl:1', category='')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from gemma_lora.data.messages import close_match
from gemma_lora.data.messages import describe
from gemma_lora.data.messages import quote
from gemma_lora.data.messages import quote_list
from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError

ALPACA_FIELDS = ("instruction", "input", "output")
"""The canonical Alpaca field names; `input` is optional, the others are required."""

RECORD_FIELDS = ALPACA_FIELDS + ("category",)
"""Every field a record reads: the Alpaca ones and the optional `category`."""

OPTIONAL_FIELDS = ("input", "category")
"""The fields that may be absent, null or empty."""

DOLLY_FIELDS = {"instruction": "instruction", "input": "context", "output": "response"}
"""Column mapping for Databricks Dolly 15k style files (canonical -> column)."""

# Known field layouts (canonical -> column), to explain a record that uses another.
_LAYOUTS = {"Alpaca": {name: name for name in ALPACA_FIELDS}, "Dolly": DOLLY_FIELDS}


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


def resolve_fields(
    fields: Mapping[str, str] | None,
    canonical: Sequence[str] = RECORD_FIELDS,
) -> dict[str, str]:
    """Complete a canonical -> column mapping with the canonical names.

    Args:
        fields: maps canonical field names to the names used in the data;
            `None` or `{}` keeps every canonical name.
        canonical: the canonical field names, e.g. `RECORD_FIELDS`, or
            `("text", "label")` for labelled texts.

    Returns:
        `{canonical name: column name}` for every name in `canonical`, in
        its order.

    Raises:
        ConfigError: `fields` has a key not in `canonical` (the message
            names it and lists the expected keys), or a column name that is
            not a non-empty string.

    Example:
    >>> resolve_fields({"output": "response"})
    {'instruction': 'instruction', 'input': 'input', 'output': 'response', 'category': 'category'}
    >>> resolve_fields({"answer": "x"}, ("text", "label"))
    Traceback (most recent call last):
    ...
    gemma_lora.errors.ConfigError: fields: unknown field(s) 'answer'; expected keys among text, label.
    """
    fields = dict(fields or {})
    unknown = sorted(set(fields) - set(canonical))
    if unknown:
        raise ConfigError(
            f"fields: unknown field(s) {', '.join(map(repr, unknown))}; "
            f"expected keys among {', '.join(canonical)}."
        )
    for name, column in fields.items():
        if not isinstance(column, str) or not column:
            raise ConfigError(
                f"fields[{name!r}] must be a non-empty column name; got {column!r}."
            )
    return {name: fields.get(name, name) for name in canonical}


def make_record(
    row: Any,
    columns: Mapping[str, str],
    source: str,
    where: str | None = None,
) -> Record:
    """Validate one parsed row and return it as a `Record`.

    `instruction` and `output` must be non-empty strings; `input` and
    `category` may be absent, null or empty. Other fields are ignored, but
    a field given twice in one object (see `duplicate_key`) is an error.

    Args:
        row: the parsed object (a mapping for valid rows); a mapping with a
            `duplicate_key` attribute that is not `None` held that key twice.
        columns: canonical field -> column name, as from `resolve_fields`.
        source: the record's `"path:line"` (or TFDS example).
        where: how errors locate the row; defaults to `source`.

    Returns:
        The record, with `source` as its source.

    Raises:
        DataError: the row is not an object, holds a field twice, or a field
            is missing, null, empty or not a string; the message names
            `where` and the field.

    Example:
    >>> make_record({"instruction": "Say hi.", "output": 5}, resolve_fields(None), "x.jsonl:3")
    Traceback (most recent call last):
    ...
    gemma_lora.errors.DataError: x.jsonl:3: field 'output' is a number (5); expected a non-empty string (write it in quotes: "5").
    """
    where = where or source
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: the record is {describe(row)}; expected a JSON object.")
    duplicate = getattr(row, "duplicate_key", None)
    if duplicate is not None:
        raise DataError(
            f"{where}: field {quote(duplicate)} appears twice in the object; "
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
    name = f"field {quote(column)}" + ("" if column == canonical else f" (the {canonical})")
    expected = "expected a non-empty string" if required else "expected a string"
    if column not in row or row[column] is None:
        if not required:
            return ""
        if column in row:
            raise DataError(f"{where}: {name} is null; {expected}.")
        raise DataError(
            f"{where}: {name} is missing; {expected}. Fields present: "
            f"{quote_list(row) or 'none'}.{_layout_hint(row)}{close_match(column, row)}"
        )
    value = row[column]
    if not isinstance(value, str):
        quoted = (f' (write it in quotes: "{value}")'
                  if isinstance(value, int) and not isinstance(value, bool) else "")
        raise DataError(f"{where}: {name} is {describe(value)}; {expected}{quoted}.")
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
