"""Property-based tests: no input makes the record parser or the prompt builder crash.

Whatever bytes a data file holds, `read_records` either returns valid
records or raises one of our errors (a `GemmaLoraError` subclass) naming the
file; whatever text a `Record` holds and whatever template name is asked
for, `format_prompt` and `to_prompt_response` either build the prompt or
raise one of our errors. Any other exception fails these tests.
"""

import csv
import io
import json

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from gemma_lora.data import ALPACA_FIELDS
from gemma_lora.data import DOLLY_FIELDS
from gemma_lora.data import PROMPT_TEMPLATES
from gemma_lora.data import Record
from gemma_lora.data import format_prompt
from gemma_lora.data import read_records
from gemma_lora.data import to_prompt_response
from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError
from gemma_lora.errors import GemmaLoraError

FILE_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FIELD_NAMES = st.sampled_from(
    [*ALPACA_FIELDS, *DOLLY_FIELDS.values(), "Instruction", " output", "x", ""]
)
TEXT = st.text(max_size=30)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(FIELD_NAMES | TEXT, children, max_size=4),
    max_leaves=12,
)
ROWS = st.lists(st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=5), max_size=5)


def _corrupt(data: bytes, cut: int, junk: bytes) -> bytes:
    """`data` cut at a position and followed by `junk`: a truncated or damaged file."""
    return data[: cut % (len(data) + 1)] + junk


def _csv_text(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode("utf-8", "surrogatepass")


JSONL_BYTES = ROWS.map(lambda rows: "\n".join(json.dumps(row) for row in rows).encode())
JSON_BYTES = st.one_of(
    ROWS.map(lambda rows: json.dumps(rows, indent=1).encode()),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
)
CSV_BYTES = st.lists(
    st.lists(FIELD_NAMES | TEXT | st.just('"'), min_size=1, max_size=4), max_size=5
).map(_csv_text)
FIELDS = st.none() | st.just(DOLLY_FIELDS) | st.dictionaries(FIELD_NAMES, FIELD_NAMES, max_size=3)


def _file_contents(well_formed: st.SearchStrategy) -> st.SearchStrategy:
    """Random bytes, well-formed files, and well-formed files damaged at a random place."""
    return st.one_of(
        st.binary(max_size=200),
        well_formed,
        st.builds(_corrupt, well_formed, st.integers(0, 10_000), st.binary(max_size=8)),
    )


def _check_read(tmp_path, name: str, content: bytes, fields) -> None:
    """Read `content` as file `name`: valid records, or our error naming the file."""
    path = tmp_path / name
    path.write_bytes(content)
    try:
        records = read_records(path, fields=fields)
    except GemmaLoraError as error:
        assert name in str(error) or isinstance(error, ConfigError)
        return
    assert records
    for record in records:
        assert isinstance(record, Record)
        assert record.instruction.strip() and record.output.strip()
        assert isinstance(record.input, str)
        assert record.source.startswith(f"{path}:")


@FILE_SETTINGS
@given(content=_file_contents(JSONL_BYTES), fields=FIELDS)
def test_any_jsonl_bytes_give_records_or_our_error(tmp_path, content, fields):
    _check_read(tmp_path, "fuzz.jsonl", content, fields)


@FILE_SETTINGS
@given(content=_file_contents(JSON_BYTES), fields=FIELDS)
def test_any_json_bytes_give_records_or_our_error(tmp_path, content, fields):
    _check_read(tmp_path, "fuzz.json", content, fields)


@FILE_SETTINGS
@given(content=_file_contents(CSV_BYTES), fields=FIELDS)
def test_any_csv_bytes_give_records_or_our_error(tmp_path, content, fields):
    _check_read(tmp_path, "fuzz.csv", content, fields)


# === Prompts ===

ANY_TEXT = st.text()  # includes braces, surrogates, control characters, "### Response:"


@settings(max_examples=300, deadline=None)
@given(instruction=ANY_TEXT, input_=ANY_TEXT, output=ANY_TEXT,
       template=st.sampled_from(sorted(PROMPT_TEMPLATES)) | ANY_TEXT)
def test_any_record_text_gives_a_prompt_or_our_error(instruction, input_, output, template):
    record = Record(instruction, input_, output, "x.jsonl:1")
    try:
        examples = to_prompt_response([record], template=template)
    except ConfigError as error:
        assert template not in PROMPT_TEMPLATES and str(error).startswith("template must be one of")
        return
    (prompt,) = examples["prompts"]
    assert examples["responses"] == [output]
    assert prompt == format_prompt(record, template)
    form = PROMPT_TEMPLATES[template][0 if input_ else 1]
    head, tail = form.split("{", 1)[0], form.rsplit("}", 1)[1]
    assert prompt.startswith(head) and prompt.endswith(tail)
    assert instruction in prompt and input_ in prompt


@settings(max_examples=100, deadline=None)
@given(value=JSON_VALUES | st.tuples(TEXT, TEXT, TEXT),
       template=st.none() | st.integers() | st.lists(TEXT))
def test_non_records_and_non_string_templates_give_our_error(value, template):
    try:
        to_prompt_response([value])
    except DataError as error:
        assert "takes a Record" in str(error)
    else:
        raise AssertionError(f"{value!r} was formatted as a record")
    try:
        format_prompt(Record("a", "", "b", "x.jsonl:1"), template=template)
    except ConfigError as error:
        assert str(error).startswith("template must be one of")
    else:
        raise AssertionError(f"template {template!r} was accepted")
