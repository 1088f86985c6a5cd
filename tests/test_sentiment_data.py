"""The shipped sentiment data set and the script that makes it."""

import collections
import importlib.util
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GENERATOR = REPO / "data" / "make_sentiment.py"
TRAIN, TEST = REPO / "data" / "sentiment_train.jsonl", REPO / "data" / "sentiment_test.jsonl"


def rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_script_rewrites_the_shipped_files_byte_for_byte(tmp_path):
    spec = importlib.util.spec_from_file_location("make_sentiment", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--output-dir", str(tmp_path)])
    assert (tmp_path / TRAIN.name).read_bytes() == TRAIN.read_bytes()
    assert (tmp_path / TEST.name).read_bytes() == TEST.read_bytes()
    assert sorted(os.listdir(tmp_path)) == [TEST.name, TRAIN.name]  # no temporary file left


def test_sizes_balance_and_disjoint_unique_texts():
    train, test = rows(TRAIN), rows(TEST)
    assert len(train) >= 1000 and len(test) >= 300
    texts = [row["text"] for row in train + test]
    assert len(set(texts)) == len(texts)  # unique, so no test review is in training
    for split in (train, test):
        assert collections.Counter(row["label"] for row in split) == {
            "positive": len(split) // 2, "negative": len(split) // 2}


def test_reviews_are_short_and_varied():
    reviews = rows(TRAIN) + rows(TEST)
    assert all(10 <= len(row["text"].split()) <= 40 for row in reviews)
    kinds = collections.Counter(row["kind"] for row in reviews)
    assert set(kinds) == {"plain", "negated", "mixed", "expectation"}
    assert min(kinds.values()) > 150
    for kind in kinds:  # every construction comes in both polarities
        assert {row["label"] for row in reviews if row["kind"] == kind} == {"positive", "negative"}
    assert sum("not" in row["text"].split() for row in reviews if row["kind"] == "negated") > 100
