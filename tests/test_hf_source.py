"""Hugging Face data sets as a source: saved folders, Parquet and Arrow files, and clear errors.

Only local data: a tiny data set is written with `datasets` at test time (the
tests are skipped where the optional package is not installed); the hub is
never contacted.
"""

import sys

import pytest

from gemma_lora import data
from gemma_lora.config import RunConfig
from gemma_lora.data.conversations import Conversation
from gemma_lora.data.hf import is_hf_source
from gemma_lora.data.hf import load_hf_records
from gemma_lora.data.hf import parse_hf_source
from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError

MESSAGES = [[{"role": "user", "content": f"Echo {i}."}, {"role": "assistant", "content": str(i)}]
            for i in range(20)]


@pytest.fixture
def datasets():
    return pytest.importorskip("datasets")


def test_parse_hf_source():
    assert parse_hf_source("hf:imdb") == ("imdb", "train")
    assert parse_hf_source("hf:org/name[test[:10%]]") == ("org/name", "test[:10%]")
    with pytest.raises(ConfigError, match=r"expected 'hf:NAME' or 'hf:NAME\[SPLIT\]'"):
        parse_hf_source("hf:")


def test_a_saved_folder_of_conversations_is_read_and_split(datasets, tmp_path):
    folder = tmp_path / "chats"
    datasets.Dataset.from_dict({"messages": MESSAGES}).save_to_disk(str(folder))
    assert is_hf_source(str(folder))
    records = data.read_source(str(folder))
    assert len(records) == 20 and isinstance(records[3], Conversation)
    assert records[3].output == "3" and records[3].source == f"{folder}#3"
    splits = data.load_splits(RunConfig(data_path=str(folder), validation_fraction=0.1,
                                        test_fraction=0.1))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (16, 2, 2)


def test_a_saved_dataset_dict_split_and_field_mapping(datasets, tmp_path):
    folder = tmp_path / "dolly"
    rows = {"instruction": ["Name a color."], "context": [""], "response": ["Teal."]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "test": datasets.Dataset.from_dict(rows)}).save_to_disk(str(folder))
    records = data.read_source(f"{folder}[test]", data.DOLLY_FIELDS)
    assert records[0].output == "Teal." and records[0].source == f"{folder}[test]#0"
    with pytest.raises(DataError, match=r"has no split 'dev'; its splits are 'train', 'test'"):
        data.read_source(f"{folder}[dev]", data.DOLLY_FIELDS)
    with pytest.raises(DataError, match=r"#0: field 'output' is missing"):
        data.read_source(str(folder))


def test_parquet_and_arrow_files(datasets, tmp_path):
    dataset = datasets.Dataset.from_dict({"conversations": [
        [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]] * 3})
    dataset.to_parquet(str(tmp_path / "chats.parquet"))
    assert data.read_source(str(tmp_path / "chats.parquet"))[2].output == "Yo"
    folder = tmp_path / "saved"
    dataset.save_to_disk(str(folder))
    (arrow,) = folder.glob("*.arrow")
    assert data.read_source(str(arrow))[0].turns[0].role == "user"


def test_a_malformed_row_is_named(datasets, tmp_path):
    folder = tmp_path / "bad"
    rows = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
            [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Yo"}]]
    datasets.Dataset.from_dict({"messages": rows}).save_to_disk(str(folder))
    with pytest.raises(DataError, match=rf"^{folder}#1: messages\[1\]: field 'role' is 'bot'"):
        data.read_source(str(folder))


def test_missing_file_and_unreachable_hub(datasets, tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"nope.parquet: file not found"):
        data.read_source(str(tmp_path / "nope.parquet"))

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'org/name' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"^hf:org/name\[train\]: the Hugging Face hub cannot be "
                                        r"reached .*offline, give a folder written by save_to_disk"):
        data.read_source("hf:org/name[train]")


def test_without_the_datasets_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=r"^hf:imdb: reading Hugging Face data sets needs the "
                                        r"optional `datasets` package"):
        load_hf_records("hf:imdb")


def test_a_saved_folder_is_content_hashed_for_resume(datasets, tmp_path):
    from gemma_lora.training.checkpoint import fingerprint

    folder = tmp_path / "saved"
    rows = {"instruction": ["Say hi.", "Say bye."], "output": ["hi", "bye"]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(folder))
    source = f"{folder}[train]"
    first = fingerprint(RunConfig(data_path=source))["data_path_sha256"]
    assert first is not None and first == fingerprint(RunConfig(data_path=source))["data_path_sha256"]
    changed = {"instruction": ["Say hi.", "Say bye."], "output": ["hi", "ciao"]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(changed)}).save_to_disk(str(folder))
    assert fingerprint(RunConfig(data_path=source))["data_path_sha256"] != first
    assert fingerprint(RunConfig(data_path="hf:imdb[test]"))["data_path_sha256"] is None
