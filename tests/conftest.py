"""Shared pytest fixtures.

Fast tests use a tiny randomly initialised Gemma 3 built in code; tests marked
`real_model` use the real Gemma 3 270M converted from the PyPI GGUF package
(converted once per cache folder, then reused).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import pytest


@pytest.fixture(scope="session")
def gemma3_270m_preset():
    """Path of the float32 KerasHub preset converted from the PyPI GGUF."""
    from gemma_lora import gguf

    return gguf.gemma3_270m_preset(dtype="float32")


@pytest.fixture(scope="session")
def real_causal_lm(gemma3_270m_preset):
    """The real Gemma 3 270M as a `Gemma3CausalLM` (float32). Shared: do not mutate."""
    import keras_hub

    return keras_hub.models.Gemma3CausalLM.from_preset(str(gemma3_270m_preset))
