"""Builders for tests and docstring examples: a tiny random Gemma 3 and its tokenizer.

Nothing in the fine-tuning pipeline imports this package; it sits above every
other layer, so tests and examples may use it freely.
"""

from gemma_lora.testing.tiny import build_tiny_gemma3
from gemma_lora.testing.tiny import train_tiny_tokenizer

__all__ = ["build_tiny_gemma3", "train_tiny_tokenizer"]
