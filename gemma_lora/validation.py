"""Parameter checks shared by every stage: one message format for one kind of mistake.

Each check raises `ConfigError` naming the parameter, what was expected and
what was given, so `RunConfig`, `LoraConfig` and the functions that take the
same parameters directly all say the same thing.

Example:
>>> check_int("rank", 8, minimum=1)
>>> check_int("rank", 0, minimum=1)
Traceback (most recent call last):
...
gemma_lora.errors.ConfigError: rank must be an integer >= 1; got 0.
"""

from __future__ import annotations

from typing import Any

from gemma_lora.errors import ConfigError


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Check that `value` is one of `choices`.

    Args:
        name: the parameter's name, for the message.
        value: the value given.
        choices: the values allowed.

    Raises:
        ConfigError: `value` is not among `choices`.

    Example:
    >>> check_choice("dtype", "float16", ("float32", "bfloat16"))
    Traceback (most recent call last):
    ...
    gemma_lora.errors.ConfigError: dtype must be one of ['float32', 'bfloat16']; got 'float16'.
    """
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}; got {value!r}.")


def check_int(name: str, value: Any, minimum: int) -> None:
    """Check that `value` is an integer (not a bool) of at least `minimum`.

    Args:
        name: the parameter's name, for the message.
        value: the value given.
        minimum: the smallest value allowed.

    Raises:
        ConfigError: `value` is not an integer >= `minimum`.

    Example:
    >>> check_int("batch_size", 4, minimum=1)
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}.")


def check_positive(name: str, value: Any) -> None:
    """Check that `value` is a number > 0.

    Args:
        name: the parameter's name, for the message.
        value: the value given.

    Raises:
        ConfigError: `value` is not a number > 0.

    Example:
    >>> check_positive("learning_rate", -1)
    Traceback (most recent call last):
    ...
    gemma_lora.errors.ConfigError: learning_rate must be a number > 0; got -1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a number > 0; got {value!r}.")


def check_fraction(name: str, value: Any) -> None:
    """Check that `value` is a number in [0, 1).

    Args:
        name: the parameter's name, for the message.
        value: the value given.

    Raises:
        ConfigError: `value` is not a number in [0, 1).

    Example:
    >>> check_fraction("dropout", 0.05)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{name} must be a number in [0, 1); got {value!r}.")


def check_bool(name: str, value: Any) -> None:
    """Check that `value` is `True` or `False`.

    Args:
        name: the parameter's name, for the message.
        value: the value given.

    Raises:
        ConfigError: `value` is not a bool.

    Example:
    >>> check_bool("packing", "yes")
    Traceback (most recent call last):
    ...
    gemma_lora.errors.ConfigError: packing must be True or False; got 'yes'.
    """
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False; got {value!r}.")


def check_rank_pattern(name: str, value: Any) -> None:
    """Check a `{layer path pattern: rank}` mapping: string keys, positive integer ranks.

    Args:
        name: the parameter's name, for the message.
        value: the mapping given, or None.

    Raises:
        ConfigError: `value` is not a mapping, or a rank is not an integer >= 1.

    Example:
    >>> check_rank_pattern("rank_pattern", {"decoder_block_1[0-7]/.*": 16})
    >>> check_rank_pattern("rank_pattern", {"x": "big"})
    Traceback (most recent call last):
    ...
    gemma_lora.errors.ConfigError: rank_pattern['x'] must be an integer >= 1; got 'big'.
    """
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ConfigError(
            f'{name} must be a mapping like {{"decoder_block_1[0-7]/.*": 16}}; got {value!r}.'
        )
    for pattern, rank in value.items():
        check_int(f"{name}[{pattern!r}]", rank, minimum=1)


def check_sampling(temperature: Any, top_k: Any, top_p: Any) -> None:
    """Check generation sampling options: temperature >= 0, top-k >= 1, top-p in (0, 1].

    Args:
        temperature: 0 or None for greedy decoding, else a number > 0.
        top_k: None, or an integer >= 1.
        top_p: None, or a number in (0, 1].

    Raises:
        ConfigError: naming the first option out of range.

    Example:
    >>> check_sampling(0.7, 40, 0.95)
    >>> check_sampling(0.7, None, 1.5)
    Traceback (most recent call last):
    ...
    gemma_lora.errors.ConfigError: top_p must be a number in (0, 1] or None; got 1.5.
    """
    if temperature is not None and temperature != 0:
        check_positive("temperature", temperature)
    if top_k is not None:
        check_int("top_k", top_k, minimum=1)
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                              or not 0 < top_p <= 1):
        raise ConfigError(f"top_p must be a number in (0, 1] or None; got {top_p!r}.")
