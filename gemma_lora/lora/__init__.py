"""LoRA: enable it on a KerasHub model, save and load adapters, move them to and from PEFT.

- `config`: `LoraConfig` (rank, alpha, targets, rsLoRA, dropout, per-layer
  ranks), saved in and read from an adapter's `adapter_config.json`;
- `layers`: choose the target layers, `enable_lora(model, lora_config)`,
  count parameters;
- `adapter`: `save_adapter` / `load_adapter` (keyed by layer path),
  `merge_lora` into a plain model;
- `dropout`: PEFT's `lora_dropout` on the LoRA branch only;
- `peft`, `peft_layout`: exact export and import of Hugging Face PEFT
  adapters for Gemma 3.
"""

from gemma_lora.lora import dropout
from gemma_lora.lora import peft
from gemma_lora.lora.adapter import ADAPTER_WEIGHTS
from gemma_lora.lora.adapter import load_adapter
from gemma_lora.lora.adapter import merge_lora
from gemma_lora.lora.adapter import save_adapter
from gemma_lora.lora.config import ADAPTER_CONFIG
from gemma_lora.lora.config import ALL_LINEAR
from gemma_lora.lora.config import LoraConfig
from gemma_lora.lora.config import read_adapter_config
from gemma_lora.lora.layers import LORA_VARIABLES
from gemma_lora.lora.layers import ParameterSummary
from gemma_lora.lora.layers import assign_lora_weights
from gemma_lora.lora.layers import enable_lora
from gemma_lora.lora.layers import lora_layers
from gemma_lora.lora.layers import lora_weights
from gemma_lora.lora.layers import model_lora_config
from gemma_lora.lora.layers import parameter_summary
from gemma_lora.lora.layers import resolve_targets
from gemma_lora.lora.peft import export_peft_adapter
from gemma_lora.lora.peft import import_peft_adapter

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "ALL_LINEAR",
    "LORA_VARIABLES",
    "LoraConfig",
    "ParameterSummary",
    "assign_lora_weights",
    "dropout",
    "enable_lora",
    "export_peft_adapter",
    "import_peft_adapter",
    "load_adapter",
    "lora_layers",
    "lora_weights",
    "merge_lora",
    "model_lora_config",
    "parameter_summary",
    "peft",
    "read_adapter_config",
    "resolve_targets",
    "save_adapter",
]
