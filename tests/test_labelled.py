"""Labelled texts: files, TFDS (mocked), label checks, splits and shortening."""

import json

import pytest

from gemma_lora import data
from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError
from gemma_lora.data import LabelledText


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def records(pairs, source="t.jsonl"):
    items = [LabelledText(text, label, f"{source}:{i}") for i, (text, label) in enumerate(pairs, 1)]
    return data.to_records(items, "Sentiment?")


# === Files ===


def test_reads_jsonl_and_csv_with_text_and_label(tmp_path):
    jsonl = write_jsonl(tmp_path / "r.jsonl", [{"text": "Loved it.", "label": "positive", "kind": "x"},
                                                {"text": "Awful.", "label": "negative"}])
    csv = tmp_path / "r.csv"
    csv.write_text('review,sentiment\n"Great, really.",pos\nMeh.,neg\n', encoding="utf-8")
    assert data.read_labelled(jsonl) == [
        LabelledText("Loved it.", "positive", f"{jsonl}:1"),
        LabelledText("Awful.", "negative", f"{jsonl}:2"),
    ]
    items = data.read_labelled(csv, {"text": "review", "label": "sentiment"})
    assert [(i.text, i.label, i.source) for i in items] == [
        ("Great, really.", "pos", f"{csv}:2"), ("Meh.", "neg", f"{csv}:3")]


def test_empty_text_names_the_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"text": "Fine.", "label": "positive"},
                                              {"text": "  ", "label": "negative"}])
    with pytest.raises(DataError, match=rf"{path}:2: field 'text'.*empty"):
        data.read_labelled(path)


def test_unknown_field_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^fields: unknown field\(s\) 'output'; "
                                          r"expected keys among text, label\.$"):
        data.read_labelled(tmp_path / "r.jsonl", {"output": "y"})


# === Label checks ===


def test_check_labels_returns_the_sorted_training_labels():
    splits = data.Splits(records([("a", "pos"), ("b", "neg"), ("c", "pos")]), [],
                         records([("d", "neg")]))
    assert data.check_labels(splits) == ["neg", "pos"]


def test_a_single_class_is_refused_before_training():
    splits = data.Splits(records([("a", "pos"), ("b", "pos")], "one.jsonl"), [], [])
    with pytest.raises(DataError, match=r"one.jsonl: the training split has only the label 'pos'"):
        data.check_labels(splits)


@pytest.mark.parametrize("split", ["test", "validation"])
def test_a_label_unseen_in_training_is_named(split):
    train = records([("a", "pos"), ("b", "neg")])
    held_out = records([("c", "pos"), ("d", "neutral")], "held.jsonl")
    splits = data.Splits(train, held_out if split == "validation" else [],
                         held_out if split == "test" else [])
    with pytest.raises(DataError, match=rf"{split} label\(s\) \['neutral'\] never appear in "
                                        r"training \(first at held.jsonl:2\)"):
        data.check_labels(splits)


def test_default_instruction_lists_the_labels():
    assert data.default_instruction(["neg", "neu", "pos"]) == (
        "Classify the text. Answer with one word: neg, neu or pos.")


# === Splits from a RunConfig ===


def test_load_splits_with_a_separate_test_file(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl",
                        [{"text": f"text {i}", "label": "ab"[i % 2]} for i in range(20)])
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "new", "label": "b"}])
    config = RunConfig(data_path=str(train), test_data_path=str(test), validation_fraction=0.1)
    splits = data.load_labelled_splits(config)
    labels = data.check_labels(splits)
    assert labels == ["a", "b"]
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (18, 2, 1)
    assert splits.test[0].input == "new"
    assert splits.test[0].instruction == "Classify the text. Answer with one word: a or b."


def test_load_splits_refuses_a_test_label_unseen_in_training(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl",
                        [{"text": f"text {i}", "label": "ab"[i % 2]} for i in range(20)])
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "new", "label": "c"}])
    config = RunConfig(data_path=str(train), test_data_path=str(test), instruction="Which?")
    with pytest.raises(DataError, match=r"test label\(s\) \['c'\] never appear in training"):
        data.load_labelled_splits(config)


def test_shipped_sentiment_data_loads_with_the_notebook_defaults():
    config = RunConfig(data_path="data/sentiment_train.jsonl",
                       test_data_path="data/sentiment_test.jsonl")
    splits = data.load_labelled_splits(config)
    labels = data.check_labels(splits)
    assert labels == ["negative", "positive"]
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (1140, 60, 300)


# === TensorFlow Datasets (mocked: no download) ===


def mock_tfds(features):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    def as_dataset(builder, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices(features)

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def test_tfds_class_ids_become_class_names():
    with mock_tfds({"text": ["Great film.", "Dull film."], "label": [1, 0]}):
        items = data.read_labelled("tfds:imdb_reviews[train[:2]]")
    assert items == [LabelledText("Great film.", "pos", "tfds:imdb_reviews[train[:2]]#0"),
                     LabelledText("Dull film.", "neg", "tfds:imdb_reviews[train[:2]]#1")]


def test_tfds_fields_are_mapped():
    features = {"sentence": ["A joy.", "A bore."], "label": [1, 0], "idx": [0, 1]}
    with mock_tfds(features):
        items = data.read_labelled("tfds:glue/sst2[validation]", {"text": "sentence"})
    assert [(i.text, i.label) for i in items] == [("A joy.", "positive"), ("A bore.", "negative")]


def test_tfds_unlabelled_examples_are_refused():
    features = {"sentence": ["A joy."], "label": [-1], "idx": [0]}
    with mock_tfds(features), pytest.raises(DataError, match=r"#0: feature 'label' is -1.*unlabelled"):
        data.read_labelled("tfds:glue/sst2[test]", {"text": "sentence"})


def test_tfds_empty_text_names_the_example():
    with mock_tfds({"text": ["Fine.", ""], "label": [1, 0]}), pytest.raises(
            DataError, match=r"tfds:imdb_reviews\[train\]#1: feature 'text' is empty"):
        data.read_labelled("tfds:imdb_reviews")


def test_tfds_missing_feature_lists_the_features():
    with mock_tfds({"text": ["x"], "label": [1]}), pytest.raises(
            DataError, match=r"no feature 'sentence'; the features are \['label', 'text'\]"):
        data.read_labelled("tfds:imdb_reviews", {"text": "sentence"})


def test_tfds_name_that_does_not_exist():
    with pytest.raises(DataError, match=r"tfds:imdb_reviewz\[train\]: Dataset imdb_reviewz not "
                                        r"found.*Did you mean"):
        data.read_labelled("tfds:imdb_reviewz")


# === Shortening long texts for a causal LM ===


def test_shorten_texts_keeps_the_label_and_fits(tiny_causal_lm):
    tokenizer = tiny_causal_lm.preprocessor.tokenizer
    long_text = "Please send one red mug and one blue hat. " * 40
    items = [LabelledText(long_text, "red", "x:1"), LabelledText("One green shoe.", "green", "x:2")]
    shortened, count = data.shorten_texts(data.to_records(items, "Which color?"),
                                      tokenizer, sequence_length=160)
    assert count == 1
    assert shortened[1].input == "One green shoe."
    assert long_text.startswith(shortened[0].input) and shortened[0].output == "red"
    prompt = len(tokenizer(data.format_prompt(shortened[0])))
    assert 1 + prompt + len(tokenizer("red")) + 1 <= 160


def test_shorten_texts_refuses_a_sequence_length_without_room_for_text(tiny_causal_lm):
    items = [LabelledText("One green shoe.", "green", "x:1")]
    with pytest.raises(ConfigError, match=r"sequence_length=8 is too short"):
        data.shorten_texts(data.to_records(items, "Which color?"),
                           tiny_causal_lm.preprocessor.tokenizer, sequence_length=8)
