"""gemma_lora: LoRA fine-tuning of Gemma with Keras 3 and KerasHub."""

from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError
from gemma_lora.errors import GemmaLoraError
from gemma_lora.errors import ModelError

__version__ = "0.1.0"
