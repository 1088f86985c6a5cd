"""Stop strings for generation: the prompt template's next `###` section, per token.

A generation ends where the model starts a new template section (`SECTION_HEADER`,
what `evaluation.extract_answer` cuts at). The decoder cannot decode text inside
its compiled loop, so the pattern is followed per token instead: a small
automaton over characters, tabulated once per vocabulary as "state after this
token's text, from each state" (`section_stop_table`), is advanced by one table
look-up per generated token.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import sentencepiece

# A template section header: a response never contains one, so generation
# stops where the model starts a new `### ...` section.
SECTION_HEADER = re.compile(r"\n\s*###")

# States of the automaton that follows `SECTION_HEADER` through the text:
# nothing, after "\n" (and whitespace), after "\n#", after "\n##", matched.
_START, _NEWLINE, _ONE_HASH, _TWO_HASHES, MATCHED = range(5)
_NUM_STATES = 5


def token_texts(tokenizer) -> list[str]:
    """The text each vocabulary id decodes to on its own.

    Control and unknown pieces decode to "", byte pieces to their character
    (non-ASCII bytes to a placeholder, since only ASCII matters to the stop
    automaton), other pieces with SentencePiece's "▁" as a space.

    Args:
        tokenizer: a KerasHub `SentencePieceTokenizer` (Gemma's).

    Returns:
        One string per id.
    """
    processor = sentencepiece.SentencePieceProcessor(model_proto=tokenizer.proto)
    texts = []
    for index in range(processor.GetPieceSize()):
        piece = processor.IdToPiece(index)
        if processor.IsControl(index) or processor.IsUnknown(index):
            texts.append("")
        elif processor.IsByte(index):
            value = int(piece[3:5], 16)
            texts.append(chr(value) if value < 0x80 else "\x80")
        else:
            texts.append(piece.replace("\u2581", " "))
    return texts


def _next_state(state: int, char: str) -> int:
    if state == MATCHED:
        return MATCHED
    if char == "\n":
        return _NEWLINE
    if char == "#" and state in (_NEWLINE, _ONE_HASH, _TWO_HASHES):
        return state + 1
    if state == _NEWLINE and char.isspace():
        return _NEWLINE
    return _START


def section_stop_table(texts: Sequence[str]) -> np.ndarray:
    """Transitions of the `SECTION_HEADER` automaton, per token and state.

    Args:
        texts: the text of each vocabulary id (see `token_texts`).

    Returns:
        `[vocabulary, 5]` int32: the state after a token's text from each
        state; state 4 means the text so far contains a section header.

    Example:
    >>> table = section_stop_table(["a", "\\n", "###", " "])
    >>> int(table[2, table[1, 0]])  # "\\n" then "###"
    4
    >>> int(table[2, 0])  # "###" at the start of a generation
    0
    """
    states = range(_NUM_STATES)
    table = np.empty((len(texts), _NUM_STATES), dtype=np.int32)
    plain = np.array([_START, _START, _START, _START, MATCHED], dtype=np.int32)
    blank = np.array([_START, _NEWLINE, _START, _START, MATCHED], dtype=np.int32)
    for index, text in enumerate(texts):
        if "\n" in text or "#" in text:
            row = []
            for start in states:
                state = start
                for char in text:
                    state = _next_state(state, char)
                row.append(state)
            table[index] = row
        elif text == "":
            table[index] = np.arange(_NUM_STATES)
        elif text.isspace():
            table[index] = blank
        else:
            table[index] = plain
    return table
