"""Conversations: `messages` and ShareGPT records, checked turn by turn, in Gemma's turn format.

A conversation record holds a list of turns in one of two layouts:

- `messages` (OpenAI's, TRL's and Hugging Face's chat format):
  `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}]}`;
  `model` is accepted as Gemma's name for `assistant`;
- ShareGPT: `{"conversations": [{"from": "human"|"gpt"|"system", "value": "..."}]}`,
  with the common variants of `from` (`user`, `assistant`, `model`, `chatgpt`, `bard`, ...).

`make_conversation` checks one parsed record (an error names the record,
the turn index and the field) and returns a `Conversation`: a `Record`
whose `instruction` is the last user turn, whose `output` is the final
assistant turn, and whose `turns` are the whole exchange. Turns must follow
Gemma's chat template: an optional system turn first, then user and
assistant turns alternating, starting with the user; user turns after the
last assistant turn carry nothing to learn and are dropped.

`conversation_segments` renders a conversation exactly as Gemma's chat
template does (the system text, then a blank line, opens the first user
turn; every turn is `<start_of_turn>{user|model}\\n{text}<end_of_turn>\\n`,
turn texts trimmed) as `(text, trains)` pieces: each assistant turn's text
and its closing `<end_of_turn>` train, nothing else does.

Example:
>>> row = {"messages": [{"role": "user", "content": "Hi!"},
...                     {"role": "assistant", "content": "Hello."}]}
>>> conversation = make_conversation(row, "chat.jsonl:1")
>>> conversation_segments(conversation)
[('<start_of_turn>user\\nHi!<end_of_turn>\\n<start_of_turn>model\\n', False), ('Hello.<end_of_turn>', True), ('\\n', False)]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gemma_lora.data.messages import describe
from gemma_lora.data.messages import quote
from gemma_lora.data.messages import quote_list
from gemma_lora.data.records import Record
from gemma_lora.errors import DataError

CONVERSATION_FORMATS = ("messages", "sharegpt")
"""The conversation layouts `make_conversation` reads: the field, role and text keys below."""

LAYOUTS = {
    "messages": {"list": "messages", "role": "role", "text": "content"},
    "sharegpt": {"list": "conversations", "role": "from", "text": "value"},
}
"""Per conversation format: the record's list field, and each turn's role and text fields."""

ROLES = {
    "messages": {"system": "system", "user": "user", "assistant": "assistant",
                 "model": "assistant"},
    "sharegpt": {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                 "assistant": "assistant", "model": "assistant", "chatgpt": "assistant",
                 "bard": "assistant", "bing": "assistant", "claude": "assistant"},
}
"""Per conversation format: the role names read, and the role each stands for."""

START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
"""Gemma's turn markers (single tokens in Gemma's vocabulary)."""

_FORMAT_NAMES = {"messages": "a 'messages' conversation",
                 "sharegpt": "a ShareGPT 'conversations' conversation"}


@dataclasses.dataclass(frozen=True)
class Turn:
    """One turn of a conversation.

    Args:
        role: `"system"`, `"user"` or `"assistant"` (the file's name for it
            already mapped, e.g. ShareGPT's `gpt` or Gemma's `model`).
        content: the turn's text, as in the file.

    Example:
    >>> Turn("user", "Hi!").role
    'user'
    """

    role: str
    content: str


@dataclasses.dataclass(frozen=True)
class Conversation(Record):
    """A conversation record: a `Record` that also holds every turn.

    `instruction` is the last user turn before the final assistant turn and
    `output` that final assistant turn (both trimmed), so code written for
    instruction records (reports, sample tables) reads conversations too;
    `turns` is the whole exchange, which training renders.

    Example:
    >>> turns = (Turn("user", "Hi!"), Turn("assistant", "Hello."))
    >>> Conversation("Hi!", "", "Hello.", "chat.jsonl:1", turns=turns).output
    'Hello.'
    """

    turns: tuple[Turn, ...] = ()


def detect_format(row: Any) -> str | None:
    """The conversation format of a parsed record, from its fields.

    Args:
        row: a parsed record.

    Returns:
        `"messages"` when it has a `messages` field, `"sharegpt"` when it has
        a `conversations` field, else `None` (an instruction record).

    Example:
    >>> detect_format({"conversations": []}), detect_format({"instruction": "x"})
    ('sharegpt', None)
    """
    if isinstance(row, Mapping):
        for name, layout in LAYOUTS.items():
            if layout["list"] in row:
                return name
    return None


def format_name(data_format: str | None) -> str:
    """How messages name a record format: e.g. "a ShareGPT 'conversations' conversation".

    Example:
    >>> format_name(None)
    'an instruction record'
    """
    return _FORMAT_NAMES.get(data_format, "an instruction record")


def make_conversation(row: Any, source: str, data_format: str | None = None,
                      where: str | None = None) -> Conversation:
    """Validate one parsed conversation record and return it as a `Conversation`.

    Args:
        row: the parsed record, a mapping with a `messages` or
            `conversations` list.
        source: the record's `"path:line"`.
        data_format: `"messages"` or `"sharegpt"`; `None` detects it from
            the record's fields.
        where: how errors locate the record; defaults to `source`.

    Returns:
        The conversation, without the user turns after its last assistant turn.

    Raises:
        DataError: the list is missing, not a list or empty; a turn is not an
            object, has a missing or unknown role or a missing, non-string or
            empty text; the turns are out of Gemma's order (system first and
            once, then user and assistant alternating from the user); or
            there is no assistant turn. The message names `where`, the turn
            index and the field.

    Example:
    >>> make_conversation({"messages": [{"role": "user", "content": "Hi!"}]}, "c.jsonl:4")
    Traceback (most recent call last):
    ...
    gemma_lora.errors.DataError: c.jsonl:4: the conversation has no assistant turn; expected at least one (the loss falls on assistant turns).
    """
    where = where or source
    data_format = data_format or detect_format(row) or "messages"
    layout = LAYOUTS[data_format]
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: the record is {describe(row)}; expected a JSON object.")
    duplicate = getattr(row, "duplicate_key", None)
    if duplicate is not None:
        raise DataError(f"{where}: field {quote(duplicate)} appears twice in the object; "
                        "expected each field once.")
    name = layout["list"]
    expected = f"expected a list of turns (objects with {layout['role']!r} and {layout['text']!r})"
    if name not in row:
        raise DataError(f"{where}: field {name!r} is missing; {expected}. Fields present: "
                        f"{quote_list(row) or 'none'}.")
    items = row[name]
    if not isinstance(items, list):
        raise DataError(f"{where}: field {name!r} is {describe(items)}; {expected}.")
    if not items:
        raise DataError(f"{where}: field {name!r} is an empty list; {expected}.")
    turns = [_turn(item, data_format, f"{where}: {name}[{index}]")
             for index, item in enumerate(items)]
    _check_order(turns, f"{where}: {name}")
    last = max(index for index, turn in enumerate(turns) if turn.role == "assistant")
    turns = turns[:last + 1]
    users = [turn for turn in turns if turn.role == "user"]
    return Conversation(instruction=users[-1].content.strip(), input="",
                        output=turns[-1].content.strip(), source=source, turns=tuple(turns))


def _turn(item: Any, data_format: str, where: str) -> Turn:
    """One validated turn."""
    layout, roles = LAYOUTS[data_format], ROLES[data_format]
    role_key, text_key = layout["role"], layout["text"]
    if not isinstance(item, Mapping):
        raise DataError(f"{where}: the turn is {describe(item)}; expected an object with "
                        f"{role_key!r} and {text_key!r}.")
    duplicate = getattr(item, "duplicate_key", None)
    if duplicate is not None:
        raise DataError(f"{where}: field {quote(duplicate)} appears twice in the turn; "
                        "expected each field once.")
    known = ", ".join(map(repr, roles))
    if role_key not in item:
        raise DataError(f"{where}: field {role_key!r} is missing; expected one of {known}. "
                        f"Fields present: {quote_list(item) or 'none'}.{_other_layout(item, data_format)}")
    role = item[role_key]
    if not isinstance(role, str):
        raise DataError(f"{where}: field {role_key!r} is {describe(role)}; expected one of {known}.")
    if role not in roles:
        hint = (f" Did you mean {role.strip().lower()!r}?"
                if role.strip().lower() in roles else "")
        raise DataError(f"{where}: field {role_key!r} is {quote(role)}, not a known role; "
                        f"expected one of {known}.{hint}")
    if text_key not in item or item[text_key] is None:
        state = "is null" if text_key in item else "is missing"
        raise DataError(f"{where}: field {text_key!r} {state}; expected the turn's text "
                        "(a non-empty string).")
    text = item[text_key]
    if not isinstance(text, str):
        parts = (" (lists of content parts, as for images, are not supported: give the text "
                 "as one string)" if isinstance(text, list) else "")
        raise DataError(f"{where}: field {text_key!r} is {describe(text)}; expected the turn's "
                        f"text (a non-empty string){parts}.")
    if not text.strip():
        raise DataError(f"{where}: field {text_key!r} is empty or whitespace only; expected the "
                        "turn's text (a non-empty string).")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{where}: field {text_key!r} contains an unpaired surrogate; expected "
                        "a non-empty string of valid Unicode.") from None
    return Turn(roles[role], text)


def _other_layout(item: Mapping, data_format: str) -> str:
    """A hint when a turn uses the other format's field names."""
    for name, layout in LAYOUTS.items():
        if name != data_format and layout["role"] in item:
            owner = "ShareGPT's" if name == "sharegpt" else "the messages format's"
            return (f" The turn has {owner} fields ({layout['role']!r}, {layout['text']!r}): "
                    f"name the record's list {layout['list']!r}.")
    return ""


def _check_order(turns: list[Turn], where: str) -> None:
    """Raise unless the turns are in Gemma's order with at least one assistant turn."""
    for index, turn in enumerate(turns):
        if turn.role == "system" and index > 0:
            which = ("a second system turn" if turns[0].role == "system"
                     else "a system turn after the first turn")
            raise DataError(f"{where}[{index}]: {which}; expected at most "
                            "one system turn, the first (Gemma puts its text into the first "
                            "user turn).")
    body = turns[1:] if turns[0].role == "system" else turns
    offset = len(turns) - len(body)
    for index, turn in enumerate(body):
        expected = "user" if index % 2 == 0 else "assistant"
        if turn.role != expected:
            problem = (f"the conversation starts with an {turn.role} turn" if index == 0
                       else f"two {turn.role} turns in a row")
            raise DataError(f"{where}[{index + offset}]: {problem}; expected user and assistant "
                            "turns to alternate, starting with the user (as Gemma's chat "
                            "template requires).")
    if not any(turn.role == "assistant" for turn in body):
        raise DataError(f"{where.rsplit(': ', 1)[0]}: the conversation has no assistant turn; "
                        "expected at least one (the loss falls on assistant turns).")


def conversation_segments(conversation: Conversation,
                          generation_prompt: bool = False) -> list[tuple[str, bool]]:
    """A conversation in Gemma's chat template, as `(text, trains)` pieces.

    Joined, the texts are exactly what Gemma's chat template (its
    `tokenizer_config.json`'s `chat_template`) renders after `<bos>`: the
    system text and a blank line open the first user turn, every turn is
    `<start_of_turn>{user|model}\\n{text trimmed}<end_of_turn>\\n`. Each
    assistant turn's text with its closing `<end_of_turn>` is one piece that
    trains; every other piece does not. A trained piece always ends a turn,
    so cutting after one cuts at a turn boundary.

    Args:
        conversation: a `Conversation` (from `make_conversation`).
        generation_prompt: stop before the final assistant turn's text, after
            its `<start_of_turn>model\\n` (the template's
            `add_generation_prompt`): the prompt a model answers.

    Returns:
        The pieces in order; they alternate not-trained and trained.

    Example:
    >>> turns = (Turn("system", "Be brief."), Turn("user", "Hi!"), Turn("assistant", " Hello. "))
    >>> conversation = Conversation("Hi!", "", "Hello.", "c.jsonl:1", turns=turns)
    >>> "".join(text for text, _ in conversation_segments(conversation, generation_prompt=True))
    '<start_of_turn>user\\nBe brief.\\n\\nHi!<end_of_turn>\\n<start_of_turn>model\\n'
    """
    turns = list(conversation.turns)
    prefix = ""
    if turns and turns[0].role == "system":
        prefix = turns.pop(0).content + "\n\n"
    segments: list[tuple[str, bool]] = []
    pending = ""
    for index, turn in enumerate(turns):
        role = "model" if turn.role == "assistant" else "user"
        pending += f"{START_OF_TURN}{role}\n" + (prefix if index == 0 else "")
        if turn.role == "assistant":
            if generation_prompt and index == len(turns) - 1:
                break
            segments += [(pending, False), (turn.content.strip() + END_OF_TURN, True)]
            pending = "\n"
        else:
            pending += turn.content.strip() + END_OF_TURN + "\n"
    segments.append((pending, False))
    return segments
