"""Generate `schedules.jsonl`: a week's plans in free text to a sorted JSON list of events.

Each record is an Alpaca example: an `instruction` asking for the events as
JSON, an `input` that is a short message naming one or two events, each
with a weekday and a time written in one of many ways, and an `output` that
is one line of JSON: a list of `"Day HH:MM event"` strings, sorted by day
(Monday first) and then by time. Everything is drawn from the word lists
below with a seeded `random.Random`, so the file is the same on every run and
every machine, and no input occurs twice.

The rules the model has to learn, all applied without exception:

- `Day` is the weekday's full name, however it is written ("tues",
  "this Friday", "Thurs" -> "Tuesday", "Friday", "Thursday").
- `HH:MM` is the time on a 24-hour clock, from digits ("8:45 pm",
  "8:45pm", "20:45", "8 pm"), words on the quarter hour ("quarter to nine
  in the evening", "half past 3 pm", "ten o'clock in the morning") or
  "noon" / "midday". "quarter to" is 15 minutes before the hour named;
  "am" and "in the morning" keep the hour, "pm", "in the afternoon",
  "in the evening" and "at night" add twelve (12 stays 12 in the
  afternoon: "half past twelve in the afternoon" -> "12:30").
- `event` is the activity without "my", "the" or "a" ("my piano lesson" ->
  "piano lesson").
- Events the message calls off ("the Wednesday gym session is cancelled")
  are left out.
- The list is sorted by weekday, then by time.

The pieces are few (7 days, 40 activities, a dozen ways to write a time),
but their combinations in one message are many, so the test split's messages
are new combinations of pieces that training has shown one by one.

Usage:
    python data/make_schedules.py [--output data/schedules.jsonl]
"""

from __future__ import annotations

import random
from pathlib import Path

from gemma_lora.data.synthetic import compact_json
from gemma_lora.data.synthetic import distinct_rows
from gemma_lora.data.synthetic import generator_main

SEED = 2045
COUNT = 2500
# Input plus output characters at most: with the alpaca template and the
# Gemma 3 tokenizer, every example then fits notebook 01's sequence_length=128.
MAX_CHARS = 165
DEFAULT_OUTPUT = Path(__file__).with_name("schedules.jsonl")
# Events per message -> relative frequency (three seldom fit in 128 tokens with the prompt).
EVENT_COUNTS = {1: 45, 2: 55}
CANCELLED_SHARE = 0.15  # messages that also mention an event called off
SAME_DAY_SHARE = 0.25  # messages with two events on the same day (sorted by time)

# === Vocabulary ===

INSTRUCTIONS = [
    'List the events as JSON: "Day HH:MM event", sorted.',
    'My week as a sorted JSON list of "Day HH:MM event".',
    'Events as JSON, "Day HH:MM event", in time order.',
    'Sorted JSON list of "Day HH:MM event", please.',
    'Calendar entries as JSON: "Day HH:MM event", sorted.',
    'Schedule as JSON ("Day HH:MM event"), earliest first.',
]

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
# How a message may write each day, besides its full name.
DAY_FORMS = {
    "Monday": ["Mon"], "Tuesday": ["Tue", "Tues"], "Wednesday": ["Wed"],
    "Thursday": ["Thu", "Thurs"], "Friday": ["Fri"], "Saturday": ["Sat"], "Sunday": ["Sun"],
}
DAY_PREFIXES = ["", "", "", "this ", "next "]

# (activity, article-like words a message may put before it)
ACTIVITIES = [
    ("dentist", ["the"]), ("yoga", [""]), ("team meeting", ["the", "a"]),
    ("piano lesson", ["my", "a"]), ("gym", ["the"]), ("haircut", ["my", "a"]),
    ("standup", ["the"]), ("book club", ["the"]), ("swimming", [""]),
    ("doctor", ["the"]), ("choir practice", [""]), ("football", [""]),
    ("lunch with Ana", [""]), ("dinner with Omar", [""]), ("call with Mei", ["a"]),
    ("coffee with Lars", [""]), ("parents evening", [""]), ("vet", ["the"]),
    ("pottery class", ["my", "the"]), ("tennis", [""]), ("budget review", ["the"]),
    ("dance class", ["my", "the"]), ("physio", [""]), ("bike repair", ["the"]),
    ("car service", ["the"]), ("quiz night", [""]), ("flight to Oslo", ["my", "the"]),
    ("train to Leeds", ["my", "the"]), ("job interview", ["my", "the", "a"]),
    ("guitar lesson", ["my", "a"]), ("study group", ["the"]), ("climbing", [""]),
    ("cinema", [""]), ("school run", ["the"]), ("market", ["the"]),
    ("chess club", [""]), ("run with Priya", ["a"]), ("boiler check", ["the", "a"]),
    ("client demo", ["the", "a"]), ("birthday party", ["the", "a"]),
]

HOUR_WORDS = ["twelve", "one", "two", "three", "four", "five", "six", "seven", "eight",
              "nine", "ten", "eleven"]
# Hour of the day -> period words that may follow a 12-hour time.
PERIODS = {
    **{hour: ["in the morning"] for hour in range(0, 12)},
    **{hour: ["in the afternoon"] for hour in range(12, 18)},
    **{hour: ["in the evening"] for hour in range(18, 21)},
    **{hour: ["in the evening", "at night"] for hour in range(21, 24)},
}
# Hour of an event -> relative frequency (7 in the morning to 10 at night).
HOUR_WEIGHTS = {7: 5, 8: 7, 9: 8, 10: 8, 11: 7, 12: 7, 13: 6, 14: 7, 15: 7, 16: 7, 17: 7,
                18: 8, 19: 8, 20: 6, 21: 4, 22: 3}
MINUTE_WEIGHTS = {0: 10, 5: 2, 10: 2, 15: 6, 20: 2, 25: 2, 30: 8, 35: 2, 40: 2, 45: 6,
                  50: 2, 55: 2}
SPOKEN_SHARE = 0.4  # of the times on the quarter hour, those written in words

# === Message pieces ===
# {event} the activity as written, {day} the day as written, {time} the time.

EVENT_FRAMES = [
    "{event} on {day} at {time}",
    "{event} {day} at {time}",
    "on {day} at {time} {event}",
    "{day} at {time}: {event}",
    "{event} at {time} on {day}",
    "at {time} on {day} {event}",
    "{day} {time} {event}",
    "{event}, {day}, {time}",
]
JOINERS = [", ", "; ", " and ", ". ", ", then ", " / "]
OPENERS = ["", "", "", "", "Plans: ", "Add: ", "Hi! ", "Reminder: "]
CANCELLED = [  # {event} with "my" or "the" if the activity takes one, {bare} without
    "{event} on {day} is cancelled.",
    "No {bare} on {day} this week.",
    "(Skip {event} on {day}.)",
    "{day}'s {bare} is off.",
]


# === Times ===


def twelve_hour(hour: int) -> int:
    """The hour on a 12-hour clock (0 and 12 are both 12)."""
    return hour % 12 or 12


def hour_text(rng: random.Random, hour: int) -> str:
    """A 12-hour clock hour as a word ("nine") or digits ("9")."""
    hour = twelve_hour(hour)
    return HOUR_WORDS[hour % 12] if rng.random() < 0.7 else str(hour)


def spoken_time(rng: random.Random, hour: int, minute: int) -> str:
    """A time on the quarter hour in words: "quarter to nine in the evening", "half past 3 pm"."""
    named = hour + 1 if minute == 45 else hour
    phrase = {0: rng.choice(["{h} o'clock", "{h}"]), 15: "quarter past {h}",
              30: "half past {h}", 45: "quarter to {h}"}[minute]
    text = phrase.format(h=hour_text(rng, named))
    # am/pm names the half of the day of the hour said; avoid it where that
    # half differs from the time's own ("quarter to 12": 11:45 or 23:45?).
    if twelve_hour(named) != 12 and rng.random() < 0.3:
        return f"{text} {'am' if hour < 12 else 'pm'}"
    return f"{text} {rng.choice(PERIODS[hour])}"


def digit_time(rng: random.Random, hour: int, minute: int) -> str:
    """The time in digits: "20:45", "8:45 pm", "8:45pm", "8 pm"."""
    if rng.random() < 0.35:
        return f"{hour:02d}:{minute:02d}"
    suffix = rng.choice([" ", ""]) + ("am" if hour < 12 else "pm")
    if minute == 0 and rng.random() < 0.6:
        return f"{twelve_hour(hour)}{suffix}"
    return f"{twelve_hour(hour)}:{minute:02d}{suffix}"


def time_text(rng: random.Random, hour: int, minute: int) -> str:
    """One way of writing the time `hour:minute` (24-hour)."""
    if minute == 0 and hour == 12 and rng.random() < 0.6:
        return rng.choice(["noon", "midday", "12 noon"])
    if minute % 15 == 0 and rng.random() < SPOKEN_SHARE:
        return spoken_time(rng, hour, minute)
    return digit_time(rng, hour, minute)


# === Messages ===


def day_text(rng: random.Random, day: str) -> str:
    """One way of writing a weekday: "Tuesday", "tues", "next Friday"."""
    text = rng.choice([day, day] + DAY_FORMS[day])
    if rng.random() < 0.15:
        text = text.lower()
    return rng.choice(DAY_PREFIXES) + text


def activity_text(rng: random.Random, activity: str, articles: list[str]) -> str:
    """An activity as a message writes it: "my piano lesson", "yoga"."""
    article = rng.choice(articles + [""])
    return f"{article} {activity}" if article else activity


def sentence_case(text: str) -> str:
    """`text` with its first letter upper-cased."""
    return text[:1].upper() + text[1:]


def make_events(rng: random.Random) -> list[tuple[int, int, int, str, list[str]]]:
    """One or two events: (day index, hour, minute, activity, articles), no two alike."""
    count = rng.choices(list(EVENT_COUNTS), weights=list(EVENT_COUNTS.values()))[0]
    chosen = rng.sample(ACTIVITIES, count)
    days = rng.sample(range(len(DAYS)), count)
    if count > 1 and rng.random() < SAME_DAY_SHARE:
        days[1] = days[0]
    events, slots = [], set()
    for (activity, articles), day in zip(chosen, days):
        while True:
            hour = rng.choices(list(HOUR_WEIGHTS), weights=list(HOUR_WEIGHTS.values()))[0]
            minute = rng.choices(list(MINUTE_WEIGHTS), weights=list(MINUTE_WEIGHTS.values()))[0]
            if (day, hour, minute) not in slots:
                break
        slots.add((day, hour, minute))
        events.append((day, hour, minute, activity, articles))
    return events


def message_text(rng: random.Random, events: list, cancelled: tuple | None) -> str:
    """The message naming `events` in a random order, and the `cancelled` one if any."""
    parts = []
    for day, hour, minute, activity, articles in rng.sample(events, len(events)):
        parts.append(rng.choice(EVENT_FRAMES).format(
            event=activity_text(rng, activity, articles), day=day_text(rng, DAYS[day]),
            time=time_text(rng, hour, minute)))
    text = parts[0]
    for part in parts[1:]:
        joiner = rng.choice(JOINERS)
        if joiner == ". ":  # a new sentence; "p.m." already ends one
            text += (" " if text.endswith(".") else joiner) + sentence_case(part)
        else:
            text += joiner + part
    text = rng.choice(OPENERS) + sentence_case(text)
    text += rng.choice(["", "!"] if text.endswith(".") else [".", "", "!"])
    if cancelled is not None:
        day, activity, articles = cancelled
        articles = [article for article in articles if article != "a"]
        note = rng.choice(CANCELLED).format(event=activity_text(rng, activity, articles),
                                            bare=activity, day=DAYS[day])
        text = f"{sentence_case(note)} {text}" if rng.random() < 0.5 else f"{text} {sentence_case(note)}"
    return text


def make_example(rng: random.Random) -> dict:
    """One Alpaca record: an instruction, a message with plans, the sorted JSON list."""
    while True:
        events = make_events(rng)
        cancelled = None
        if rng.random() < CANCELLED_SHARE:
            named = {activity for _, _, _, activity, _ in events}
            activity, articles = rng.choice([a for a in ACTIVITIES if a[0] not in named])
            cancelled = (rng.randrange(len(DAYS)), activity, articles)
        message = message_text(rng, events, cancelled)
        answer = compact_json([f"{DAYS[day]} {hour:02d}:{minute:02d} {activity}"
                               for day, hour, minute, activity, _ in sorted(events)])
        if len(message) + len(answer) <= MAX_CHARS:
            break
    return {"instruction": rng.choice(INSTRUCTIONS), "input": message, "output": answer}


def make_examples(count: int = COUNT, seed: int = SEED) -> list[dict]:
    """`count` records with pairwise different inputs."""
    return distinct_rows(make_example, count, seed)


def main(argv: list[str] | None = None) -> None:
    """Write the data set to `--output` (default: beside this script)."""
    generator_main(argv, __doc__.splitlines()[0], DEFAULT_OUTPUT, make_examples)


if __name__ == "__main__":
    main()
