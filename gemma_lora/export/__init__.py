"""Export: the tuned model leaves the notebook, in the files serving runtimes load.

- `transformers`: the merged model as a Hugging Face folder (transformers, vLLM);
- `vllm`: PEFT adapter ranks for vLLM's `--max-lora-rank`, and a rank-r export;
- `gguf`: the merged model as a GGUF file, and the adapter alone as a GGUF LoRA
  (llama.cpp, Ollama);
- `ollama`: a `Modelfile` next to a GGUF.
"""

from gemma_lora.export.gguf import FILE_TYPES
from gemma_lora.export.gguf import export_gguf
from gemma_lora.export.gguf import export_gguf_lora
from gemma_lora.export.ollama import MODELFILE
from gemma_lora.export.ollama import write_modelfile
from gemma_lora.export.transformers import EXPORT_DTYPES
from gemma_lora.export.transformers import GEMMA_CHAT_TEMPLATE
from gemma_lora.export.transformers import export_transformers_folder
from gemma_lora.export.vllm import VLLM_MAX_LORA_RANKS
from gemma_lora.export.vllm import PeftRanks
from gemma_lora.export.vllm import RankedExport
from gemma_lora.export.vllm import export_peft_adapter_at_rank
from gemma_lora.export.vllm import peft_ranks
from gemma_lora.export.vllm import vllm_max_lora_rank

__all__: list[str] = [
    "EXPORT_DTYPES",
    "FILE_TYPES",
    "GEMMA_CHAT_TEMPLATE",
    "MODELFILE",
    "PeftRanks",
    "RankedExport",
    "VLLM_MAX_LORA_RANKS",
    "export_gguf",
    "export_gguf_lora",
    "export_peft_adapter_at_rank",
    "export_transformers_folder",
    "peft_ranks",
    "vllm_max_lora_rank",
    "write_modelfile",
]
