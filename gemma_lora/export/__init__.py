"""Export: the tuned model leaves the notebook, in the files serving runtimes load.

- `transformers`: the merged model as a Hugging Face folder (transformers, vLLM);
- `vllm`: PEFT adapter ranks for vLLM's `--max-lora-rank`, and a rank-r export;
- `gguf`: the merged model as a GGUF file, and the adapter alone as a GGUF LoRA
  (llama.cpp, Ollama);
- `ollama`: a `Modelfile` next to a GGUF.
"""

__all__: list[str] = []
