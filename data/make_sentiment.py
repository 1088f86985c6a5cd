"""Generate `sentiment_train.jsonl` and `sentiment_test.jsonl`: labelled reviews.

Each line is `{"text": ..., "label": "positive" | "negative", "kind": ...}`:
a short review (10 to 40 words) of a film, restaurant, product, hotel, book
or game. The label is fixed by how the review is built, and `kind` says how:

- `plain`: praise or complaint only ("The acting was superb. Loved it.").
- `negated`: the sentiment is carried by a negation, so the polar words point
  the other way ("The plot was not boring at all" is positive, "I can't say
  the service was friendly" is negative).
- `mixed`: praise and complaint together; the overall verdict, which comes
  after the contrast ("..., but overall it was a letdown"), decides.
- `expectation`: an expectation overturned ("I expected to hate it, but I
  loved it"): the outcome decides.

Everything is drawn from the word lists below with a seeded `random.Random`,
so every run writes the same files, byte for byte. Texts are unique across
both files, so no test review appears in training. Half of each file is
positive.

Usage:
    python data/make_sentiment.py [--output-dir data]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from gemma_lora.io_utils import write_jsonl_atomic

SEED = 2718
TRAIN_COUNT = 1200
TEST_COUNT = 300
MIN_WORDS, MAX_WORDS = 10, 40
DEFAULT_DIR = Path(__file__).parent
TRAIN_FILE, TEST_FILE = "sentiment_train.jsonl", "sentiment_test.jsonl"
KINDS = {"plain": 0.35, "negated": 0.25, "mixed": 0.25, "expectation": 0.15}

# === Vocabulary ===

# Each domain: what is reviewed, and its aspects as (noun phrase, verb).
DOMAINS = {
    "film": {
        "subjects": ["the film", "this movie", "the sequel", "the documentary",
                     "this thriller", "the new comedy", "the animated film", "this western"],
        "aspects": [("the acting", "was"), ("the cast", "was"), ("the plot", "was"),
                    ("the story", "was"), ("the soundtrack", "was"), ("the pacing", "was"),
                    ("the ending", "was"), ("the dialogue", "was"), ("the visuals", "were"),
                    ("the special effects", "were")],
        "praise": ["I laughed from start to finish.", "I would watch it again tonight.",
                   "The whole cinema applauded at the end."],
        "complaint": ["I nearly walked out halfway through.", "I checked my watch every ten minutes.",
                      "Half the audience fell asleep."],
    },
    "restaurant": {
        "subjects": ["the restaurant", "this place", "the new bistro", "the noodle bar",
                     "the cafe on the corner", "this pizzeria", "the steakhouse", "the taco stand"],
        "aspects": [("the food", "was"), ("the service", "was"), ("our waiter", "was"),
                    ("the staff", "were"), ("the prices", "were"), ("the portions", "were"),
                    ("the dessert", "was"), ("the atmosphere", "was"), ("the coffee", "was")],
        "praise": ["We are already planning our next visit.", "Every plate came back empty.",
                   "We stayed long after dessert."],
        "complaint": ["We left hungry and annoyed.", "We will not be going back.",
                      "We waited an hour for cold soup."],
    },
    "product": {
        "subjects": ["these headphones", "the blender", "this phone case", "the vacuum cleaner",
                     "the new laptop", "the coffee maker", "this backpack", "the desk lamp",
                     "the electric kettle", "this keyboard"],
        "aspects": [("the battery life", "was"), ("the build quality", "was"),
                    ("the price", "was"), ("the design", "was"), ("the setup", "was"),
                    ("customer support", "was"), ("the instructions", "were"),
                    ("the materials", "were")],
        "praise": ["It does exactly what it promises.", "I already ordered a second one.",
                   "It works perfectly every single day."],
        "complaint": ["It broke within a week.", "I sent it back the next day.",
                      "It stopped working after two uses."],
    },
    "hotel": {
        "subjects": ["the hotel", "the inn", "the resort", "this guesthouse", "the hostel",
                     "the beach cottage"],
        "aspects": [("the room", "was"), ("the bed", "was"), ("the breakfast", "was"),
                    ("the location", "was"), ("the staff", "were"), ("the pool", "was"),
                    ("the view", "was"), ("the bathroom", "was")],
        "praise": ["We extended our stay by two nights.", "We slept like babies.",
                   "We have already booked again for next summer."],
        "complaint": ["We checked out a day early.", "We barely slept at all.",
                      "The noise kept us awake all night."],
    },
    "book": {
        "subjects": ["the novel", "this book", "the memoir", "the cookbook", "this thriller novel",
                     "the short story collection"],
        "aspects": [("the writing", "was"), ("the characters", "were"), ("the ending", "was"),
                    ("the pacing", "was"), ("the illustrations", "were"),
                    ("the translation", "was"), ("the first chapter", "was")],
        "praise": ["I read it in a single evening.", "I could not put it down.",
                   "I have already lent it to three friends."],
        "complaint": ["I gave up after fifty pages.", "It put me to sleep every night.",
                      "I donated it the next morning."],
    },
    "game": {
        "subjects": ["the game", "this app", "the puzzle game", "the racing game",
                     "this board game", "the new update"],
        "aspects": [("the controls", "were"), ("the graphics", "were"), ("the levels", "were"),
                    ("the music", "was"), ("the tutorial", "was"), ("the multiplayer", "was"),
                    ("the interface", "was")],
        "praise": ["I played until three in the morning.", "My whole family is hooked.",
                   "I keep coming back to it."],
        "complaint": ["I uninstalled it after an hour.", "It crashed every few minutes.",
                      "I asked for a refund the same day."],
    },
}

POSITIVE = ["excellent", "superb", "wonderful", "fantastic", "outstanding", "brilliant",
            "lovely", "impressive", "delightful", "great", "terrific", "charming",
            "pleasing", "solid", "marvellous", "memorable"]
NEGATIVE = ["awful", "terrible", "dreadful", "poor", "disappointing", "mediocre", "bland",
            "sloppy", "lousy", "weak", "painful", "forgettable", "shoddy", "subpar",
            "dismal", "underwhelming"]
INTENSIFIERS = ["", "", "", "really ", "truly ", "absolutely ", "very ", "quite ", "so "]
OPENERS = ["", "", "", "Honestly, ", "Well, ", "In short, ", "I have to say ",
           "To be fair, ", "Frankly, ", "All in all, "]
CONTEXTS = ["", "", "We tried {s} last weekend. ", "I finally got around to {s}. ",
            "A friend recommended {s}. ", "My partner picked {s}. ",
            "I had read great things about {s}. ", "After a long week I tried {s}. "]

POSITIVE_VERDICTS = ["Highly recommended.", "I loved it.", "Five stars from me.",
                     "A real gem.", "I'm very happy with it.", "Absolutely worth it.",
                     "I would recommend it to anyone.", "Worth every penny.",
                     "What a pleasant surprise.", "Easily the best of its kind."]
NEGATIVE_VERDICTS = ["Avoid it.", "A complete waste of money.", "One star.", "I regret it.",
                     "Not recommended.", "I want my money back.", "Never again.",
                     "What a letdown.", "Save yourself the trouble.", "Skip this one."]
POSITIVE_OVERALL = ["overall I loved it", "I would still recommend it",
                    "it won me over in the end", "it was worth it after all",
                    "I left with a big smile", "I'd happily do it again"]
NEGATIVE_OVERALL = ["overall it was a letdown", "I would not recommend it",
                    "it left me disappointed", "it was not worth the money",
                    "I left in a bad mood", "I won't be doing it again"]

# Negation: polar words that point the other way.
NEGATED_POSITIVE = [  # read as positive
    "{a} {v} not {neg} at all.", "{a} {v} never {neg}.", "I can't complain about {a}.",
    "Nothing about {a} felt {neg}.", "I was not disappointed by {a}.",
    "I have no complaints about {a}.", "{a} {v} anything but {neg}.",
    "I did not regret it for a second.", "Not bad at all, honestly.",
    "I have nothing negative to say about {s}.",
]
NEGATED_NEGATIVE = [  # read as negative
    "{a} {v} not {pos}.", "{a} {v} far from {pos}.", "I can't say {a} {v} {pos}.",
    "Nothing about {a} felt {pos}.", "I would not call {a} {pos}.",
    "I did not enjoy {s} one bit.", "{a} {v} hardly {pos}.",
    "Not worth the hype, unfortunately.", "It never lived up to the reviews.",
    "I wouldn't recommend {s} to anyone.",
]
EXPECT_POSITIVE = [
    "I expected to hate {s}, but it turned out {pos}.",
    "I had low hopes for {s}, yet {a} {v} {pos}.",
    "I was ready to be disappointed by {s}, but I loved it.",
    "I almost skipped {s}, and I'm glad I didn't: {a} {v} {pos}.",
]
EXPECT_NEGATIVE = [
    "I had high hopes for {s}, but it was {neg}.",
    "I expected to love {s}, but {a} {v} {neg}.",
    "I wanted to like {s}, but it let me down.",
    "Everyone raved about {s}, but I found it {neg}.",
]


# === Building reviews ===


def sentence_case(text: str) -> str:
    """`text` with its first letter upper-cased."""
    return text[:1].upper() + text[1:]


def adjective(rng: random.Random, word: str) -> str:
    """`word`, sometimes with an intensifier in front."""
    return rng.choice(INTENSIFIERS) + word


def fill(rng: random.Random, pattern: str, domain: dict, subject: str) -> str:
    """A pattern with {s} subject, {a}/{v} aspect and verb, {pos}/{neg} adjectives.

    The adjectives stay bare: negations read badly with intensifiers
    ("anything but so awful").
    """
    aspect, verb = rng.choice(domain["aspects"])
    return pattern.format(s=subject, a=aspect, v=verb, pos=rng.choice(POSITIVE),
                          neg=rng.choice(NEGATIVE))


def plain_review(rng: random.Random, domain: dict, subject: str, positive: bool) -> str:
    """Praise only or complaint only."""
    word, other_word = rng.sample(POSITIVE if positive else NEGATIVE, 2)
    (aspect, verb), (other, other_verb) = rng.sample(domain["aspects"], 2)
    first = f"{rng.choice(OPENERS)}{aspect} {verb} {adjective(rng, word)}"
    second = f"{other} {other_verb} {adjective(rng, other_word)}"
    parts = [sentence_case(first) + ", and " + second + "."]
    if rng.random() < 0.5:
        parts.append(rng.choice(domain["praise" if positive else "complaint"]))
    parts.append(rng.choice(POSITIVE_VERDICTS if positive else NEGATIVE_VERDICTS))
    return " ".join(parts)


def negated_review(rng: random.Random, domain: dict, subject: str, positive: bool) -> str:
    """The sentiment carried by a negation of the opposite polar word."""
    pattern = rng.choice(NEGATED_POSITIVE if positive else NEGATED_NEGATIVE)
    parts = [sentence_case(fill(rng, pattern, domain, subject))]
    if rng.random() < 0.5:
        parts.append(rng.choice(domain["praise" if positive else "complaint"]))
    elif rng.random() < 0.6:
        parts.append(rng.choice(POSITIVE_VERDICTS if positive else NEGATIVE_VERDICTS))
    return " ".join(parts)


def mixed_review(rng: random.Random, domain: dict, subject: str, positive: bool) -> str:
    """Praise and complaint; the overall verdict after the contrast decides."""
    (aspect, verb), (other, other_verb) = rng.sample(domain["aspects"], 2)
    # The aspect mentioned first goes against the verdict.
    first = adjective(rng, rng.choice(NEGATIVE if positive else POSITIVE))
    second = adjective(rng, rng.choice(POSITIVE if positive else NEGATIVE))
    overall = rng.choice(POSITIVE_OVERALL if positive else NEGATIVE_OVERALL)
    if rng.random() < 0.5:
        text = f"{aspect} {verb} {first} and {other} {other_verb} {second}, but {overall}."
        if rng.random() < 0.5:  # one aspect only, against the verdict
            text = f"{aspect} {verb} {first}, but {overall}."
    else:
        text = f"although {aspect} {verb} {first}, {other} {other_verb} {second}, and {overall}."
    return sentence_case(rng.choice(OPENERS) + text)


def expectation_review(rng: random.Random, domain: dict, subject: str, positive: bool) -> str:
    """An expectation overturned: the outcome decides."""
    pattern = rng.choice(EXPECT_POSITIVE if positive else EXPECT_NEGATIVE)
    parts = [sentence_case(fill(rng, pattern, domain, subject))]
    if rng.random() < 0.5:
        parts.append(rng.choice(domain["praise" if positive else "complaint"]))
    return " ".join(parts)


BUILDERS = {"plain": plain_review, "negated": negated_review, "mixed": mixed_review,
            "expectation": expectation_review}


def make_review(rng: random.Random, positive: bool) -> dict:
    """One labelled review of `MIN_WORDS` to `MAX_WORDS` words."""
    while True:
        domain = DOMAINS[rng.choice(sorted(DOMAINS))]
        subject = rng.choice(domain["subjects"])
        kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        # An expectation review brings its own context; after a context
        # sentence the subject is "it".
        context = "" if kind == "expectation" else rng.choice(CONTEXTS).format(s=subject)
        mention = "it" if context else subject
        text = sentence_case(context + BUILDERS[kind](rng, domain, mention, positive))
        if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
            return {"text": text, "label": "positive" if positive else "negative", "kind": kind}


def make_reviews(count: int, seed: int = SEED) -> list[dict]:
    """`count` reviews with pairwise different texts, alternately positive and negative."""
    rng = random.Random(seed)
    reviews, seen = [], set()
    while len(reviews) < count:
        review = make_review(rng, positive=len(reviews) % 2 == 0)
        if review["text"] not in seen:
            seen.add(review["text"])
            reviews.append(review)
    return reviews


def make_splits(seed: int = SEED) -> tuple[list[dict], list[dict]]:
    """The train and test reviews: disjoint, shuffled, each half positive."""
    reviews = make_reviews(TRAIN_COUNT + TEST_COUNT, seed)
    # Reviews alternate positive/negative, so an even cut keeps both balanced.
    test, train = reviews[:TEST_COUNT], reviews[TEST_COUNT:]
    rng = random.Random(seed + 1)
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def main(argv: list[str] | None = None) -> None:
    """Write both files to `--output-dir` (default: beside this script)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output-dir", type=Path, default=DEFAULT_DIR,
        help="folder for sentiment_train.jsonl and sentiment_test.jsonl "
             "(default: beside this script)",
    )
    args = parser.parse_args(argv)
    train, test = make_splits()
    write_jsonl_atomic(args.output_dir / TRAIN_FILE, train)
    write_jsonl_atomic(args.output_dir / TEST_FILE, test)
    print(f"wrote {len(train)} training and {len(test)} test reviews to {args.output_dir}")


if __name__ == "__main__":
    main()
