"""Tests of `gemma_lora.data` and of the shipped `data/order_extraction.jsonl`."""

import importlib.util
import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from gemma_lora import config
from gemma_lora import data
from gemma_lora.data import DOLLY_FIELDS
from gemma_lora.data import Record
from gemma_lora.data import format_prompt
from gemma_lora.data import load_tfds_records
from gemma_lora.data import read_records
from gemma_lora.data import split_records
from gemma_lora.data import to_prompt_response
from gemma_lora.data import truncation_report
from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "data" / "order_extraction.jsonl"
GENERATOR = REPO / "data" / "make_order_extraction.py"
ORDER_KEYS = ["item", "color", "size", "quantity", "city"]

ALPACA_ROWS = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Name a primary color.", "input": "", "output": "Red."},
    {"instruction": "Say hi, with a comma.", "input": "line one\nline two", "output": "Hi, you."},
]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def jsonl(*rows):
    return "".join(json.dumps(row) + "\n" for row in rows)


def read_error(tmp_path, name, text, fields=None):
    """The message of the DataError that reading `text` as `name` raises."""
    path = write(tmp_path, name, text)
    with pytest.raises(DataError) as info:
        read_records(path, fields=fields)
    return str(info.value)


def records(count):
    return [Record(f"Echo {i}.", "", str(i), f"x.jsonl:{i + 1}") for i in range(count)]


# === Reading: round trips ===


def test_jsonl_round_trip(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl(*ALPACA_ROWS[:2]) + "\n  \n" + jsonl(ALPACA_ROWS[2]))
    result = read_records(path)
    assert [(r.instruction, r.input, r.output) for r in result] == [
        tuple(row.values()) for row in ALPACA_ROWS
    ]
    assert [r.source for r in result] == [f"{path}:1", f"{path}:2", f"{path}:5"]


def test_json_list_round_trip_with_item_lines(tmp_path):
    path = write(tmp_path, "a.json", json.dumps(ALPACA_ROWS, indent=2))
    result = read_records(path)
    assert [r.output for r in result] == ["5", "Red.", "Hi, you."]
    # Each object spans 5 lines with indent=2, after the opening "[" line.
    assert [r.source for r in result] == [f"{path}:2", f"{path}:7", f"{path}:12"]


def test_csv_round_trip_with_multiline_field(tmp_path):
    text = (
        "instruction,input,output,extra\n"
        'Add the numbers.,2 and 3,5,x\n'
        'Name a primary color.,,Red.,y\n'
        '"Say hi, with a comma.","line one\nline two","Hi, you.",z\n'
        "Count.,,3,w\n"
    )
    result = read_records(write(tmp_path, "a.csv", text))
    assert [(r.instruction, r.input, r.output) for r in result[:3]] == [
        tuple(row.values()) for row in ALPACA_ROWS
    ]
    assert [r.source.rsplit(":", 1)[1] for r in result] == ["2", "3", "4", "6"]


def test_utf8_bom_and_crlf_are_accepted(tmp_path):
    text = "\ufeffinstruction,output\r\nTranslate: café,Kaffee\r\n"
    (record,) = read_records(write(tmp_path, "a.csv", text))
    assert (record.instruction, record.output) == ("Translate: café", "Kaffee")


def test_optional_input_may_be_absent_null_empty_or_blank(tmp_path):
    rows = [
        {"instruction": "a", "output": "b"},
        {"instruction": "a", "input": None, "output": "b"},
        {"instruction": "a", "input": "", "output": "b"},
        {"instruction": "a", "input": "  ", "output": "b"},
    ]
    assert [r.input for r in read_records(write(tmp_path, "a.jsonl", jsonl(*rows)))] == [""] * 4


def test_dolly_mapping(tmp_path):
    row = {"instruction": "Sum up.", "context": "Long text.", "response": "Short.", "category": "x"}
    (record,) = read_records(write(tmp_path, "dolly.jsonl", jsonl(row)), fields=DOLLY_FIELDS)
    assert (record.instruction, record.input, record.output) == ("Sum up.", "Long text.", "Short.")


def test_partial_mapping_keeps_canonical_names(tmp_path):
    text = "question,answer\nWhy?,Because.\n"
    (record,) = read_records(
        write(tmp_path, "qa.csv", text), fields={"instruction": "question", "output": "answer"}
    )
    assert (record.instruction, record.input, record.output) == ("Why?", "", "Because.")


@pytest.mark.parametrize(
    "fields, needle",
    [
        ({"answer": "x"}, "unknown field(s) 'answer'"),
        ({"output": ""}, "fields['output']"),
        ({"output": 3}, "fields['output']"),
    ],
)
def test_bad_field_mapping_is_a_config_error(tmp_path, fields, needle):
    path = write(tmp_path, "a.jsonl", jsonl(ALPACA_ROWS[0]))
    with pytest.raises(ConfigError) as info:
        read_records(path, fields=fields)
    assert needle in str(info.value)


# === Reading: errors name the file, the line and the field ===


GOOD = json.dumps(ALPACA_ROWS[0])

JSONL_ERRORS = {
    # case: (file text, line, words the message must contain)
    "invalid JSON": (
        f'{GOOD}\n{{"instruction": "a", \n', 2, ["invalid JSON", "expected a JSON object"]
    ),
    "list line": (f'{GOOD}\n{GOOD}\n["a", "b"]\n', 3, ["a list", "expected a JSON object"]),
    "string line": (f'{GOOD}\n"just text"\n', 2, ["a string", "expected a JSON object"]),
    "missing field": (
        f'{GOOD}\n{{"instruction": "a", "input": "b"}}\n',
        2,
        ["'output'", "missing", "Fields present: 'instruction', 'input'"],
    ),
    "null": ('{"instruction": null, "output": "b"}\n', 1, ["'instruction'", "null", "non-empty"]),
    "number": (
        f'{GOOD}\n{{"instruction": 42, "output": "b"}}\n', 2, ["'instruction'", "a number (42)"]
    ),
    "list": ('{"instruction": "a", "output": ["b"]}\n', 1, ["'output'", "a list", "non-empty"]),
    "boolean": ('{"instruction": "a", "output": true}\n', 1, ["'output'", "a boolean (true)"]),
    "input number": (
        '{"instruction": "a", "input": 7, "output": "b"}\n', 1, ["'input'", "expected a string"]
    ),
    "blank": (f'{GOOD}\n\n{{"instruction": "a", "output": "  \\n "}}\n', 3, ["'output'", "empty"]),
    "surrogate": ('{"instruction": "\\ud800", "output": "b"}\n', 1, ["'instruction'", "surrogate"]),
}


@pytest.mark.parametrize("text, line, words", JSONL_ERRORS.values(), ids=JSONL_ERRORS.keys())
def test_jsonl_errors(tmp_path, text, line, words):
    message = read_error(tmp_path, "bad.jsonl", text)
    assert f"bad.jsonl:{line}:" in message
    for word in words:
        assert word in message


def test_mapped_field_error_names_the_column_and_the_field(tmp_path):
    message = read_error(
        tmp_path, "dolly.jsonl", jsonl({"instruction": "a", "context": ""}), fields=DOLLY_FIELDS
    )
    assert "dolly.jsonl:1:" in message and "'response' (the output)" in message


def test_invalid_utf8_names_its_line(tmp_path):
    message = read_error(tmp_path, "bad.jsonl", GOOD.encode() + b'\n{"instruction": "\xff"}\n')
    assert "bad.jsonl:2:" in message and "UTF-8" in message


def test_json_list_errors_name_the_item_and_its_line(tmp_path):
    items = [ALPACA_ROWS[0], {"instruction": "a", "output": 3}]
    message = read_error(tmp_path, "bad.json", json.dumps(items, indent=2))
    assert "bad.json:7 (item [1]): field 'output' is a number (3)" in message


def test_json_syntax_error_names_its_line(tmp_path):
    message = read_error(tmp_path, "bad.json", "[\n" + GOOD + ",\n" + GOOD + "\n")
    assert "bad.json:4:" in message and "invalid JSON" in message


def test_json_that_is_not_a_list(tmp_path):
    message = read_error(tmp_path, "bad.json", GOOD)
    assert "bad.json:1:" in message and "an object" in message and "list of objects" in message


@pytest.mark.parametrize(
    "name, text",
    [("e.jsonl", ""), ("e.jsonl", "\n \n"), ("e.json", "[]"), ("e.csv", "instruction,output\n")],
)
def test_empty_files(tmp_path, name, text):
    assert f"{name}: the file contains no records" in read_error(tmp_path, name, text)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        read_records(tmp_path / "nope.jsonl")


def test_unknown_extension(tmp_path):
    message = read_error(tmp_path, "data.txt", GOOD)
    assert "data.txt" in message and "'.txt'" in message and ".json, .jsonl, .csv" in message


def test_csv_missing_column_lists_the_columns(tmp_path):
    message = read_error(tmp_path, "bad.csv", "instruction,answer\na,b\n")
    assert "bad.csv:1: no column 'output'" in message and "'instruction', 'answer'" in message


def test_csv_empty_cell_names_line_and_field(tmp_path):
    message = read_error(tmp_path, "bad.csv", 'instruction,output\na,b\n"multi\nline",c\nd, \n')
    assert "bad.csv:5:" in message and "'output'" in message and "empty" in message


def test_csv_row_with_wrong_length(tmp_path):
    message = read_error(tmp_path, "bad.csv", "instruction,output\na,b,c\n")
    assert "bad.csv:2:" in message and "3 values" in message and "2 columns" in message


JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.lists(st.integers())
)
JSONL_ROWS = st.lists(
    st.dictionaries(st.sampled_from(["instruction", "input", "output", "x"]), JSON_VALUES),
    max_size=4,
)
TEXT_LINES = st.lists(st.text(max_size=40), max_size=5)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content=st.one_of(
        st.binary(max_size=300),
        TEXT_LINES.map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")),
        JSONL_ROWS.map(lambda rows: "\n".join(json.dumps(row) for row in rows).encode()),
    )
)
def test_arbitrary_jsonl_gives_records_or_data_error(tmp_path, content):
    path = write(tmp_path, "fuzz.jsonl", content)
    try:
        result = read_records(path)
    except DataError as error:
        assert "fuzz.jsonl" in str(error)
        return
    assert result and all(r.instruction.strip() and r.output.strip() for r in result)


# === Prompts ===


def test_alpaca_prompt_with_input():
    record = Record("Add the numbers.", "2 and 3", "5", "x.jsonl:1")
    assert format_prompt(record) == (
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n"
    )


def test_alpaca_prompt_without_input():
    record = Record("Name a {color}.", "", "Red.", "x.jsonl:1")
    assert format_prompt(record) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nName a {color}.\n\n### Response:\n"
    )


def test_to_prompt_response_puts_outputs_in_responses():
    examples = to_prompt_response(records(3))
    assert examples["responses"] == ["0", "1", "2"]
    assert [p.endswith("### Response:\n") for p in examples["prompts"]] == [True] * 3


def test_unknown_template():
    with pytest.raises(ConfigError, match="template must be one of 'alpaca', 'gemma_chat'; got 'chatml'"):
        to_prompt_response(records(1), template="chatml")


# === Splits ===


def test_split_is_deterministic_disjoint_and_complete():
    items = records(100)
    splits = split_records(items, validation_fraction=0.05, test_fraction=0.1, seed=3)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (85, 5, 10)
    assert split_records(items, 0.05, 0.1, seed=3) == splits
    assert split_records(items, 0.05, 0.1, seed=4) != splits
    sources = [r.source for part in (splits.train, splits.validation, splits.test) for r in part]
    assert sorted(sources) == sorted(r.source for r in items)
    assert [r.source for r in items] == [f"x.jsonl:{i + 1}" for i in range(100)]  # input untouched


def test_test_split_does_not_depend_on_validation_fraction():
    items = records(50)
    first, second = split_records(items, 0.1, 0.2, seed=1), split_records(items, 0.3, 0.2, seed=1)
    assert first.test == second.test and first.validation != second.validation


def test_small_fractions_still_give_one_record_and_zero_gives_none():
    splits = split_records(records(5), validation_fraction=0.01, test_fraction=0.0)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (4, 1, 0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"validation_fraction": -0.1}, "validation_fraction"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"test_fraction": "0.1"}, "test_fraction"),
        ({"test_fraction": True}, "test_fraction"),
        ({"validation_fraction": 0.5, "test_fraction": 0.5}, "validation_fraction + test_fraction"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_split_parameters(kwargs, name):
    with pytest.raises(ConfigError) as info:
        split_records(records(20), **kwargs)
    assert str(info.value).startswith(name)


def test_too_few_records_to_split():
    with pytest.raises(DataError, match="2 records are too few .* need 3"):
        split_records(records(2), validation_fraction=0.1, test_fraction=0.1)


# === TensorFlow Datasets ===


def test_tfds_records_with_mock_data():
    import tensorflow as tf
    import tensorflow_datasets as tfds

    articles = ["Le chat dort.", "Il pleut.", "Bonjour."]

    def as_dataset(builder, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices({
            "article": articles,
            "highlights": ["The cat sleeps.", "It rains.", "Hello."],
            "id": ["a", "b", "c"],
            "publisher": ["x", "y", "z"],
        })

    fields = {"instruction": "article", "output": "highlights"}
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        result = load_tfds_records("cnn_dailymail", split="train", fields=fields, limit=2)
    assert [(r.instruction, r.input, r.output) for r in result] == [
        ("Le chat dort.", "", "The cat sleeps."),
        ("Il pleut.", "", "It rains."),
    ]
    assert result[1].source == "tfds:cnn_dailymail[train]#1"


def test_tfds_missing_feature_names_the_example_and_the_field():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(DataError) as info:
            load_tfds_records("cnn_dailymail", fields={"instruction": "article"})
    assert "tfds:cnn_dailymail[train]#0: field 'output' is missing" in str(info.value)


def test_tfds_unknown_dataset():
    with pytest.raises(DataError) as info:
        load_tfds_records("cnn_dailymal")
    message = str(info.value)
    assert message.startswith("tfds:cnn_dailymal[train]: Dataset cnn_dailymal not found.")
    assert "Did you mean: cnn_dailymal -> cnn_dailymail" in message


# === Truncation ===


@pytest.fixture(scope="module")
def tiny_tokenizer():
    """A Gemma 3 tokenizer over a 200-piece SentencePiece model trained here."""
    import keras_hub
    import sentencepiece

    words = "the a cat dog sat on mat red blue big small runs jumps over under fast slow".split()
    corpus = [
        " ".join(words[(i * 7 + j) % len(words)] for j in range(3 + i % 9)) for i in range(400)
    ]
    corpus += [format_prompt(Record("Describe the animal.", "a cat", "x", "s"))] * 5
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=200,
        pad_id=0, pad_piece="<pad>", eos_id=1, eos_piece="<eos>", bos_id=2, bos_piece="<bos>",
        unk_id=3, hard_vocab_limit=False, minloglevel=2,
    )
    return keras_hub.models.Gemma3Tokenizer(proto=model.getvalue(), has_vision_tokens=False)


def test_truncation_report_matches_the_gemma3_preprocessor(tiny_tokenizer):
    import keras_hub
    import numpy as np

    responses = ["cat " * n + "runs" for n in range(12)]
    examples = to_prompt_response(Record("Describe the animal.", "", r, "s") for r in responses)
    lengths = [
        1 + len(tiny_tokenizer(prompt)) + len(tiny_tokenizer(response))
        for prompt, response in zip(examples["prompts"], examples["responses"])
    ]
    sequence_length = sorted(lengths)[6]  # some fit exactly, some are one token too long

    report = truncation_report(tiny_tokenizer, examples, sequence_length)

    preprocessor = keras_hub.models.Gemma3CausalLMPreprocessor(
        tiny_tokenizer, sequence_length=sequence_length
    )
    x, y, _ = preprocessor(examples)
    # The packed sequence is x plus the last label; it lost tokens if shorter than needed.
    kept = np.sum(np.asarray(x["padding_mask"]), axis=1) + (np.asarray(y)[:, -1] != 0)
    assert report.truncated == int(np.sum(kept < np.array(lengths) + 1)) == 5
    assert (report.total, report.max_tokens) == (12, max(lengths))
    assert str(report) == (
        f"5 of 12 examples (41.7%) exceed sequence_length={sequence_length} and will be "
        f"truncated (longest: {max(lengths)} tokens)."
    )


def test_truncation_report_counts_nothing_when_all_fit(tiny_tokenizer):
    report = truncation_report(tiny_tokenizer, to_prompt_response(records(3)), 1024)
    assert (report.total, report.truncated) == (3, 0)


def test_the_prompt_templates_are_the_configs_template_names():
    assert set(data.PROMPT_TEMPLATES) == set(config.TEMPLATES)


# === The shipped data set ===


def test_shipped_order_extraction_data():
    result = read_records(SHIPPED)
    assert len(result) >= 2400
    assert len({r.input for r in result}) == len(result)
    for record in result:
        order = json.loads(record.output)
        assert list(order) == ORDER_KEYS, record.source
        assert order["quantity"] in range(1, 13), record.source
        assert order["size"] in {None, "XS", "S", "M", "L", "XL"} or order["size"].isdigit()
        assert record.output == json.dumps(order, ensure_ascii=False, separators=(",", ":"))
    assert SHIPPED.stat().st_size < 1_000_000


def test_generator_reproduces_the_shipped_file(tmp_path):
    spec = importlib.util.spec_from_file_location("make_order_extraction", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output = tmp_path / "orders.jsonl"
    module.main(["--output", str(output)])
    assert output.read_bytes() == SHIPPED.read_bytes()
    assert os.listdir(tmp_path) == ["orders.jsonl"]  # no temporary file left behind


def test_dolly_categories_are_read_and_filtered(tmp_path):
    from gemma_lora.config import RunConfig
    from gemma_lora.data import filter_categories, load_splits

    path = tmp_path / "dolly.jsonl"
    rows = [{"instruction": f"Q{i}", "context": "", "response": f"A{i}",
             "category": ("open_qa", "summarization", "brainstorming")[i % 3]} for i in range(30)]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    records = read_records(path, fields=DOLLY_FIELDS)
    assert records[1].category == "summarization"
    kept = filter_categories(records, ["open_qa", "brainstorming"])
    assert len(kept) == 20 and {r.category for r in kept} == {"open_qa", "brainstorming"}
    with pytest.raises(DataError, match=r"data_categories \['creative_writing'\] do not occur in the data; "
                                        r"categories present: 'brainstorming', 'open_qa', 'summarization'"):
        filter_categories(records, ["creative_writing"])
    config = RunConfig(data_path=str(path), data_fields=DOLLY_FIELDS, data_categories="open_qa",
                       validation_fraction=0.2, test_fraction=0.2)
    splits = load_splits(config)
    assert {r.category for r in splits.train + splits.validation + splits.test} == {"open_qa"}
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 10
