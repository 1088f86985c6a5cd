"""Builders for tests and docstring examples: a tiny random Gemma 3 and its tokenizer,
a tiny random DistilBERT text classifier, and finished-run folders to compare.

Nothing in the fine-tuning pipeline imports this package; it sits above every
other layer, so tests and examples may use it freely.
"""

from gemma_lora.testing.runs import write_rank_sweep
from gemma_lora.testing.tiny import build_tiny_gemma3
from gemma_lora.testing.tiny import tiny_causal_lm
from gemma_lora.testing.tiny import tiny_text_classifier
from gemma_lora.testing.tiny import tiny_tokenizer_proto
from gemma_lora.testing.tiny import train_tiny_tokenizer

__all__ = ["build_tiny_gemma3", "tiny_causal_lm", "tiny_text_classifier", "tiny_tokenizer_proto",
           "train_tiny_tokenizer", "write_rank_sweep"]
