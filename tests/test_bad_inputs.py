"""The bad-input corpus: every malformed data file gives its exact error.

Each file in `tests/bad_inputs/` is one mistake people make with data files
(wrong encoding, broken JSON, wrong types, mixed layouts, broken CSV quoting,
compressed or binary files, ...). `read_records` must reject each with a
`DataError` whose message is exactly the one in `CORPUS`: it names the file,
the line (and item) and the field, and says what was expected. The `conv_*`
files are malformed conversations (`messages` and ShareGPT): their messages
also name the turn index; one reads but keeps no assistant turn within its
`sequence_length`, which `truncation_report` refuses. Large or
odd-shaped inputs (10 MB lines, folders, deep nesting) are made at test time
in `GENERATED`. `ACCEPTED` lists the near-misses that must still be read.
"""

import dataclasses
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gemma_lora.data import DOLLY_FIELDS
from gemma_lora.data import read_records
from gemma_lora.data import to_prompt_response
from gemma_lora.data import truncation_report
from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError

BAD_INPUTS = Path(__file__).resolve().parent / "bad_inputs"
GOOD = '{"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}'
DOLLY_HINT = (
    "This record uses Dolly's field names (instruction, context, response); every record "
    "of a file must use the same names: rename the fields, or set data_fields={'input': "
    "'context', 'output': 'response'} if all records use Dolly's."
)
JSONL = "expected a JSON object (one complete object per line)."
TURNS = "expected a list of turns (objects with 'role' and 'content')."
TEXT = "expected the turn's text (a non-empty string)."
ALTERNATE = ("expected user and assistant turns to alternate, starting with the user (as "
             "Gemma's chat template requires).")
ONE_SYSTEM = ("expected at most one system turn, the first (Gemma puts its text into the "
              "first user turn).")
ROLES = "expected one of 'system', 'user', 'assistant', 'model'."
TEN_MB = 10 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Case:
    """A bad file and the exact message it must give; `<file>` stands for its path."""

    file: str
    message: str
    fields: dict | None = None
    sequence_length: int | None = None  # set: the error comes from truncation_report


CORPUS = [
    # --- encodings and binary files ---
    Case("invalid_utf8.jsonl",
         "<file>:2: invalid UTF-8 byte b'\\xe9' at byte 21 of the line; expected UTF-8 "
         "text (re-save the file as UTF-8)."),
    Case("latin1.csv",
         "<file>:2: invalid UTF-8 byte b'\\xe9' at byte 18 of the line; expected UTF-8 "
         "text (re-save the file as UTF-8)."),
    Case("utf16.csv", "<file>: the file is UTF-16 text (re-save it as UTF-8); expected UTF-8 text."),
    Case("gzip.jsonl",
         "<file>: the file is gzip-compressed (decompress it first, e.g. with gunzip); "
         "expected UTF-8 text."),
    Case("excel_workbook.csv",
         "<file>: the file is a ZIP archive, e.g. an Excel workbook (export it as CSV); "
         "expected UTF-8 text."),
    Case("bom_mid_file.jsonl",
         "<file>:2: invalid JSON (a byte order mark (U+FEFF) in the middle of the file; "
         f"were files joined?); {JSONL}"),
    Case("lone_surrogate.jsonl",
         "<file>:1: field 'instruction' contains an unpaired surrogate; expected a "
         "non-empty string of valid Unicode."),
    # --- empty files and unknown formats ---
    Case("empty.jsonl", "<file>: the file contains no records (it is empty)."),
    Case("whitespace_only.json", "<file>: the file contains no records (it holds only whitespace)."),
    Case("header_only.csv", "<file>: the file contains no records."),
    Case("data.txt",
         "<file>: unsupported file extension '.txt'; expected one of .json, .jsonl, .csv."),
    # --- JSON Lines syntax ---
    Case("truncated_last_line.jsonl",
         f"<file>:3: invalid JSON (Unterminated string starting at column 28); {JSONL}"),
    Case("two_objects_one_line.jsonl", f"<file>:1: invalid JSON (Extra data at column 72); {JSONL}"),
    Case("raw_control_character.jsonl",
         f"<file>:1: invalid JSON (Invalid control character at column 21); {JSONL}"),
    Case("pretty_printed.jsonl",
         f"<file>:1: the line holds only '{{'; {JSONL} The file looks pretty-printed: write "
         "each object on one line, or save one JSON list of objects as .json."),
    Case("json_array.jsonl",
         f"<file>:1: the line holds a list; {JSONL} A file holding one JSON list of objects "
         "must be named .json."),
    Case("string_line.jsonl", "<file>:2: the record is a string; expected a JSON object."),
    # --- JSON list syntax and shape ---
    Case("trailing_comma.json",
         "<file>:3: invalid JSON (Expecting value at column 1); expected a JSON list of objects."),
    Case("json_lines_named_json.json",
         "<file>:2: invalid JSON (Extra data at column 1); expected a JSON list of objects. "
         "The file looks like JSON Lines (one object per line): name it .jsonl."),
    Case("object_not_list.json",
         "<file>:1: the file holds an object; expected a JSON list of objects (use .jsonl "
         "for one object per line)."),
    Case("wrapped_list.json",
         "<file>:1: the file holds an object; expected a JSON list of objects (use .jsonl "
         "for one object per line). Its key 'data' holds a list: save that list alone."),
    Case("nested_list.json", "<file>:1 (item [0]): the record is a list; expected a JSON object."),
    Case("string_item.json", "<file>:3 (item [1]): the record is a string; expected a JSON object."),
    # --- field types and values ---
    Case("output_number.jsonl",
         "<file>:2: field 'output' is a number (42); expected a non-empty string (write it "
         'in quotes: "42").'),
    Case("input_number.jsonl",
         "<file>:1: field 'input' is a number (21); expected a string (write it in quotes: "
         '"21").'),
    Case("output_float.json",
         "<file>:2 (item [0]): field 'output' is a number (3.14); expected a non-empty string."),
    Case("output_nan.jsonl",
         "<file>:1: field 'output' is a number (NaN); expected a non-empty string."),
    Case("instruction_infinity.jsonl",
         "<file>:1: field 'instruction' is a number (-Infinity); expected a non-empty string."),
    Case("output_boolean.jsonl",
         "<file>:1: field 'output' is a boolean (true); expected a non-empty string."),
    Case("instruction_null.jsonl",
         "<file>:3: field 'instruction' is null; expected a non-empty string."),
    Case("output_nested_object.jsonl",
         "<file>:1: field 'output' is an object; expected a non-empty string."),
    Case("instruction_list.jsonl",
         "<file>:1: field 'instruction' is a list; expected a non-empty string."),
    Case("output_whitespace.jsonl",
         "<file>:1: field 'output' is empty or whitespace only; expected a non-empty string."),
    # --- field names ---
    Case("output_missing.jsonl",
         "<file>:1: field 'output' is missing; expected a non-empty string. Fields present: "
         "'instruction', 'input'."),
    Case("empty_object.jsonl",
         "<file>:2: field 'instruction' is missing; expected a non-empty string. Fields "
         "present: none."),
    Case("case_mismatch.jsonl",
         "<file>:1: field 'instruction' is missing; expected a non-empty string. Fields "
         "present: 'Instruction', 'Output'. Did you mean 'Instruction'?"),
    Case("duplicate_key.jsonl",
         "<file>:2: field 'output' appears twice in the object; expected each field once."),
    Case("duplicate_key.json",
         "<file>:3 (item [1]): field 'instruction' appears twice in the object; expected "
         "each field once."),
    Case("dolly_without_fields.jsonl",
         "<file>:1: field 'output' is missing; expected a non-empty string. Fields present: "
         f"'instruction', 'context', 'response', 'category'. {DOLLY_HINT}"),
    Case("mixed_alpaca_dolly.jsonl",
         "<file>:3: field 'output' is missing; expected a non-empty string. Fields present: "
         f"'instruction', 'context', 'response'. {DOLLY_HINT}"),
    Case("mixed_alpaca_dolly.jsonl",
         "<file>:1: field 'response' (the output) is missing; expected a non-empty string. "
         "Fields present: 'instruction', 'input', 'output'. This record uses Alpaca's field "
         "names (instruction, input, output); every record of a file must use the same "
         "names: rename the fields, or leave data_fields unset if all records use Alpaca's.",
         fields=DOLLY_FIELDS),
    # --- CSV ---
    Case("missing_column.csv",
         "<file>:1: no column 'output' (the output field) in the header; the columns are "
         "'instruction', 'input', 'answer'."),
    Case("header_spaces.csv",
         "<file>:1: no column 'output' (the output field) in the header; the columns are "
         "'instruction', ' output'. Did you mean ' output'?"),
    Case("duplicate_column.csv",
         "<file>:1: column 'output' (the output field) appears 2 times in the header; "
         "expected it once."),
    Case("tab_separated.csv",
         "<file>:1: no column 'instruction' (the instruction field) in the header; the "
         "columns are 'instruction\\tinput\\toutput'. The file seems separated by tabs: save "
         "it with commas."),
    Case("semicolon_separated.csv",
         "<file>:1: no column 'instruction' (the instruction field) in the header; the "
         "columns are 'instruction;input;output'. The file seems separated by semicolons: "
         "save it with commas."),
    Case("unbalanced_quote.csv",
         "<file>:3: a quoted field opened in the row starting on this line is never closed: "
         'a double quote (") is unbalanced; expected a closing quote before the end of the '
         "file."),
    Case("unbalanced_quote_swallows_row.csv",
         "<file>:2: the row has 2 values but the header has 3 columns. The row spans lines "
         '2-3: look for an unbalanced double quote (").'),
    Case("text_after_quote.csv",
         "<file>:2: malformed CSV (',' expected after '\"'); expected RFC 4180 quoting "
         '("a ""quoted"" word").'),
    Case("row_too_long.csv", "<file>:2: the row has 4 values but the header has 3 columns."),
    Case("empty_output_cell.csv",
         "<file>:3: field 'output' is empty or whitespace only; expected a non-empty string."),
    # --- conversations (messages and ShareGPT) ---
    Case("conv_no_assistant.jsonl",
         "<file>:2: the conversation has no assistant turn; expected at least one (the loss "
         "falls on assistant turns)."),
    Case("conv_unknown_role.jsonl",
         f"<file>:1: messages[1]: field 'role' is 'bot', not a known role; {ROLES}"),
    Case("conv_role_case.jsonl",
         f"<file>:1: messages[0]: field 'role' is 'User', not a known role; {ROLES} "
         "Did you mean 'user'?"),
    Case("conv_two_system.jsonl", f"<file>:1: messages[1]: a second system turn; {ONE_SYSTEM}"),
    Case("conv_system_not_first.jsonl",
         f"<file>:1: messages[1]: a system turn after the first turn; {ONE_SYSTEM}"),
    Case("conv_two_user_turns.jsonl", f"<file>:3: messages[1]: two user turns in a row; {ALTERNATE}"),
    Case("conv_starts_with_assistant.jsonl",
         f"<file>:1: messages[0]: the conversation starts with an assistant turn; {ALTERNATE}"),
    Case("conv_empty_content.jsonl",
         f"<file>:1: messages[1]: field 'content' is empty or whitespace only; {TEXT}"),
    Case("conv_content_number.jsonl",
         f"<file>:1: messages[1]: field 'content' is a number (42); {TEXT}"),
    Case("conv_content_null.jsonl", f"<file>:1: messages[1]: field 'content' is null; {TEXT}"),
    Case("conv_content_parts.jsonl",
         "<file>:1: messages[0]: field 'content' is a list; expected the turn's text (a "
         "non-empty string) (lists of content parts, as for images, are not supported: give "
         "the text as one string)."),
    Case("conv_duplicate_key_turn.jsonl",
         "<file>:1: messages[0]: field 'content' appears twice in the turn; expected each "
         "field once."),
    Case("conv_messages_not_list.jsonl", f"<file>:1: field 'messages' is a string; {TURNS}"),
    Case("conv_empty_messages.jsonl", f"<file>:1: field 'messages' is an empty list; {TURNS}"),
    Case("conv_turn_string.json",
         "<file>:3 (item [1]): messages[0]: the turn is a string; expected an object with "
         "'role' and 'content'."),
    Case("conv_sharegpt_from_missing.jsonl",
         "<file>:1: conversations[1]: field 'from' is missing; expected one of 'system', "
         "'human', 'user', 'gpt', 'assistant', 'model', 'chatgpt', 'bard', 'bing', 'claude'. "
         "Fields present: 'value'."),
    Case("conv_sharegpt_fields_in_messages.jsonl",
         f"<file>:1: messages[0]: field 'role' is missing; {ROLES[:-1]}. Fields present: "
         "'from', 'value'. The turn has ShareGPT's fields ('from', 'value'): name the "
         "record's list 'conversations'."),
    Case("conv_mixed_formats.jsonl",
         "<file>:2: the record is a ShareGPT 'conversations' conversation, but line 1 holds "
         "a 'messages' conversation; expected every record of a file in one format."),
    Case("conv_mixed_alpaca_messages.jsonl",
         "<file>:2: the record is a 'messages' conversation, but line 1 holds an "
         "instruction record; expected every record of a file in one format."),
    Case("conv_truncated_away.jsonl",
         "<file>:2: every assistant turn lies beyond sequence_length=64 (the first one "
         "starts at token 109), so nothing of this example would train; raise "
         "sequence_length or shorten the text before its first assistant turn.",
         sequence_length=64),
]


def _case_id(case: Case) -> str:
    return case.file + ("-with-dolly-fields" if case.fields else "")


@pytest.mark.parametrize("case", CORPUS, ids=_case_id)
def test_bad_file_gives_its_exact_error(case, request):
    path = BAD_INPUTS / case.file
    with pytest.raises(DataError) as info:
        records = read_records(path, fields=case.fields)
        if case.sequence_length:  # the file reads; training it would not
            tokenizer = request.getfixturevalue("tiny_causal_lm").preprocessor.tokenizer
            truncation_report(tokenizer, to_prompt_response(records), case.sequence_length)
    assert str(info.value) == case.message.replace("<file>", str(path))


def test_every_corpus_file_has_an_expected_error():
    assert sorted(path.name for path in BAD_INPUTS.iterdir()) == sorted(
        {case.file for case in CORPUS}
    )


# === Inputs made at test time: too big, or not files ===


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "records.jsonl"
    folder.mkdir()
    return folder


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


GENERATED = {
    # case: (make the input in tmp_path, regex the whole message must match)
    "folder": (_folder, r"<file>: is a folder; expected a \.json, \.jsonl, \.csv file\."),
    "missing file": (
        lambda tmp: Path("no/such/records.jsonl"),
        r"no/such/records\.jsonl: file not found \(looked for /.*/no/such/records\.jsonl\)\.",
    ),
    "10 MB line that is not JSON": (
        lambda tmp: _write(tmp, "big.jsonl", "x" * TEN_MB),
        r"<file>:1: invalid JSON \(Expecting value at column 1\); " + re.escape(JSONL),
    ),
    "10 MB CSV field": (
        lambda tmp: _write(tmp, "big.csv", "instruction,output\nSummarize.," + "w" * TEN_MB),
        r"<file>:2: a field in the row starting on this line is longer than 131,072 "
        r"characters, the CSV reader's limit; if that is not intended, look for an "
        r'unbalanced double quote \("\) there\.',
    ),
    "10 MB field name": (
        lambda tmp: _write(tmp, "key.jsonl", '{"' + "k" * TEN_MB + '": "x"}'),
        r"<file>:1: field 'instruction' is missing; expected a non-empty string\. Fields "
        r"present: 'k{40}'\.\.\. \(10,485,760 characters\)\.",
    ),
    "100,000 nested lists": (
        lambda tmp: _write(tmp, "deep.jsonl", "[" * 100_000),
        r"<file>:1: invalid JSON \(maximum recursion depth exceeded.*\); expected a JSON object.*",
    ),
    "integer with 5,000 digits": (
        lambda tmp: _write(tmp, "digits.jsonl", '{"instruction": "a", "output": ' + "9" * 5000 + "}"),
        r"<file>:1: invalid JSON \(Exceeds the limit \(4300 digits\) for integer string "
        r"conversion.*\); expected a JSON object.*",
    ),
    "gzip named .json": (
        lambda tmp: _write(tmp, "data.json", gzip.compress(b"[]", mtime=0)),
        r"<file>: the file is gzip-compressed \(decompress it first, e\.g\. with gunzip\); "
        r"expected UTF-8 text\.",
    ),
}


@pytest.mark.parametrize("make, pattern", GENERATED.values(), ids=GENERATED.keys())
def test_generated_bad_input_gives_its_error(tmp_path, make, pattern):
    # How fast: benchmarks/data_reading.py.
    path = make(tmp_path)
    with pytest.raises(DataError) as info:
        read_records(path)
    expected = pattern.replace("<file>", re.escape(str(path)))
    assert re.fullmatch(expected, str(info.value)), str(info.value)[:500]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"answer": "x"}, "fields: unknown field(s) 'answer'; expected keys among instruction, "
                          "input, output, category."),
        ({"output": ""}, "fields['output'] must be a non-empty column name; got ''."),
        ({"output": None}, "fields['output'] must be a non-empty column name; got None."),
    ],
)
def test_bad_field_mapping_is_a_config_error(fields, message):
    with pytest.raises(ConfigError) as info:
        read_records(BAD_INPUTS / "output_number.jsonl", fields=fields)
    assert str(info.value) == message


# === Near misses that must be read ===


ACCEPTED = {
    # case: (file name, bytes, expected (instruction, input, output) of each record)
    "UTF-8 byte order mark, JSONL": ("bom.jsonl", b"\xef\xbb\xbf" + GOOD.encode() + b"\n",
                                     [("Add the numbers.", "2 and 3", "5")]),
    "UTF-8 byte order mark, JSON": ("bom.json", b"\xef\xbb\xbf[" + GOOD.encode() + b"]",
                                    [("Add the numbers.", "2 and 3", "5")]),
    "Windows line endings, JSONL": ("crlf.jsonl", (GOOD + "\r\n\r\n" + GOOD + "\r\n").encode(),
                                    [("Add the numbers.", "2 and 3", "5")] * 2),
    "Windows line endings, JSON": ("crlf.json", ("[\r\n" + GOOD + ",\r\n" + GOOD + "\r\n]\r\n")
                                   .encode(), [("Add the numbers.", "2 and 3", "5")] * 2),
    "Windows line endings and BOM, CSV": (
        "excel.csv", b'\xef\xbb\xbfinstruction,input,output\r\n"Say\r\nhi.",,Hi.\r\nAdd.,2,5\r\n',
        [("Say\r\nhi.", "", "Hi."), ("Add.", "2", "5")],
    ),
    "no newline at the end": ("last.jsonl", (GOOD + "\n" + GOOD).encode(),
                              [("Add the numbers.", "2 and 3", "5")] * 2),
    "NaN and nesting in an ignored field": (
        "extra.jsonl", b'{"instruction": "a", "output": "b", "score": NaN, "meta": {"x": [1]}}',
        [("a", "", "b")],
    ),
    "duplicate key in an ignored nested object": (
        "nested.jsonl", b'{"instruction": "a", "output": "b", "meta": {"x": 1, "x": 2}}',
        [("a", "", "b")],
    ),
    "empty cells in unused CSV columns": ("unused.csv", b"instruction,,output,\na,,b,\n",
                                          [("a", "", "b")]),
}


@pytest.mark.parametrize("name, content, expected", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_near_miss_is_read(tmp_path, name, content, expected):
    records = read_records(_write(tmp_path, name, content))
    assert [(r.instruction, r.input, r.output) for r in records] == expected


def test_ten_megabyte_record_is_read(tmp_path):
    output = "word " * (TEN_MB // 5)
    path = _write(tmp_path, "big.jsonl", json.dumps({"instruction": "Summarize.", "output": output}))
    (record,) = read_records(path)
    assert (record.instruction, record.input, record.output) == ("Summarize.", "", output)


def test_reading_speed_benchmark_reads_and_refuses_its_inputs():
    command = [sys.executable, "benchmarks/data_reading.py", "--mb", "0.5", "--repeats", "1"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300,
                               cwd=BAD_INPUTS.parents[1])
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [line.strip("|").split("|") for line in completed.stdout.splitlines()[2:]]
    assert [(name.strip(), result.split(":")[0].strip()) for name, _, _, result in rows] == [
        ("record", "1 record(s)"), ("line not JSON", "DataError"), ("CSV field", "DataError"),
        ("field name", "DataError"), ("nested lists", "DataError"),
        ("5,000-digit integer", "DataError")]
    assert all(re.fullmatch(r" [\d,.]+ ms ", seconds) for _, _, seconds, _ in rows)


def test_corpus_size():
    """The issue asks for at least 25 distinct bad inputs."""
    assert len(CORPUS) + len(GENERATED) >= 25
