"""gemma_lora: LoRA fine-tuning of Gemma with Keras 3 and KerasHub (JAX).

The pipeline of one run, stage by stage, each a subpackage:

    config (RunConfig) -> data -> models -> lora -> training -> tasks -> runs

Importing `gemma_lora` is cheap: the names below load their module on first
use (PEP 562), so `KERAS_BACKEND` can still be set after `import gemma_lora`
and before anything touches Keras.

Example::

    import os
    os.environ["KERAS_BACKEND"] = "jax"
    import gemma_lora as gl

    config = gl.RunConfig(rank=8, max_steps=150, run_dir="runs/demo")
    model = gl.load_causal_lm(config.preset)
    gl.enable_lora(model, gl.LoraConfig.from_run(config))
    splits = gl.load_splits(config)
    ...
"""

from __future__ import annotations

import importlib
from typing import Any

from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError
from gemma_lora.errors import GemmaLoraError
from gemma_lora.errors import ModelError
from gemma_lora.version import __version__

# Public name -> the module that defines it (imported on first access).
_LAZY = {
    # The stages, as modules.
    "config": "gemma_lora.config",
    "data": "gemma_lora.data",
    "models": "gemma_lora.models",
    "parallel": "gemma_lora.parallel",
    "lora": "gemma_lora.lora",
    "training": "gemma_lora.training",
    "tasks": "gemma_lora.tasks",
    "runs": "gemma_lora.runs",
    "testing": "gemma_lora.testing",
    "preflight": "gemma_lora.runs.preflight",
    "report": "gemma_lora.runs.report",
    "compare": "gemma_lora.runs.compare",
    # The calls of one run, in pipeline order.
    "RunConfig": "gemma_lora.config",
    "load_splits": "gemma_lora.data",
    "to_prompt_response": "gemma_lora.data",
    "load_causal_lm": "gemma_lora.models",
    "quantize_base": "gemma_lora.models",
    "LoraConfig": "gemma_lora.lora",
    "enable_lora": "gemma_lora.lora",
    "save_adapter": "gemma_lora.lora",
    "load_adapter": "gemma_lora.lora",
    "merge_lora": "gemma_lora.lora",
    "train": "gemma_lora.training",
    "evaluate": "gemma_lora.tasks",
    "generate_responses": "gemma_lora.tasks",
    "extract_answer": "gemma_lora.tasks",
}

__all__ = sorted(["ConfigError", "DataError", "GemmaLoraError", "ModelError", "__version__",
                  *_LAZY])


def __getattr__(name: str) -> Any:
    """Import the module behind a public name on first use (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'gemma_lora' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if module.__name__.rpartition(".")[2] == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
