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
TEMPLATES = {"alpaca": (ALPACA_PROMPT_WITH_INPUT, ALPACA_PROMPT_NO_INPUT)}
"""Prompt templates by name: (with input, without input)."""

_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")


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

    Example:
    >>> record = Record("Add the numbers.", "2 and 3", "5", "sums.jsonl:1")
    >>> record.output
    '5'
    """

    instruction: str
    input: str
    output: str
    source: str


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
    strings; `input` may be absent, null or empty. Other fields are ignored.

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
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(
            f"{path}: unsupported file extension {suffix or '(none)'!r}; "
            f"expected one of {', '.join(FORMATS)}."
        )
    text = _read_text(path)
    readers = {".json": _read_json, ".jsonl": _read_jsonl, ".csv": _read_csv}
    records = readers[suffix](str(path), text, columns)
    if not records:
        raise DataError(f"{path}: the file contains no records.")
    return records


def _resolve_fields(fields: Mapping[str, str] | None) -> dict[str, str]:
    """Complete a canonical -> column mapping with the canonical defaults."""
    fields = dict(fields or {})
    unknown = sorted(set(fields) - set(ALPACA_FIELDS))
    if unknown:
        raise ConfigError(
            f"fields: unknown field(s) {', '.join(map(repr, unknown))}; "
            f"expected keys among {', '.join(ALPACA_FIELDS)}."
        )
    for canonical, column in fields.items():
        if not isinstance(column, str) or not column:
            raise ConfigError(
                f"fields[{canonical!r}] must be a non-empty column name; "
                f"got {column!r}."
            )
    return {name: fields.get(name, name) for name in ALPACA_FIELDS}


def _read_text(path: str | os.PathLike) -> str:
    """The file decoded as UTF-8 (a byte order mark is dropped)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found.") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror}).") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"{path}:{line}: invalid UTF-8 byte {data[error.start:error.start + 1]!r}; "
            "expected UTF-8 text."
        ) from None


def _read_jsonl(path: str, text: str, columns: Mapping[str, str]) -> list[Record]:
    """Records from one JSON object per line."""
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            source = f"{path}:{number}"
            row = _parse_json(line, source, expected="a JSON object")
            records.append(_make_record(row, columns, source))
    return records


def _read_json(path: str, text: str, columns: Mapping[str, str]) -> list[Record]:
    """Records from one JSON list of objects."""
    items = _parse_json(text, path, expected="a JSON list of objects", add_line=True)
    if not isinstance(items, list):
        raise DataError(
            f"{path}:1: the file holds {_describe(items)}; expected a JSON "
            "list of objects (use .jsonl for one object per line)."
        )
    records = []
    for index, (item, line) in enumerate(zip(items, _json_item_lines(text))):
        source = f"{path}:{line}"
        records.append(_make_record(item, columns, source, where=f"{source} (item [{index}])"))
    return records


def _parse_json(text: str, source: str, expected: str, add_line: bool = False) -> Any:
    """`json.loads` whose errors become `DataError`s naming `source` and `expected`.

    With `add_line`, `source` is a file name and the decoder's line number is
    appended to it; without, `source` already names the line.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        if add_line:
            source = f"{source}:{error.lineno}"
        problem = f"{error.msg} at column {error.colno}"
    except (ValueError, RecursionError) as error:
        problem = str(error) or type(error).__name__
    raise DataError(f"{source}: invalid JSON ({problem}); expected {expected}.")


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
    reader = csv.reader(io.StringIO(text, newline=""))
    header, records = None, []
    line = 1
    try:
        for row in reader:
            source = f"{path}:{line}"
            line = reader.line_num + 1  # the next row starts after this one
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if header is None:
                header = _check_header(row, columns, source)
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{source}: the row has {len(row)} values but the header "
                    f"has {len(header)} columns."
                )
            records.append(_make_record(dict(zip(header, row)), columns, source))
    except csv.Error as error:
        raise DataError(f"{path}:{line}: malformed CSV ({error}).") from None
    return records


def _check_header(header: list[str], columns: Mapping[str, str], source: str) -> list[str]:
    """The header row, once every required column is known to be in it."""
    for canonical, column in columns.items():
        if canonical != "input" and column not in header:
            raise DataError(
                f"{source}: no column {column!r} (the {canonical} field) in the "
                f"header; the columns are {', '.join(map(repr, header))}."
            )
    return header


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
    values = {
        canonical: _field_value(row, canonical, column, where)
        for canonical, column in columns.items()
    }
    return Record(**values, source=source)


def _field_value(row: Mapping[str, Any], canonical: str, column: str, where: str) -> str:
    """The validated text of one field (`""` for a missing optional input)."""
    required = canonical != "input"
    name = f"field {column!r}" + ("" if column == canonical else f" (the {canonical})")
    expected = "expected a non-empty string" if required else "expected a string"
    if column not in row or row[column] is None:
        if not required:
            return ""
        problem = "is null" if column in row else "is missing"
        present = ", ".join(map(repr, row)) or "none"
        raise DataError(f"{where}: {name} {problem}; {expected}. Fields present: {present}.")
    value = row[column]
    if not isinstance(value, str):
        raise DataError(f"{where}: {name} is {_describe(value)}; {expected}.")
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
    if isinstance(value, numbers.Number):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return "null" if value is None else type(value).__name__


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
    if template not in TEMPLATES:
        raise ConfigError(
            f"template must be one of {', '.join(map(repr, TEMPLATES))}; got {template!r}."
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
