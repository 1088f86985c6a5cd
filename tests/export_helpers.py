"""Shared by the export tests: the tiny Gemma-normalized model, its log-probabilities, Ollama's parser.

The tiny model's tokenizer has Gemma's own normalization (none, no dummy
prefix), which transformers' `GemmaTokenizer` and llama.cpp assume; the
conftest tiny model's does not. The fixtures are imported by each test
module that uses them. `ollama_parse` is Ollama's Modelfile parser
(`parser/parser.go`), ported line for line.
"""

import numpy as np
import pytest

from gemma_lora.testing.serving import log_softmax

# Three sequences of 41 tokens: longer than the tiny model's sliding window (16).
TOKEN_IDS = np.concatenate(
    [np.full((3, 1), 2), np.random.default_rng(7).integers(6, 500, size=(3, 40))], axis=1)
TOLERANCE = 1e-4  # max |log p(Keras) - log p(runtime)| over the vocabulary, float32
GEMMA_NORMALIZER = {"normalization_rule_name": "identity", "add_dummy_prefix": False,
                    "remove_extra_whitespaces": False}
INTEROP_REASON = "needs {} (requirements-interop.txt): run `make setup-interop`"


def interop_modules(*names):
    """The named modules of the interop extras, or skip the test when one is missing."""
    modules = tuple(pytest.importorskip(name, reason=INTEROP_REASON.format(name))
                    for name in names)
    return modules if len(modules) > 1 else modules[0]


@pytest.fixture(scope="module")
def gemma_proto(color_examples):
    """A tiny SentencePiece model with Gemma's normalization (none, no dummy prefix)."""
    from gemma_lora.testing import train_tiny_tokenizer

    texts = [p + r for split in color_examples.values()
             for p, r in zip(split["prompts"], split["responses"])]
    return train_tiny_tokenizer(texts + ["Be brief.", "Hi! Hello. Which color?"], 512,
                                **GEMMA_NORMALIZER)


@pytest.fixture
def tiny(gemma_proto):
    """A fresh tiny random Gemma 3 with a Gemma-normalized tokenizer."""
    from gemma_lora.testing import build_tiny_gemma3

    return build_tiny_gemma3(gemma_proto, sequence_length=48, seed=0)


def keras_log_probs(model, ids=TOKEN_IDS):
    """The Keras model's log-probabilities at every position of `ids`."""
    return log_softmax(model({"token_ids": ids, "padding_mask": np.ones_like(ids)}))


def ollama_parse(text):
    """Ollama's `parser.ParseFile`, ported rune for rune: `[(command, args)]`."""
    nil, name, value, parameter, message, comment = range(6)
    commands = ("from", "license", "template", "system", "adapter", "renderer", "parser",
                "parameter", "message", "requires")

    def unquote(s):
        for quote in ('"""', '"'):
            if s.startswith(quote):
                ok = len(s) >= 2 * len(quote) and s.endswith(quote)
                return (s[len(quote):-len(quote)], True) if ok else ("", False)
        return s, True

    def transition(r, state):
        space, newline = r in " \t", r in "\r\n"
        if state == nil:
            return (comment, "") if r == "#" else (nil, "") if space or newline else (name, r)
        if state == name:
            if r.isascii() and r.isalpha():
                return name, r
            if space:
                return value, ""
            raise ValueError(f"invalid command before {r!r}")
        if state == value:
            return (nil, r) if space or newline else (value, r)
        if state in (parameter, message):
            if r.isascii() and (r.isalnum() or (r == "_" and state == parameter)):
                return state, r
            if space:
                return value, ""
            raise ValueError(f"unexpected {r!r}")
        return (nil, "") if newline else (comment, "")

    parsed, state, buffer, command, role = [], nil, "", None, ""
    for r in text:
        new_state, r = transition(r, state)
        if new_state != state:
            if state == name:
                if buffer.lower() not in commands:
                    raise ValueError(f"invalid command {buffer!r}")
                word = buffer.lower()
                command = "model" if word == "from" else word
                new_state = {"parameter": parameter, "message": message}.get(word, new_state)
            elif state == parameter:
                command = buffer
            elif state == message:
                role = buffer
            elif state == value:
                args, ok = unquote(buffer.strip())
                if not ok or r in " \t":
                    buffer += r
                    continue
                parsed.append((command, f"{role}: {args}" if role else args))
                role = ""
            buffer, state = "", new_state
        if r.isprintable():
            buffer += r
    if state == value:
        args, ok = unquote(buffer.strip())
        assert ok, "unterminated value"
        parsed.append((command, args))
    assert state in (nil, comment, value), "unexpected end of file"
    assert any(command == "model" for command, _ in parsed), "no FROM line"
    return parsed
