"""Generate `order_extraction.jsonl`: shop orders to extract as JSON.

Each record is an Alpaca example: an `instruction` asking for the order as
JSON, an `input` that is a short customer message, and an `output` that is one
line of JSON with the keys `item`, `color`, `size`, `quantity`, `city`, in
that order. Everything is drawn from the word lists below with a seeded
`random.Random`, so the file is the same on every run and every machine.

The rules the model has to learn, all applied without exception:

- `item` is the singular noun ("hoodies" -> "hoodie").
- `color` is written exactly as in the message ("navy", "sky blue").
- `size` is canonical: letter sizes become XS, S, M, L, XL ("medium" -> "M",
  "extra large" -> "XL"), numbered sizes keep their number as a string
  ("size 10" -> "10"); `null` when the message gives no size.
- `quantity` is an integer: digits or words ("three"), "a"/"an"/"one"/
  "a single" -> 1, "a pair of"/"a couple of" -> 2, "half a dozen" -> 6,
  "a dozen" -> 12.
- `city` is where the order is to be delivered; other cities (where the
  customer is from, who recommended the shop) and earlier orders are ignored.

Usage:
    python data/make_order_extraction.py [--output data/order_extraction.jsonl]
"""

from __future__ import annotations

import random
from pathlib import Path

from gemma_lora.data.synthetic import compact_json
from gemma_lora.data.synthetic import distinct_rows
from gemma_lora.data.synthetic import generator_main

SEED = 270
COUNT = 2500
MAX_INPUT_CHARS = 125
DEFAULT_OUTPUT = Path(__file__).with_name("order_extraction.jsonl")

# === Vocabulary ===

INSTRUCTIONS = [
    "Extract the order as JSON: item, color, size, quantity, city.",
    "Return the order as JSON with item, color, size, quantity and city.",
    "Turn this message into order JSON (item, color, size, quantity, city).",
    "What was ordered? JSON with item, color, size, quantity, city.",
    "Parse this order into JSON with keys item, color, size, quantity, city.",
    "Order as JSON (item, color, size, quantity, city); size null if none.",
    "Give the order as one JSON line: item, color, size, quantity, city.",
    "Read the message; output JSON with item, color, size, quantity, city.",
    "Order details as JSON, please: item, color, size, quantity, city.",
    "Extract item, color, size, quantity and delivery city as JSON.",
    "Write the order as JSON (item, color, size, quantity, city).",
    "Fill in item, color, size, quantity and city for this order as JSON.",
    "Summarize the order in JSON: item, color, size, quantity, city.",
]

# (singular, plural, sizing): sizing is "letter" (XS-XL), "number" or None.
ITEMS = [
    ("hoodie", "hoodies", "letter"),
    ("t-shirt", "t-shirts", "letter"),
    ("sweater", "sweaters", "letter"),
    ("jacket", "jackets", "letter"),
    ("raincoat", "raincoats", "letter"),
    ("cardigan", "cardigans", "letter"),
    ("polo shirt", "polo shirts", "letter"),
    ("vest", "vests", "letter"),
    ("fleece", "fleeces", "letter"),
    ("parka", "parkas", "letter"),
    ("tracksuit", "tracksuits", "letter"),
    ("blouse", "blouses", "letter"),
    ("tank top", "tank tops", "letter"),
    ("windbreaker", "windbreakers", "letter"),
    ("bathrobe", "bathrobes", "letter"),
    ("rain poncho", "rain ponchos", "letter"),
    ("dress", "dresses", "number"),
    ("skirt", "skirts", "number"),
    ("jumpsuit", "jumpsuits", "number"),
    ("ring", "rings", "number"),
    ("mug", "mugs", None),
    ("backpack", "backpacks", None),
    ("umbrella", "umbrellas", None),
    ("water bottle", "water bottles", None),
    ("tote bag", "tote bags", None),
    ("notebook", "notebooks", None),
    ("candle", "candles", None),
    ("cushion", "cushions", None),
    ("blanket", "blankets", None),
    ("teapot", "teapots", None),
    ("vase", "vases", None),
    ("wallet", "wallets", None),
    ("keychain", "keychains", None),
    ("desk lamp", "desk lamps", None),
    ("beanie", "beanies", None),
    ("apron", "aprons", None),
    ("scarf", "scarves", None),
    ("lunch box", "lunch boxes", None),
    ("yoga mat", "yoga mats", None),
    ("phone stand", "phone stands", None),
]

COLORS = [
    "navy", "black", "white", "red", "olive", "mustard", "teal", "coral",
    "charcoal", "lavender", "burgundy", "beige", "ivory", "turquoise",
    "maroon", "grey", "pink", "orange", "mint", "sky blue", "forest green",
]

CITIES = [
    "Porto", "Lyon", "Ghent", "Utrecht", "Krakow", "Bilbao", "Turin", "Graz",
    "Aarhus", "Tampere", "Bergen", "Gdansk", "Brno", "Ljubljana", "Split",
    "Thessaloniki", "Valencia", "Seville", "Nantes", "Bordeaux", "Leipzig",
    "Bremen", "Basel", "Lausanne", "Galway", "Cork", "Leeds", "Bristol",
    "Glasgow", "Cardiff", "Malmo", "Uppsala", "Tartu", "Riga", "Vilnius",
    "Cluj-Napoca", "Plovdiv", "Izmir", "Haifa", "Marrakesh", "Accra",
    "Nairobi", "Durban", "Pune", "Kochi", "Chiang Mai", "Da Nang", "Cebu",
    "Osaka", "Sapporo", "Busan", "Taichung", "Perth", "Hobart", "Wellington",
    "Halifax", "Quebec City", "Portland", "Austin", "Oaxaca", "Cusco",
    "Mendoza", "Curitiba", "Valparaiso",
]

NAMES = [
    "Ana", "Tomas", "Ines", "Kofi", "Mei", "Lars", "Priya", "Omar", "Sofia",
    "Jonas", "Aiko", "Mateo", "Leila", "Bruno", "Zara", "Nikolai", "Elif",
    "Hugo", "Amara", "Felix", "Yuki", "Rosa", "Sami", "Ingrid", "Diego",
    "Noor", "Pavel", "Chloe", "Ravi", "Marta",
]

# Canonical letter size -> how a message may write it.
LETTER_SIZES = {
    "XS": ["XS", "extra small", "extra-small"],
    "S": ["S", "small"],
    "M": ["M", "medium"],
    "L": ["L", "large"],
    "XL": ["XL", "extra large", "extra-large"],
}
NUMBER_SIZES = {"ring": [str(n) for n in range(5, 12)]}
DEFAULT_NUMBER_SIZES = [str(n) for n in range(4, 18, 2)]

NUMBER_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
    "nine", "ten", "eleven", "twelve",
]
# Quantity -> relative frequency.
QUANTITY_WEIGHTS = {
    1: 22, 2: 18, 3: 14, 4: 10, 5: 8, 6: 8, 7: 3, 8: 4, 9: 2, 10: 5, 11: 1, 12: 5,
}

# === Message pieces ===
# Slots: {order} is quantity + color + item with the size when there is one;
# {order_bare} is the same without the size, followed by {size_sentence}
# ("" when there is no size); {city} is the delivery city; {other_city} is a
# different city that is not the destination.

BODIES = [
    "Could you send {order} to my place in {city}?",
    "I'd like to order {order}. Please ship to {city}.",
    "{order}, deliver to {city}.",
    "Order: {order}. Ship to: {city}.",
    "Ship to {city}: {order}.",
    "please send {order} to {city}.",
    "To {city}, please: {order_bare}.{size_sentence}",
    "Can I get {order_bare}?{size_sentence} Delivery address is in {city}.",
    "I want {order} delivered to {city}.",
    "Need {order} shipped to {city} asap.",
    "My address is in {city}. Please send {order}.",
    "Please deliver {order} to {city}.",
    "{order} to {city} pls",
    "I'm after {order_bare}.{size_sentence} It needs to go to {city}.",
    "Quick order: {order}, shipping to {city}.",
    "Can you post {order} to {city}?",
    "For delivery in {city}: {order}.",
    "I would like to buy {order}. Deliver to {city}, please.",
    "{order_bare}, please.{size_sentence} Destination: {city}.",
    "Put me down for {order}, going to {city}.",
    "Ordering {order}. Address: {city}.",
    "I saw your new collection and want {order}. Shipping address in {city}.",
    "Could I please have {order} sent to {city}?",
    "We need {order} for our office in {city}.",
    "Send {order} to {city}.",
    "I'd love to get {order}. I live in {city}.",
    "{city} delivery please: {order}.",
    "just {order}, shipped to {city}",
    "Is it possible to send {order} to {city}?",
    "My daughter wants {order}. We're in {city}.",
    "Please ship {order} to {city} by next week.",
    "{order} to {city}, please.",
    "Looking to order {order} with delivery to {city}.",
    "{order} -> {city}",
    "Do you deliver to {city}? If so, I'd like {order}.",
    "Could {order} be delivered to {city}?",
    "I want to treat myself to {order}. Please ship to {city}.",
    "Birthday present time! {order}, delivered to {city} please.",
    "Ship {order} to {city}; I'll pay on delivery.",
    "I'll take {order_bare}.{size_sentence} Shipping to {city}.",
    "Requesting {order} for delivery to {city}.",
    "Got a gift to buy: {order}, sent to my friend in {city}.",
    "I'm from {other_city} but please ship {order} to {city}.",
    "I live in {other_city}, but send {order} to my office in {city}.",
    "Please send {order} to {city}, not to my old address in {other_city}.",
    "We're moving from {other_city} to {city}, so deliver {order} there.",
]

SIZE_SENTENCES = [" Size {size}, please.", " I need size {size}.", " Size: {size}."]
GREETINGS = [
    "Hi!", "Hello!", "Hi there!", "Hey!", "Good morning.", "Hello team!", "Good afternoon!",
]
SIGNOFFS = ["Thanks, {name}", "Cheers, {name}", "Best, {name}", "- {name}",
            "Thank you! {name}", "Regards, {name}", "Thanks!", "Many thanks."]
PREFIXES = [
    "I'm originally from {other_city}.",
    "My sister in {other_city} recommended your shop.",
    "Last month I ordered {previous}.",
    "I already bought {previous} from you.",
]
SUFFIXES = [
    "My last order, {previous}, arrived fine.",
    "(Not the {previous_item} from last time.)",
]
# Labels of the key-value message style, by field.
LABELS = {
    "item": ["item", "product", "article"],
    "color": ["color", "colour"],
    "size": ["size"],
    "quantity": ["qty", "quantity", "amount"],
    "city": ["city", "ship to", "deliver to"],
}
SEPARATORS = ["; ", ", ", " | ", " / "]


# === Generation ===


def make_order(rng: random.Random) -> dict:
    """A random order: the output JSON fields, in their fixed order."""
    item, _, sizing = rng.choice(ITEMS)
    size = None
    if sizing == "letter":
        size = rng.choice(list(LETTER_SIZES))
    elif sizing == "number":
        size = rng.choice(NUMBER_SIZES.get(item, DEFAULT_NUMBER_SIZES))
    if size is not None and rng.random() < 0.08:
        size = None  # a sized item whose message leaves the size out
    quantity = rng.choices(list(QUANTITY_WEIGHTS), weights=list(QUANTITY_WEIGHTS.values()))[0]
    return {
        "item": item,
        "color": rng.choice(COLORS),
        "size": size,
        "quantity": quantity,
        "city": rng.choice(CITIES),
    }


def plural(item: str) -> str:
    """The plural of a singular item name."""
    return next(plural for singular, plural, _ in ITEMS if singular == item)


def article(word: str) -> str:
    """'a' or 'an' for the word that follows."""
    return "an" if word[0] in "aeiou" else "a"


def quantity_phrase(rng: random.Random, quantity: int, next_word: str) -> str:
    """How a message writes a quantity, before the word `next_word`."""
    options = [str(quantity), NUMBER_WORDS[quantity]]
    if quantity == 1:
        options += [article(next_word), article(next_word), "a single"]
    elif quantity == 2:
        options += ["a pair of", "a couple of"]
    elif quantity == 6:
        options += ["half a dozen"]
    elif quantity == 12:
        options += ["a dozen", "a dozen"]
    return rng.choice(options)


def goods_phrase(
    rng: random.Random, quantity: int, color: str, item: str, terse: bool = True
) -> tuple[str, bool]:
    """Quantity, color and item in words, e.g. "three navy hoodies".

    With `terse`, the phrase may also be written "3x navy hoodie". Returns the
    phrase and whether it ends with the color ("hoodies in navy"), in which
    case a size is best joined with a comma.
    """
    noun = item if quantity == 1 else plural(item)
    style = rng.random()
    if terse and style < 0.15:
        return f"{quantity}x {color} {item}", False
    if style < 0.35:
        return f"{quantity_phrase(rng, quantity, noun)} {noun} in {color}", True
    return f"{quantity_phrase(rng, quantity, color)} {color} {noun}", False


def size_words(rng: random.Random, size: str) -> str:
    """How a message writes a canonical size ("M" -> "medium" or "M")."""
    return rng.choice(LETTER_SIZES.get(size, [size]))


def inline_size(rng: random.Random, size: str, after_color: bool) -> str:
    """A size attached to the goods phrase, e.g. " in size M"."""
    frames = [", size {size}", " (size {size})"]
    if not after_color:
        frames.append(" in size {size}")
    if not after_color and size in LETTER_SIZES:
        frames.append(" in {size}")  # "in medium"; never "in 10"
    return rng.choice(frames).format(size=size_words(rng, size))


def previous_order(rng: random.Random, order: dict) -> tuple[str, str]:
    """An earlier order to mention as a distractor: (phrase, plural item)."""
    item = rng.choice([name for name, _, _ in ITEMS if name != order["item"]])
    color = rng.choice([color for color in COLORS if color != order["color"]])
    quantity = rng.choice([q for q in QUANTITY_WEIGHTS if q != order["quantity"]])
    phrase, _ = goods_phrase(rng, quantity, color, item, terse=False)
    return phrase, plural(item)


def sentence_case(text: str) -> str:
    """`text` with its first letter upper-cased."""
    return text[:1].upper() + text[1:]


def prose_message(rng: random.Random, order: dict) -> str:
    """A message written as sentences around one of the `BODIES`."""
    goods, after_color = goods_phrase(rng, order["quantity"], order["color"], order["item"])
    size = order["size"]
    body = rng.choice(BODIES)
    other_city = rng.choice([city for city in CITIES if city != order["city"]])
    previous, previous_item = previous_order(rng, order)
    size_sentence = ""
    if size:
        size_sentence = rng.choice(SIZE_SENTENCES).format(size=size_words(rng, size))
    text = body.format(
        order=goods + (inline_size(rng, size, after_color) if size else ""),
        order_bare=goods,
        size_sentence=size_sentence,
        city=order["city"],
        other_city=other_city,
    )
    parts = [sentence_case(text) if rng.random() < 0.85 else text]
    if "{other_city}" not in body and rng.random() < 0.2:
        parts.insert(0, rng.choice(PREFIXES).format(other_city=other_city, previous=previous))
    elif rng.random() < 0.06:
        suffix = rng.choice(SUFFIXES)
        parts.append(suffix.format(previous=previous, previous_item=previous_item))
    if rng.random() < 0.45:
        parts.insert(0, rng.choice(GREETINGS))
    if rng.random() < 0.5:
        parts.append(rng.choice(SIGNOFFS).format(name=rng.choice(NAMES)))
    return " ".join(parts)


def labeled_message(rng: random.Random, order: dict) -> str:
    """A terse key-value message with the fields in random order."""
    fields = {
        "item": order["item"],
        "color": order["color"],
        "quantity": rng.choice([str(order["quantity"]), NUMBER_WORDS[order["quantity"]]]),
        "city": order["city"],
    }
    if order["size"]:
        fields["size"] = size_words(rng, order["size"])
    keys = list(fields)
    rng.shuffle(keys)
    colon = rng.choice([": ", " "])
    pairs = [f"{rng.choice(LABELS[key])}{colon}{fields[key]}" for key in keys]
    return rng.choice(SEPARATORS).join(pairs)


def make_example(rng: random.Random) -> dict:
    """One Alpaca record: an instruction, a message stating an order, its JSON."""
    order = make_order(rng)
    while True:
        if rng.random() < 0.12:
            message = labeled_message(rng, order)
        else:
            message = prose_message(rng, order)
        if len(message) <= MAX_INPUT_CHARS:
            break
    return {
        "instruction": rng.choice(INSTRUCTIONS),
        "input": message,
        "output": compact_json(order),
    }


def make_examples(count: int = COUNT, seed: int = SEED) -> list[dict]:
    """`count` records with pairwise different inputs."""
    return distinct_rows(make_example, count, seed)


def main(argv: list[str] | None = None) -> None:
    """Write the data set to `--output` (default: beside this script)."""
    generator_main(argv, __doc__.splitlines()[0], DEFAULT_OUTPUT, make_examples)


if __name__ == "__main__":
    main()
