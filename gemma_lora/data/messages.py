"""How error messages show names and values read from a file.

Names come from users' files and can be long or many; these helpers quote
and cut them so that a message stays one readable line, and name a JSON
value's type in words (`a number (42)`).
"""

from __future__ import annotations

import difflib
import json
import numbers
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

MAX_NAME_CHARS = 40
"""Longer names from a file are cut in messages."""

MAX_NAMES_LISTED = 12
"""Longer lists of fields or columns are cut in messages."""


def describe(value: Any) -> str:
    """A short phrase naming a JSON value's type.

    Args:
        value: a decoded JSON value.

    Returns:
        E.g. `"a number (42)"`, `"a string"`, `"null"`.

    Example:
    >>> describe(42), describe(float("nan")), describe(None)
    ('a number (42)', 'a number (NaN)', 'null')
    """
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, float):
        return f"a number ({json.dumps(value)})"  # spelled as in JSON: NaN, Infinity
    if isinstance(value, numbers.Number):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return "null" if value is None else type(value).__name__


def quote(name: str) -> str:
    """`repr(name)`, cut to `MAX_NAME_CHARS` characters.

    Args:
        name: a field or column name.

    Returns:
        The quoted name, with its length when it was cut.

    Example:
    >>> quote("output")
    "'output'"
    >>> quote("x" * 50)
    "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... (50 characters)"
    """
    if len(name) <= MAX_NAME_CHARS:
        return repr(name)
    return f"{name[:MAX_NAME_CHARS]!r}... ({len(name):,} characters)"


def quote_list(names: Iterable[str]) -> str:
    """Quoted names joined by commas, at most `MAX_NAMES_LISTED` of them.

    Args:
        names: field or column names.

    Returns:
        E.g. `"'a', 'b'"`, or `"'a', ... and 3 more"` for a long list.

    Example:
    >>> quote_list(["instruction", "output"])
    "'instruction', 'output'"
    """
    names = list(names)
    shown = ", ".join(quote(name) for name in names[:MAX_NAMES_LISTED])
    more = len(names) - MAX_NAMES_LISTED
    return f"{shown} and {more:,} more" if more > 0 else shown


def close_match(name: str, names: Iterable[str]) -> str:
    """A hint naming the name in `names` that is nearly `name`.

    Args:
        name: the name that was looked for.
        names: the names there are.

    Returns:
        `" Did you mean 'X'?"`, or `""` when no name is close.

    Example:
    >>> close_match("output", ["Output", "input"])
    " Did you mean 'Output'?"
    """
    folded = {candidate.strip().lower(): candidate for candidate in names}
    if name.strip().lower() in folded:
        return f" Did you mean {quote(folded[name.strip().lower()])}?"
    close = difflib.get_close_matches(name, list(folded.values())[:1000], n=1, cutoff=0.8)
    return f" Did you mean {quote(close[0])}?" if close else ""
