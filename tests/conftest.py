"""Shared pytest fixtures.

Fast tests use a tiny randomly initialised Gemma 3 built in code; tests marked
`real_model` use the real Gemma 3 270M converted from the PyPI GGUF package
(converted once per cache folder, then reused).
"""

import os
import shutil
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")

import pytest

# XLA's compiled programs, kept on disk for the whole test run and shared by its
# processes (pytest-xdist workers and the papermill kernels they start inherit the
# variables): the many tests that build the same tiny model compile each program
# once. A size limit turns on JAX's file lock, so no process reads a half-written
# entry. Figures: docs/tests.md, "How the suite runs".
COMPILATION_CACHE_SETTINGS = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    "JAX_COMPILATION_CACHE_MAX_SIZE": str(8 * 2**30),
}
COMPILATION_CACHE_DIR = pytest.StashKey[str]()


def pytest_configure(config):
    """In the first pytest process (not in its xdist workers): a compilation cache for the run."""
    if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    folder = config.stash[COMPILATION_CACHE_DIR] = tempfile.mkdtemp(prefix="gemma-lora-tests-xla-")
    os.environ.update(COMPILATION_CACHE_SETTINGS, JAX_COMPILATION_CACHE_DIR=folder)


def pytest_unconfigure(config):
    """Remove the run's compilation cache."""
    if COMPILATION_CACHE_DIR in config.stash:
        shutil.rmtree(config.stash[COMPILATION_CACHE_DIR], ignore_errors=True)


@pytest.fixture(scope="session")
def gemma3_270m_preset():
    """Path of the float32 KerasHub preset converted from the PyPI GGUF."""
    from gemma_lora.models import gguf

    return gguf.gemma3_270m_preset(dtype="float32")


@pytest.fixture(scope="session")
def real_causal_lm(gemma3_270m_preset):
    """The real Gemma 3 270M as a `Gemma3CausalLM` (float32). Shared: do not mutate."""
    import keras_hub

    return keras_hub.models.Gemma3CausalLM.from_preset(str(gemma3_270m_preset))


# === Tiny model ===

COLORS = ("red", "blue", "green", "black", "white", "yellow")
ITEMS = ("mug", "hat", "shoe", "lamp", "scarf", "chair")


def _color_examples(count: int, seed: int) -> dict:
    import random

    rng = random.Random(seed)
    prompts, responses = [], []
    for _ in range(count):
        color, item = rng.choice(COLORS), rng.choice(ITEMS)
        prompts.append(
            "### Instruction:\nWhich color is wanted?\n\n"
            f"### Input:\nPlease send one {color} {item}.\n\n### Response:\n"
        )
        responses.append(color)
    return {"prompts": prompts, "responses": responses}


@pytest.fixture(scope="session")
def color_examples():
    """A toy task the tiny model can learn: name the color in the message."""
    return {
        "train": _color_examples(160, seed=1),
        "validation": _color_examples(16, seed=2),
        "test": _color_examples(16, seed=3),
    }


@pytest.fixture(scope="session")
def tiny_tokenizer_proto(color_examples):
    """A SentencePiece model trained in the test on the toy task's text."""
    from gemma_lora.testing import train_tiny_tokenizer

    texts = [p + r for split in color_examples.values()
             for p, r in zip(split["prompts"], split["responses"])]
    return train_tiny_tokenizer(texts, vocabulary_size=512)


@pytest.fixture
def tiny_causal_lm(tiny_tokenizer_proto):
    """A fresh tiny random Gemma 3 (2 layers, width 32) per test."""
    from gemma_lora.testing import build_tiny_gemma3

    return build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48, seed=0)


# === Docstring examples ===


def pytest_terminal_summary(terminalreporter):
    """Say how many docstring examples tests/test_docstrings.py ran, in how many modules."""
    reports = [report for key in ("passed", "failed") for report in terminalreporter.stats.get(key, [])
               if report.when == "call" and "test_docstrings.py" in report.nodeid]
    counts = [value for report in reports for name, value in report.user_properties
              if name == "docstring_examples"]
    if counts:
        terminalreporter.write_sep(
            "-", f"docstring examples: {sum(counts)} run in {len(counts)} modules "
                 f"({sum(1 for count in counts if count)} with examples)")
