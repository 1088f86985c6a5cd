"""Generate `conversations.jsonl`: shop conversations whose final answer is the order as JSON.

Each record is a `messages` conversation (OpenAI's chat format) between a
customer and a shop's order assistant, with 2 to 4 user turns:

1. the customer orders something: an item, a color, a quantity and the
   delivery city, in one message;
2. zero to two middle turns, each either a change to one attribute
   ("Actually, make it teal.", "Ship it to Lyon instead.", "Make that
   five.") or a question unrelated to the order ("Do you gift-wrap?");
3. the customer asks for the order as JSON.

The assistant's earlier replies are short acknowledgements that never repeat
the order, so the final answer, one line of JSON with the keys `item`,
`color`, `quantity`, `city` in that order, depends on the first user turn
and on every change after it (the last change of an attribute wins): a
model that reads only the last turn cannot give it. Exact match checks it.
Everything is drawn from the word lists below with a seeded `random.Random`,
so the file is the same on every run and every machine, and no conversation
occurs twice (so a test conversation is never also a training one).

Usage:
    python data/make_conversations.py [--output data/conversations.jsonl]
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from gemma_lora.data.synthetic import compact_json
from gemma_lora.data.synthetic import distinct_rows
from gemma_lora.data.synthetic import generator_main

SEED = 15
COUNT = 2500
DEFAULT_OUTPUT = Path(__file__).with_name("conversations.jsonl")

# === Vocabulary ===

ITEMS = [  # (singular, plural)
    ("mug", "mugs"), ("hoodie", "hoodies"), ("t-shirt", "t-shirts"), ("backpack", "backpacks"),
    ("umbrella", "umbrellas"), ("scarf", "scarves"), ("candle", "candles"),
    ("notebook", "notebooks"), ("cushion", "cushions"), ("teapot", "teapots"),
    ("beanie", "beanies"), ("tote bag", "tote bags"), ("water bottle", "water bottles"),
    ("desk lamp", "desk lamps"), ("apron", "aprons"), ("vase", "vases"),
    ("blanket", "blankets"), ("wallet", "wallets"), ("sweater", "sweaters"),
    ("yoga mat", "yoga mats"),
]
COLORS = ["navy", "black", "white", "red", "olive", "teal", "coral", "grey", "pink", "orange",
          "mint", "beige", "lavender", "burgundy", "mustard", "sky blue"]
CITIES = ["Porto", "Lyon", "Ghent", "Utrecht", "Krakow", "Bilbao", "Turin", "Graz", "Aarhus",
          "Bergen", "Gdansk", "Brno", "Split", "Valencia", "Nantes", "Leipzig", "Basel", "Cork",
          "Leeds", "Bristol", "Riga", "Tartu", "Osaka", "Busan", "Perth", "Halifax", "Austin",
          "Cusco"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten"]

ORDERS = [  # {order}: quantity, color and item; {city}: the delivery city
    "Hi, I'd like {order}, shipped to {city}.",
    "Please send {order} to {city}.",
    "I want to order {order}. Deliver to {city}.",
    "Can I get {order} delivered to {city}?",
    "Hello! {order} to {city}, please.",
    "I'm ordering {order} for my office in {city}.",
    "Could you ship {order} to {city}?",
    "Order for {city}: {order}.",
]
ACKS = ["Got it. Anything else?", "Thanks, noted.", "Sure, noted.", "Great, I have that.",
        "Noted. Anything else?", "Thank you! Noted."]
CHANGES = {
    "color": ["Actually, make it {value}.", "Can I switch the color to {value}?",
              "On second thought, I'd prefer {value}.", "Change the color to {value}, please."],
    "quantity": ["Make that {value}, please.", "Change the quantity to {value}.",
                 "Actually I need {value}.", "Can you make it {value} instead?"],
    "city": ["Please ship to {value} instead.", "Change of plan: deliver to {value}.",
             "Send it to {value} rather.", "Actually, the address is in {value}."],
}
CHANGE_ACKS = ["Done.", "Updated.", "Sure, changed.", "No problem, updated.", "Changed."]
QUESTIONS = [
    ("Do you gift-wrap?", "Yes, for free."),
    ("How long does shipping take?", "About three days."),
    ("Can I pay on delivery?", "Yes, you can."),
    ("Do you have a shop I can visit?", "No, we only sell online."),
    ("Is shipping free?", "Yes, above 30 euros."),
]
FINALS = [
    "Please give me the order as JSON.",
    "Send me the final order as JSON.",
    "What's my order now? As JSON, please.",
    "Order as JSON: item, color, quantity, city.",
    "Can you write my order as JSON?",
]

# === Conversations ===


def _quantity_text(rng: random.Random, quantity: int) -> str:
    """A quantity as digits or as a word."""
    return NUMBER_WORDS[quantity] if rng.random() < 0.5 else str(quantity)


def _order_text(rng: random.Random, item: tuple[str, str], color: str, quantity: int) -> str:
    """E.g. "three teal mugs" or "a red mug"."""
    if quantity == 1:
        return f"{rng.choice(['a', 'one'])} {color} {item[0]}"
    return f"{_quantity_text(rng, quantity)} {color} {item[1]}"


def _different(rng: random.Random, choices: list, current):
    return rng.choice([choice for choice in choices if choice != current])


def make_conversation(rng: random.Random) -> dict:
    """One conversation: `{"messages": [...]}` ending with the order as JSON."""
    item = rng.choice(ITEMS)
    order = {"item": item[0], "color": rng.choice(COLORS), "quantity": rng.randint(1, 9),
             "city": rng.choice(CITIES)}
    first = rng.choice(ORDERS).format(
        order=_order_text(rng, item, order["color"], order["quantity"]), city=order["city"])
    messages = [{"role": "user", "content": first},
                {"role": "assistant", "content": rng.choice(ACKS)}]
    for _ in range(rng.choice([0, 1, 1, 2, 2])):
        if rng.random() < 0.2:
            question, answer = rng.choice(QUESTIONS)
            messages += [{"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]
            continue
        attribute = rng.choice(list(CHANGES))
        if attribute == "color":
            value = _different(rng, COLORS, order["color"])
            text = value
        elif attribute == "city":
            value = _different(rng, CITIES, order["city"])
            text = value
        else:
            value = _different(rng, list(range(1, 10)), order["quantity"])
            text = _quantity_text(rng, value)
        order[attribute] = value
        messages += [{"role": "user", "content": rng.choice(CHANGES[attribute]).format(value=text)},
                     {"role": "assistant", "content": rng.choice(CHANGE_ACKS)}]
    answer = compact_json(order)
    messages += [{"role": "user", "content": rng.choice(FINALS)},
                 {"role": "assistant", "content": answer}]
    return {"messages": messages}


def make_conversations(count: int = COUNT, seed: int = SEED) -> list[dict]:
    """`count` distinct conversations, the same for the same seed."""
    return distinct_rows(make_conversation, count, seed,
                         key=lambda row: json.dumps(row, sort_keys=True))


def main(argv: list[str] | None = None) -> None:
    """Write the data set to `--output` (default: beside this script)."""
    generator_main(argv, __doc__.splitlines()[0], DEFAULT_OUTPUT, make_conversations,
                   noun="conversations")


if __name__ == "__main__":
    main()
