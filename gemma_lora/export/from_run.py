"""Export a tuned model in the formats serving runtimes load: `make export`, and notebook 04's export cell.

`export_model` writes the chosen `FORMATS` for a model with its LoRA
adapter into one folder, merging the adapter once for the merged formats:

- `"transformers"`: `transformers/`, the merged model as a Hugging Face
  folder (`export_transformers_folder`): transformers, vLLM, TGI;
- `"gguf"`: `gguf/model-<type>.gguf`, the merged model as one GGUF file
  (`export_gguf`): llama.cpp, LM Studio, Ollama;
- `"gguf_lora"`: `gguf/base-<type>.gguf` and `gguf/adapter.gguf`, the base
  model and the adapter alone (`export_gguf_lora`): llama.cpp's `--lora`;
- `"ollama"`: `gguf/Modelfile` for the merged GGUF (which it writes too),
  for `ollama create NAME -f Modelfile`;
- `"peft"`: `peft/`, the exact PEFT adapter (`lora.export_peft_adapter`),
  whose query/key/value modules have rank `heads * r`;
- `"peft_rank"`: `peft_rank<r>/`, every module at the Keras rank `r`
  (`export_peft_adapter_at_rank`, its SVD error reported), for vLLM at a
  smaller `--max-lora-rank`.

`export_run` does it for a run folder of the fine-tuning notebook: it loads
the run's base model (the preset named in `adapter/adapter_config.json`, in
float32) and its adapter, and writes into `<run>/export/`. `main` is
`make export RUN=runs/<time>/01_finetune_gemma_lora FORMATS="gguf ollama"`:

    python -m gemma_lora.export.from_run --run-dir RUN [--formats "transformers gguf"]
        [--gguf-file-type f16] [--hf-dtype float32] [--base-model google/gemma-3-270m]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path

import keras

from gemma_lora.errors import ConfigError
from gemma_lora.errors import GemmaLoraError
from gemma_lora.errors import ModelError
from gemma_lora.export.gguf import FILE_TYPES
from gemma_lora.export.gguf import export_gguf
from gemma_lora.export.gguf import export_gguf_lora
from gemma_lora.export.ollama import write_modelfile
from gemma_lora.export.transformers import EXPORT_DTYPES
from gemma_lora.export.transformers import export_transformers_folder
from gemma_lora.export.vllm import PeftRanks
from gemma_lora.export.vllm import export_peft_adapter_at_rank
from gemma_lora.export.vllm import peft_ranks
from gemma_lora.export.vllm import vllm_max_lora_rank
from gemma_lora.lora import load_adapter
from gemma_lora.lora import lora_layers
from gemma_lora.lora import merge_lora
from gemma_lora.lora import read_adapter_config
from gemma_lora.lora.peft import export_peft_adapter
from gemma_lora.models import load_causal_lm
from gemma_lora.validation import check_choice

FORMATS = ("transformers", "gguf", "gguf_lora", "ollama", "peft", "peft_rank")
"""The export formats, in the order they are written."""

DEFAULT_FORMATS = ("transformers", "gguf", "gguf_lora", "ollama", "peft")
"""What `make export` writes unless told otherwise."""

EXPORT_FOLDER = "export"
"""The folder of a run that `export_run` writes into."""

HF_BASE_MODELS = {
    "gemma3_270m": "google/gemma-3-270m",
    "gemma3_270m_pypi": "google/gemma-3-270m",
    "gemma3_instruct_270m": "google/gemma-3-270m-it",
    "gemma3_1b": "google/gemma-3-1b-pt",
    "gemma3_instruct_1b": "google/gemma-3-1b-it",
}
"""The Hugging Face model a PEFT adapter names for a KerasHub base preset."""

_MERGED = {"transformers", "gguf", "ollama"}
_PEFT = {"peft", "peft_rank"}


@dataclasses.dataclass(frozen=True)
class Exported:
    """One file or folder an export wrote.

    Args:
        format: the format that wrote it (one of `FORMATS`).
        path: the file or folder.
        size_bytes: its size (a folder: its files together).
        use: how a runtime loads it, in one line.
    """

    format: str
    path: Path
    size_bytes: int
    use: str

    def __str__(self) -> str:
        return f"{self.format:<12} {str(self.path):<56} {self.size_bytes / 2**20:>9,.1f} MiB  {self.use}"


def parse_formats(formats: str | Sequence[str]) -> list[str]:
    """The formats asked for, from `"gguf ollama"`, `"gguf,ollama"` or a list, in `FORMATS` order.

    Args:
        formats: format names, as a list or one string (spaces or commas between).

    Returns:
        The names, each once, in the order they are written.

    Raises:
        ConfigError: none given, or a name that is not in `FORMATS`.

    Example:
    >>> parse_formats("ollama, transformers")
    ['transformers', 'ollama']
    >>> parse_formats(["gguf", "onnx"])
    Traceback (most recent call last):
    ...
    gemma_lora.errors.ConfigError: formats: unknown format(s) ['onnx']; choose from ['transformers', 'gguf', 'gguf_lora', 'ollama', 'peft', 'peft_rank'].
    """
    names = formats.replace(",", " ").split() if isinstance(formats, str) else list(formats)
    unknown = [name for name in names if name not in FORMATS]
    if unknown:
        raise ConfigError(f"formats: unknown format(s) {unknown}; choose from {list(FORMATS)}.")
    if not names:
        raise ConfigError(f"formats is empty; choose some of {list(FORMATS)}.")
    return [name for name in FORMATS if name in names]


def export_model(
    model: keras.Model,
    folder: str | os.PathLike,
    formats: str | Sequence[str] = DEFAULT_FORMATS,
    gguf_file_type: str = "f16",
    hf_dtype: str = "float32",
    base_model: str | None = None,
    merged: keras.Model | None = None,
) -> list[Exported]:
    """Write a model with its LoRA adapter in each of `formats` (see the module docstring) into `folder`.

    Args:
        model: a text-only `Gemma3CausalLM` with its preprocessor and LoRA
            enabled (its adapter loaded), on a float (not quantized) base.
        folder: where the exports go (created; files in it are replaced).
        formats: some of `FORMATS`, as a list or a string `"gguf ollama"`.
        gguf_file_type: the GGUF files' weights: `"f32"`, `"f16"`, `"bf16"`
            or `"q8_0"` (the GGUF LoRA is always float32).
        hf_dtype: the Hugging Face folder's weights: `"float32"`,
            `"bfloat16"` or `"float16"`.
        base_model: the Hugging Face base model the PEFT adapters name
            (e.g. `"google/gemma-3-270m"`); needed only for `"peft"` and
            `"peft_rank"`.
        merged: the model with its adapter merged (`lora.merge_lora(model)`)
            when it is at hand already; `None` merges it here when a merged
            format is asked for.

    Returns:
        What was written, in order; `str()` of each is a line for a table.

    Raises:
        ConfigError: an unknown format, file type or dtype; a PEFT format
            without `base_model`.
        ModelError: the model has no LoRA, or a format cannot hold it (the
            message says what and why).

    Example:
    >>> import tempfile
    >>> from gemma_lora import lora
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()
    >>> _ = lora.enable_lora(model, lora.LoraConfig(rank=2))
    >>> files = export_model(model, tempfile.mkdtemp(), ["peft"], base_model="google/gemma-3-270m")
    >>> files[0].format, files[0].path.name, files[0].use
    ('peft', 'peft', 'vllm serve google/gemma-3-270m --enable-lora --lora-modules tuned=PATH --max-lora-rank 8 (PEFT ranks q_proj 4, v_proj 2)')
    """
    names = parse_formats(formats)
    check_choice("gguf_file_type", gguf_file_type, tuple(FILE_TYPES))
    check_choice("hf_dtype", hf_dtype, EXPORT_DTYPES)
    if _PEFT & set(names) and not base_model:
        raise ConfigError("base_model: a PEFT adapter names its Hugging Face base model; give it "
                          "(e.g. 'google/gemma-3-270m').")
    if not lora_layers(model):
        raise ModelError("The model has no LoRA layers: load its adapter first "
                         "(lora.load_adapter), or export the base model itself.")
    folder = Path(folder)
    gguf_folder = folder / "gguf"
    model_file = gguf_folder / f"model-{gguf_file_type}.gguf"
    if merged is None and _MERGED & set(names):
        merged = merge_lora(model)
    exported: list[Exported] = []
    for name in names:
        if name == "transformers":
            path = export_transformers_folder(merged, folder / "transformers", hf_dtype)
            exported.append(_exported(name, path, "AutoModelForCausalLM.from_pretrained(PATH); "
                                                  "vllm serve PATH"))
        elif name == "gguf" or (name == "ollama" and "gguf" not in names):
            exported.append(_exported(name, export_gguf(merged, model_file, gguf_file_type),
                                      "llama-cli -m PATH; llama-server -m PATH --jinja"))
        if name == "gguf_lora":
            base = export_gguf(model, gguf_folder / f"base-{gguf_file_type}.gguf",
                               gguf_file_type, with_lora=False)
            adapter = export_gguf_lora(model, gguf_folder / "adapter.gguf")
            exported += [_exported(name, base, "the base model the adapter applies to"),
                         _exported(name, adapter, f"llama-cli -m {base.name} --lora PATH")]
        elif name == "ollama":
            exported.append(_exported(name, write_modelfile(gguf_folder, model_file.name),
                                      "ollama create NAME -f PATH"))
        elif name == "peft":
            path = export_peft_adapter(model, folder / "peft", base_model)
            exported.append(_exported(name, path, _vllm_use(base_model, peft_ranks(path))))
        elif name == "peft_rank":
            exported.append(_peft_at_rank(model, folder, base_model))
    return exported


def _exported(format_name: str, path: Path, use: str) -> Exported:
    files = [path] if path.is_file() else [file for file in path.rglob("*") if file.is_file()]
    return Exported(format_name, path, sum(file.stat().st_size for file in files), use)


def _vllm_use(base_model: str, ranks: PeftRanks) -> str:
    modules = ", ".join(f"{name} {rank}" for name, rank in sorted(ranks.module_ranks.items()))
    if ranks.max_lora_rank is None:
        return f"PEFT ranks {modules}: above vLLM's largest --max-lora-rank; use peft_rank"
    return (f"vllm serve {base_model} --enable-lora --lora-modules tuned=PATH "
            f"--max-lora-rank {ranks.max_lora_rank} (PEFT ranks {modules})")


def _peft_at_rank(model: keras.Model, folder: Path, base_model: str) -> Exported:
    rank = max(int(layer.lora_rank) for layer in lora_layers(model))
    result = export_peft_adapter_at_rank(model, folder / f"peft_rank{rank}", base_model, rank)
    use = (f"vllm serve {base_model} --enable-lora --lora-modules tuned=PATH --max-lora-rank "
           f"{vllm_max_lora_rank(rank)} (every module rank {rank}; relative error "
           f"{result.relative_error:.1%})")
    return _exported("peft_rank", result.folder, use)


def export_run(
    run_dir: str | os.PathLike,
    formats: str | Sequence[str] = DEFAULT_FORMATS,
    gguf_file_type: str = "f16",
    hf_dtype: str = "float32",
    base_model: str | None = None,
    log: Callable[[str], None] = print,
) -> list[Exported]:
    """Export a fine-tuning run's model into `<run_dir>/export/` (`export_model` on its base + adapter).

    Everything that can be checked is checked before the model loads.

    Args:
        run_dir: a run folder of the fine-tuning notebook (it holds `adapter/`).
        formats, gguf_file_type, hf_dtype: as for `export_model`.
        base_model: the Hugging Face base model for the PEFT formats; `None`
            takes `HF_BASE_MODELS[base preset]`.
        log: where progress lines go.

    Returns:
        What was written.

    Raises:
        ConfigError: `run_dir` is not a folder, or as `export_model`.
        ModelError: the run has no adapter, or as `export_model`.

    Example::

        export_run("runs/20250101-120000/01_finetune_gemma_lora", "gguf ollama")
    """
    if not os.fspath(run_dir).strip():
        raise ConfigError("run_dir (make export RUN=...) is empty: give a run folder of the "
                          "fine-tuning notebook, e.g. runs/<time>/01_finetune_gemma_lora.")
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"run_dir (make export RUN=...) {str(run)!r} is not a folder: give a "
                          "run folder of the fine-tuning notebook, e.g. "
                          "runs/<time>/01_finetune_gemma_lora.")
    adapter = run / "adapter"
    if not adapter.is_dir():
        raise ModelError(f"run_dir {str(run)!r} has no adapter/ folder: the fine-tuning notebook "
                         "saves it there during training; run it to the end first.")
    names = parse_formats(formats)
    check_choice("gguf_file_type", gguf_file_type, tuple(FILE_TYPES))
    check_choice("hf_dtype", hf_dtype, EXPORT_DTYPES)
    preset = read_adapter_config(adapter)["base_preset"]
    base_model = base_model or HF_BASE_MODELS.get(preset)
    if _PEFT & set(names) and not base_model:
        raise ConfigError(f"base_model: the run's base preset {preset!r} has no known Hugging Face "
                          "name; give the one the PEFT adapter is for (BASE_MODEL=... or "
                          "--base-model).")
    log(f"Loading {preset} (float32) and the adapter {adapter}")
    model = load_causal_lm(preset, dtype="float32")
    load_adapter(model, adapter)
    log(str(peft_ranks(model)))
    log(f"Exporting {', '.join(names)} into {run / EXPORT_FOLDER}")
    return export_model(model, run / EXPORT_FOLDER, names, gguf_file_type, hf_dtype, base_model)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (`make export`); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True,
                        help="the run folder, which holds adapter/ (make export RUN=...)")
    parser.add_argument("--formats", default=" ".join(DEFAULT_FORMATS),
                        help=f"some of: {' '.join(FORMATS)}")
    parser.add_argument("--gguf-file-type", default="f16", help=", ".join(FILE_TYPES))
    parser.add_argument("--hf-dtype", default="float32", help=", ".join(EXPORT_DTYPES))
    parser.add_argument("--base-model", default=None,
                        help="the Hugging Face base model the PEFT adapter names")
    args = parser.parse_args(argv)
    try:
        exported = export_run(args.run_dir, args.formats, args.gguf_file_type, args.hf_dtype,
                              args.base_model)
    except GemmaLoraError as error:
        print(f"export: {error}", file=sys.stderr)
        return 2
    print("\n".join(str(item) for item in exported))
    return 0


if __name__ == "__main__":
    sys.exit(main())
