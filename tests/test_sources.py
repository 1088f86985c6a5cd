"""Data sources and splits: TFDS names, a separate test set, the Gemma chat template."""

import json

import pytest

from gemma_lora import data
from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


ROWS = [{"instruction": f"Echo {i}.", "input": "", "output": str(i)} for i in range(20)]


@pytest.mark.parametrize("source, expected", [
    ("tfds:imdb_reviews", ("imdb_reviews", "train")),
    ("tfds:glue/sst2[validation]", ("glue/sst2", "validation")),
    ("tfds:cnn_dailymail:3.4.0[test[:10%]]", ("cnn_dailymail:3.4.0", "test[:10%]")),
])
def test_parse_tfds_source(source, expected):
    assert data.parse_tfds_source(source) == expected


@pytest.mark.parametrize("source", ["tfds:", "tfds:[train]", "tfds:a[b"])
def test_malformed_tfds_source(source):
    with pytest.raises(ConfigError, match=r"is not a TFDS source; expected 'tfds:NAME'"):
        data.parse_tfds_source(source)


def test_read_source_reads_tfds_instruction_data_with_a_field_mapping():
    import tensorflow as tf
    import tensorflow_datasets as tfds

    def as_dataset(builder, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices({
            "article": ["Le chat dort.", "Il pleut."], "highlights": ["The cat sleeps.", "It rains."],
            "id": ["a", "b"], "publisher": ["x", "y"]})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        records = data.read_source("tfds:cnn_dailymail[train]",
                                   {"instruction": "article", "output": "highlights"})
    assert [(r.instruction, r.output, r.source) for r in records] == [
        ("Le chat dort.", "The cat sleeps.", "tfds:cnn_dailymail[train]#0"),
        ("Il pleut.", "It rains.", "tfds:cnn_dailymail[train]#1")]


def test_a_separate_test_set_is_kept_whole(tmp_path):
    config = RunConfig(data_path=write_jsonl(tmp_path / "train.jsonl", ROWS),
                       test_data_path=write_jsonl(tmp_path / "test.jsonl", ROWS[:3]),
                       validation_fraction=0.1, test_fraction=0.5)
    splits = data.load_splits(config)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (18, 2, 3)
    assert [r.output for r in splits.test] == ["0", "1", "2"]


def test_without_a_test_set_the_fractions_split_the_data(tmp_path):
    config = RunConfig(data_path=write_jsonl(tmp_path / "all.jsonl", ROWS),
                       validation_fraction=0.1, test_fraction=0.2)
    splits = data.load_splits(config)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (14, 2, 4)


def test_a_missing_test_file_is_named(tmp_path):
    config = RunConfig(data_path=write_jsonl(tmp_path / "all.jsonl", ROWS),
                       test_data_path=str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match=r"nope.jsonl: file not found"):
        data.load_splits(config)


def test_gemma_chat_template():
    record = data.Record("Summarize.", "A long text.", "Short.", "x:1")
    assert data.format_prompt(record, "gemma_chat") == (
        "<start_of_turn>user\nSummarize.\n\nA long text.<end_of_turn>\n<start_of_turn>model\n")
    no_input = data.Record("Say hi.", "", "Hi!", "x:2")
    assert data.format_prompt(no_input, "gemma_chat") == (
        "<start_of_turn>user\nSay hi.<end_of_turn>\n<start_of_turn>model\n")


def test_gemma_chat_turn_markers_are_single_tokens(tiny_causal_lm):
    tokenizer = tiny_causal_lm.preprocessor.tokenizer
    prompt = data.format_prompt(data.Record("Hi.", "", "x", "x:1"), "gemma_chat")
    ids = [int(i) for i in tokenizer(prompt)]
    assert ids.count(tokenizer.token_to_id("<start_of_turn>")) == 2
    assert ids.count(tokenizer.token_to_id("<end_of_turn>")) == 1


def test_an_unknown_template_is_refused_by_the_config():
    with pytest.raises(ConfigError, match=r"template must be one of \['alpaca', 'gemma_chat'\]"):
        RunConfig(template="chatml")


@pytest.mark.parametrize("name", ["reference_preset", "test_data_path", "instruction"])
def test_optional_text_parameters_must_not_be_blank(name):
    with pytest.raises(ConfigError, match=rf"{name} must be a non-empty string or None"):
        RunConfig(**{name: "  "})
