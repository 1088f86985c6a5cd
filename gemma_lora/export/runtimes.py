"""One greedy answer from each serving runtime that is installed, for notebook 04's side-by-side.

`runtime_answers` takes what `export_model` wrote and, for each export a
runtime loads, asks that runtime for one greedy answer: transformers for the
Hugging Face folder, llama.cpp (llama-cpp-python) for the merged GGUF and
for the base GGUF with the GGUF LoRA. A runtime that is not installed is
skipped with a line saying so. The runtimes are imported only here, and
only when asked: nothing else in `gemma_lora` needs them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from gemma_lora.export.from_run import Exported
from gemma_lora.tasks.stopping import SECTION_HEADER
from gemma_lora.validation import check_int

INSTALL_HINT = "pip install -r requirements-interop.txt (or make setup-interop)"
_LLAMA_CONTEXT = 4096


@dataclasses.dataclass(frozen=True)
class RuntimeAnswer:
    """A runtime's greedy answer for one export, or why there is none.

    Args:
        runtime: `"transformers"` or `"llama.cpp"`.
        files: what it loaded (e.g. `"model-f16.gguf"`, `"base-f16.gguf + adapter.gguf"`).
        answer: the continuation, or `None` when the runtime is not installed.
        note: why there is no answer (empty when there is one).
    """

    runtime: str
    files: str
    answer: str | None
    note: str = ""


def runtime_answers(exported: Sequence[Exported], prompt: str, max_new_tokens: int,
                    cut_at_section: bool = True) -> list[RuntimeAnswer]:
    """Each installed runtime's greedy answer to `prompt`, from the exports it loads.

    Args:
        exported: what `export_model` / `export_run` returned.
        prompt: a formatted prompt (`data.format_prompt`), as Keras was given.
        max_new_tokens: most tokens generated.
        cut_at_section: cut an answer where the template's next `###`
            section starts, as `tasks.generation.generate_responses` does.

    Returns:
        One `RuntimeAnswer` per export a runtime loads, in export order.

    Raises:
        ConfigError: `max_new_tokens` is not an integer >= 1.

    Example:
    >>> from gemma_lora.export.from_run import Exported
    >>> runtime_answers([Exported("peft", Path("peft"), 0, "")], "Hi", 4)  # PEFT: no runtime here
    []
    """
    check_int("max_new_tokens", max_new_tokens, minimum=1)
    gguf = {item.path.name: item.path for item in exported if item.path.suffix == ".gguf"}
    jobs = []
    for item in exported:
        if item.format == "transformers":
            jobs.append(("transformers", item.path.name, _transformers_answer, (item.path,)))
        elif item.format in ("gguf", "ollama") and item.path.suffix == ".gguf":
            jobs.append(("llama.cpp", item.path.name, _llama_cpp_answer, (item.path, None)))
        elif item.format == "gguf_lora" and item.path.name == "adapter.gguf":
            base = next(path for name, path in gguf.items() if name.startswith("base-"))
            jobs.append(("llama.cpp", f"{base.name} + {item.path.name}", _llama_cpp_answer,
                         (base, item.path)))
    answers = []
    for runtime, files, answer, paths in jobs:
        module = "transformers" if runtime == "transformers" else "llama_cpp"
        if importlib.util.find_spec(module) is None:
            answers.append(RuntimeAnswer(runtime, files, None, f"{module} is not installed: "
                                                               f"{INSTALL_HINT}"))
            continue
        text = answer(*paths, prompt=prompt, max_new_tokens=max_new_tokens)
        if cut_at_section:
            text = SECTION_HEADER.split(text, maxsplit=1)[0]
        answers.append(RuntimeAnswer(runtime, files, text))
    return answers


def _transformers_answer(folder: Path, prompt: str, max_new_tokens: int) -> str:
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new_tokens)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def _llama_cpp_answer(model_path: Path, lora_path: Path | None, prompt: str,
                      max_new_tokens: int) -> str:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=_LLAMA_CONTEXT,
                          lora_path=None if lora_path is None else str(lora_path), verbose=False)
    try:
        completion = llm.create_completion(prompt, max_tokens=max_new_tokens, temperature=0.0,
                                           repeat_penalty=1.0)
    finally:
        llm.close()
    return completion["choices"][0]["text"]
