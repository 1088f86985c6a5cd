"""The shipped schedule task: reproducible, split without leaks, and right by its own rules.

The answers are checked against a parser written here, independently of the
generator: it reads every time the message states and converts it to the
24-hour clock as the rules in `data/make_schedules.py`'s docstring say.
"""

import importlib.util
import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from gemma_lora import data
from gemma_lora.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "data" / "schedules.jsonl"
GENERATOR = REPO / "data" / "make_schedules.py"
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
ANSWER = re.compile(r"(?P<day>[A-Z][a-z]+day) (?P<time>[0-2]\d:[0-5]\d) (?P<event>\S.*)")

# === An independent reading of the times in a message ===

NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
           "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "quarter": 15,
           "twenty": 20, "twenty-five": 25, "half": 30}
HOUR = r"(?P<hour>\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
SUFFIX = r"(?P<suffix>[ap]\.?m\.?|in the morning|in the afternoon|in the evening|at night)"
DIGITS = re.compile(rf"\b(?P<hour>\d{{1,2}})[:.](?P<minute>\d\d)(?: ?{SUFFIX})?", re.IGNORECASE)
SPOKEN = re.compile(
    rf"\b(?:(?P<minute>quarter|half|twenty-five|twenty|ten|five) (?P<way>past|to) )?{HOUR}"
    rf"(?: o'clock)? ?{SUFFIX}", re.IGNORECASE)
SPECIAL = re.compile(r"\b(?:12 )?(?P<word>noon|midday|midnight)\b", re.IGNORECASE)


def clock(hour, minute, suffix):
    """`hour:minute` said on a 12-hour clock with `suffix`, on the 24-hour clock."""
    minutes = (hour % 12) * 60 + minute  # within the half-day, 0 to 719
    suffix = suffix.lower().replace(".", "")
    afternoon = suffix in ("pm", "in the afternoon", "in the evening") or (
        suffix == "at night" and minutes >= 9 * 60)
    minutes += 720 if afternoon else 0
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def times_in(message):
    """Every time `message` states, on the 24-hour clock, in no particular order."""
    times = []
    for match in DIGITS.finditer(message):
        hour, minute = int(match["hour"]), int(match["minute"])
        times.append(clock(hour, minute, match["suffix"]) if match["suffix"]
                     else f"{hour:02d}:{minute:02d}")
    message = DIGITS.sub(" ", message)
    for match in SPOKEN.finditer(message):
        hour = int(match["hour"]) if match["hour"].isdigit() else NUMBERS[match["hour"].lower()]
        minute = NUMBERS[match["minute"].lower()] if match["minute"] else 0
        if match["way"] == "to":  # minutes before the hour named
            hour, minute = hour - 1, 60 - minute
        times.append(clock(hour, minute, match["suffix"]))
    times += ["00:00" if match["word"].lower() == "midnight" else "12:00"
              for match in SPECIAL.finditer(SPOKEN.sub(" ", message))]
    return times


def test_the_reference_reader_on_the_rules_examples():
    message = ("quarter to nine in the evening; ten past 3 pm; half past twelve at night; "
               "8.45 p.m.; 20:45; quarter to twelve in the morning; eleven at night; noon")
    assert times_in(message) == ["20:45", "20:45", "20:45", "15:10", "00:30", "11:45", "23:00",
                                 "12:00"]


# === The shipped file ===


@pytest.fixture(scope="module")
def records():
    return data.read_records(SHIPPED)


def test_every_answer_follows_the_rules(records):
    assert len(records) >= 2000
    assert len({record.input for record in records}) == len(records)  # no input twice
    kinds = Counter()
    for record in records:
        entries = json.loads(record.output)
        assert record.output == json.dumps(entries, separators=(",", ":")), record.source
        events = [ANSWER.fullmatch(entry) for entry in entries]
        assert all(events) and 1 <= len(events) <= 2, record.source
        # Sorted by weekday, then time; every event named in the message.
        keys = [(DAYS.index(event["day"]), event["time"]) for event in events]
        assert keys == sorted(keys) and len(set(keys)) == len(keys), record.source
        assert all(event["event"].lower() in record.input.lower() for event in events)
        # Each stated time is an event's: called-off events carry no time.
        assert sorted(times_in(record.input)) == sorted(e["time"] for e in events), record.source
        kinds["two events"] += len(events) == 2
        kinds["one day twice"] += len({key[0] for key in keys}) < len(keys)
        kinds["called off"] += bool(re.search(r"cancelled|\bNo |Skip|is off", record.input))
    assert kinds["two events"] > 0.4 * len(records)
    assert kinds["one day twice"] > 0.1 * len(records)
    assert kinds["called off"] > 0.05 * len(records)


def test_the_notebook_split_shares_no_prompt_between_training_and_test():
    splits = data.load_splits(RunConfig(data_path=str(SHIPPED)))  # notebook 01's split
    test = {data.format_prompt(record) for record in splits.test}
    seen = {data.format_prompt(record) for record in splits.train + splits.validation}
    assert len(test) == len(splits.test) == 250
    assert not test & seen


def test_the_generator_is_deterministic_and_made_the_shipped_file(tmp_path):
    spec = importlib.util.spec_from_file_location("make_schedules", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    first, second = tmp_path / "a" / "schedules.jsonl", tmp_path / "b" / "schedules.jsonl"
    module.main(["--output", str(first)])
    module.main(["--output", str(second)])
    assert first.read_bytes() == second.read_bytes() == SHIPPED.read_bytes()
    assert os.listdir(first.parent) == ["schedules.jsonl"]  # no temporary file left behind


@pytest.mark.real_model
def test_every_example_fits_the_notebooks_sequence_length(gemma3_270m_preset, records):
    import keras_hub

    tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(str(gemma3_270m_preset))
    report = data.truncation_report(tokenizer, data.to_prompt_response(records),
                                    RunConfig().sequence_length)
    assert report.truncated == 0 and report.total == len(records)
