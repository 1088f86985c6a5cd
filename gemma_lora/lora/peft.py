"""Hugging Face PEFT interoperability: export and import Gemma 3 LoRA adapters.

`export_peft_adapter` writes a Keras LoRA adapter as a PEFT adapter folder
(`adapter_config.json` + `adapter_model.safetensors`, PEFT's key names for
`Gemma3ForCausalLM`) that `peft.PeftModel.from_pretrained` loads onto the
matching transformers model. `import_peft_adapter` does the reverse: it puts
a PEFT LoRA adapter for a Gemma 3 model into a Keras `Gemma3CausalLM` as Keras
LoRA weights (trainable, savable with `lora.save_adapter`). Neither needs
PyTorch, transformers or PEFT: both read and write the files with numpy.

Layer names, Keras <-> Hugging Face (block `i` <-> `model.layers.{i}`):

| Keras (`decoder_block_{i}/...`) | kernel       | PEFT module             |
|---------------------------------|--------------|-------------------------|
| `attention/query`               | `(n, d, h)`  | `self_attn.q_proj`      |
| `attention/key`, `value`        | `(k, d, h)`  | `self_attn.k_proj/v_proj` |
| `attention/attention_output`    | `(n, h, d)`  | `self_attn.o_proj`      |
| `ffw_gating`, `ffw_gating_2`    | `(d, f)`     | `mlp.gate_proj/up_proj` |
| `ffw_linear`                    | `(f, d)`     | `mlp.down_proj`         |

(`n` query heads, `k` key/value heads, `h` head size, `d` model width, `f`
MLP width), with the same weight layout as KerasHub's own
`convert_gemma3.py` / `export/gemma3.py`: `q_proj.weight[n_i * h + j, :] =
query.kernel[n_i, :, j]`, and `weight = kernel.reshape(-1, last).T` for the
other four.

**How Keras factors LoRA.** Keras' `EinsumDense.enable_lora(r)` gives a
kernel of shape `(..., last)` the weights `A` of shape `(..., r)` and `B` of
shape `(r, last)`, and adds `alpha / r * A @ B` (a matmul broadcast over the
leading axes). Flattened, that is exactly a rank-`r` factorization of the
update reshaped to `(prod(leading axes), last)`. For `query` (`(n, d, h)`)
each head has its own `A[n_i]` but all heads share `B`, so the update of
`q_proj` has rank up to `n * r`.

**Export** is exact, with no approximation: a module whose Keras kernel has
one leading head axis of size `n` (`q_proj`, and `k_proj`/`v_proj` with
`k` heads) becomes a PEFT module of rank `n * r`: `lora_A` stacks the heads'
`A[n_i]^T` (`[n*r, d]`), `lora_B` is block-diagonal with `B^T` in every
head's block (`[n*h, n*r]`), and `lora_alpha = alpha * n`, so that PEFT's
scale `lora_alpha / rank` equals Keras' `alpha / r`. These ranks go into
PEFT's `rank_pattern`/`alpha_pattern`. The other modules keep rank `r`:
`lora_A = A.reshape(-1, r).T`, `lora_B = B.T`.

**Import** is exact too (to float32 rounding): for each module the PEFT
update `scale * lora_B @ lora_A`, laid out as the Keras kernel and flattened
to `(prod(leading axes), last)`, is factored by SVD (in float64, from the
factors, without forming the update: `keras_lora_factors`), keeping every
singular value above `1e-6` of the largest. A general PEFT
`q_proj` adapter of rank `r` needs Keras rank up to `min(n * r, h)` (the
heads' updates share Keras' one `B`); an adapter exported from Keras comes
back at its original rank. Keras LoRA has one rank and alpha for the whole
model, so every layer gets the largest rank found; a layer that needs fewer
keeps Keras' random `A` in the extra columns and zeros in `B`'s extra rows
(the update is unchanged, and training can go on). `alpha` is chosen so that
Keras' scale `alpha / rank` is the adapter's PEFT scale.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import keras
import numpy as np
from safetensors.numpy import save_file

from gemma_lora.errors import ModelError
from gemma_lora.io_utils import atomic_directory
from gemma_lora.io_utils import write_json_atomic
from gemma_lora.lora import layers
from gemma_lora.lora.config import LoraConfig
from gemma_lora.lora.peft_layout import KERAS_TO_PEFT
from gemma_lora.lora.peft_layout import PEFT_TO_KERAS
from gemma_lora.lora.peft_layout import block_layers
from gemma_lora.lora.peft_layout import gemma3_text_backbone
from gemma_lora.lora.peft_layout import hf_shape
from gemma_lora.lora.peft_layout import keras_lora_factors
from gemma_lora.lora.peft_layout import kernel_shape
from gemma_lora.lora.peft_layout import peft_factors


PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
_KEY_PREFIX = "base_model.model."
# Text-only Gemma3ForCausalLM: `model.layers.N`; the text part of
# Gemma3ForConditionalGeneration: `model.language_model.layers.N` (transformers
# 4.52 and newer) or `language_model.model.layers.N` (older).
_KEY_PATTERN = re.compile(
    r"^(?:model\.|language_model\.)*layers\.(\d+)\.(self_attn|mlp)\."
    r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.lora_([AB])\.weight$"
)
# PEFT options that change what the adapter computes and that a Keras LoRA
# layer cannot hold; the value each must have.
_UNSUPPORTED_OPTIONS = {
    "use_dora": (False, None),
    "bias": ("none", None),
    "lora_bias": (False, None),
    "modules_to_save": (None, []),
    "trainable_token_indices": (None, [], {}),
    "layer_replication": (None, []),
    "target_parameters": (None, []),
    "fan_in_fan_out": (False, None),
    "use_qalora": (False, None),
    "use_bdlora": (False, None),
}


# === Export ===


def export_peft_adapter(
    model: keras.Model, folder: str | os.PathLike, base_model_name_or_path: str
) -> Path:
    """Write the model's LoRA adapter as a Hugging Face PEFT adapter folder.

    The folder holds `adapter_config.json` (a PEFT `LoraConfig`) and
    `adapter_model.safetensors` with PEFT's key names for `Gemma3ForCausalLM`
    (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`, ...).
    `peft.PeftModel.from_pretrained(hf_model, folder)` then computes the
    same outputs as the Keras model, where `hf_model` is the transformers
    copy of the Keras base model (e.g. `model.export_to_transformers(...)`
    before LoRA was enabled, or the Hugging Face checkpoint the Keras preset
    was converted from). The export is exact: per-head query/key/value
    factors become block-diagonal PEFT factors of rank `heads * rank` (see
    the module docstring), recorded in `rank_pattern`/`alpha_pattern`.
    An existing folder is replaced only once the new one is complete.

    Args:
        model: a text-only `Gemma3CausalLM` (or its backbone) with LoRA
            enabled through `lora.enable_lora`.
        folder: the PEFT adapter folder to write.
        base_model_name_or_path: the Hugging Face model the adapter belongs
            to (`"google/gemma-3-270m"` or a local folder); PEFT stores it in
            `adapter_config.json` and loads it in `AutoPeftModel`.

    Returns:
        The adapter folder.

    Raises:
        ModelError: if the model is not a text-only Gemma 3 or has no LoRA,
            or LoRA is on only some of the blocks of a layer kind.

    Example::

        lora.enable_lora(model, lora.LoraConfig(rank=8, alpha=16))
        ...  # train
        export_peft_adapter(model, "runs/demo/peft_adapter", "google/gemma-3-270m")
        # then, with PyTorch:
        hf = transformers.AutoModelForCausalLM.from_pretrained("google/gemma-3-270m")
        tuned = peft.PeftModel.from_pretrained(hf, "runs/demo/peft_adapter")
    """
    modules = peft_module_factors(model)
    weights = {f"{key}.lora_{which}.weight": factor for key, (lora_a, lora_b, _, _)
               in modules.items() for which, factor in (("A", lora_a), ("B", lora_b))}
    module_ranks = {key.rsplit(".", 1)[1]: (rank, alpha)
                    for key, (_, _, rank, alpha) in modules.items()}
    adapted = layers.lora_layers(model)[0]
    config = peft_adapter_config(model, base_model_name_or_path, module_ranks,
                                 int(adapted.lora_rank), float(adapted.lora_alpha))
    folder = Path(folder)
    with atomic_directory(folder) as tmp:
        save_file(weights, str(tmp / PEFT_WEIGHTS), metadata={"format": "pt"})
        write_json_atomic(tmp / PEFT_CONFIG, config)
    return folder


def peft_module_factors(model: keras.Model) -> dict[str, tuple[np.ndarray, np.ndarray, int, float]]:
    """PEFT's `lora_A`, `lora_B`, rank and alpha of every adapted module, exactly.

    Keyed by PEFT's module name (`base_model.model.model.layers.0.self_attn.q_proj`);
    `export_peft_adapter` writes these factors (see the module docstring).

    Raises:
        ModelError: as `export_peft_adapter` does.
    """
    backbone = gemma3_text_backbone(model, "PEFT export")
    modules: dict[str, tuple[np.ndarray, np.ndarray, int, float]] = {}
    ranks: dict[str, set[tuple[int, float]]] = {}
    adapted_blocks: dict[str, set[int]] = {}
    for index in range(backbone.num_layers):
        for keras_name, layer in block_layers(backbone, index).items():
            if not layer.lora_enabled:
                continue
            group, peft_name, layout = KERAS_TO_PEFT[keras_name]
            lora_a, lora_b, rank, alpha = peft_factors(layer, layout)
            modules[f"{_KEY_PREFIX}model.layers.{index}.{group}.{peft_name}"] = (
                lora_a, lora_b, rank, alpha)
            ranks.setdefault(peft_name, set()).add((rank, alpha))
            adapted_blocks.setdefault(peft_name, set()).add(index)
    if not modules:
        raise ModelError("The model has no LoRA layers; call lora.enable_lora(model, rank) first.")
    for peft_name, blocks in adapted_blocks.items():
        if len(blocks) != backbone.num_layers or len(ranks[peft_name]) != 1:
            raise ModelError(
                f"LoRA on {PEFT_TO_KERAS[peft_name]!r} must cover all {backbone.num_layers} "
                f"blocks with one rank and alpha to be a PEFT adapter; it covers blocks "
                f"{sorted(blocks)} with (rank, alpha) {sorted(ranks[peft_name])}."
            )
    return modules


def peft_adapter_config(model: keras.Model, base_model_name_or_path: str,
                        module_ranks: dict[str, tuple[int, float]], rank: int,
                        alpha: float) -> dict[str, Any]:
    """`adapter_config.json` for the model's LoRA (its dropout) at PEFT's `r`, `lora_alpha`.

    `module_ranks` (`{"q_proj": (rank, alpha)}`) that differ from `rank`/`alpha`
    go into `rank_pattern`/`alpha_pattern`. Raises `ModelError` for an empty
    `base_model_name_or_path`.
    """
    if not isinstance(base_model_name_or_path, str) or not base_model_name_or_path.strip():
        raise ModelError(
            "base_model_name_or_path must name the Hugging Face base model, e.g. "
            f"'google/gemma-3-270m'; got {base_model_name_or_path!r}."
        )
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "revision": None,
        "r": rank,
        "lora_alpha": alpha,
        "rank_pattern": {name: r for name, (r, _) in sorted(module_ranks.items()) if r != rank},
        "alpha_pattern": {name: a for name, (_, a) in sorted(module_ranks.items()) if a != alpha},
        "target_modules": sorted(module_ranks),
        "lora_dropout": float(getattr(layers.lora_layers(model)[0], "lora_dropout", 0.0)),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
    }


# === Import ===


def import_peft_adapter(model: keras.Model, folder: str | os.PathLike) -> layers.ParameterSummary:
    """Load a Hugging Face PEFT LoRA adapter for Gemma 3 into a Keras model.

    Enables Keras LoRA on the layers the adapter targets and sets its
    weights so that the Keras model computes what `PeftModel` computes on
    the matching transformers model. The result is an ordinary Keras LoRA
    adapter: train it further, `lora.save_adapter` it, or export it back.
    Because Keras shares one `B` across attention heads, a PEFT `q_proj`
    adapter of rank `r` needs a Keras rank up to `min(heads * r, head_dim)`;
    the Keras rank is the smallest one that holds every module exactly (see
    the module docstring), and `alpha` keeps the adapter's scale.

    Args:
        model: a Gemma 3 `CausalLM` (or backbone) without LoRA, of the same
            architecture as the adapter's base model.
        folder: a PEFT adapter folder (`adapter_config.json` and
            `adapter_model.safetensors`), e.g. from `PeftModel.save_pretrained`.

    Returns:
        The model's `lora.ParameterSummary` after the import.

    Raises:
        ModelError: if the folder is not a PEFT LoRA adapter, uses a PEFT
            option Keras LoRA cannot hold (DoRA, biases, `modules_to_save`,
            ...), targets modules other than Gemma 3's attention and MLP
            projections, was made for another base model (the message names
            both shapes), or the model already has LoRA.

    Example::

        model = models.load_causal_lm("gemma3_270m")
        import_peft_adapter(model, "my_peft_adapter")
        model.generate("Water boils at", max_length=16)
    """
    folder = Path(folder)
    config = _read_peft_config(folder)
    backbone = gemma3_text_backbone(model, "PEFT import", allow_vision=True)
    if layers.lora_layers(model):
        raise ModelError(
            f"The model already has LoRA; import the PEFT adapter {str(folder)!r} into a "
            "model without LoRA (load the base model again)."
        )
    modules = peft_modules(read_safetensors(folder / PEFT_WEIGHTS), folder)
    default_scale = _peft_scale(config, config["r"], config["lora_alpha"])
    factors: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
    for (index, peft_name), (module_name, lora_a, lora_b) in sorted(modules.items()):
        keras_name = PEFT_TO_KERAS[peft_name]
        layer = _checked_layer(backbone, index, keras_name, peft_name, lora_a, lora_b, config,
                               folder)
        scale = _module_scale(config, module_name, lora_a.shape[0])
        factors[index, keras_name] = keras_lora_factors(
            lora_a, scale / default_scale * lora_b.astype(np.float64), kernel_shape(layer),
            KERAS_TO_PEFT[keras_name][2])
    _check_coverage(modules, backbone.num_layers, config, folder)
    rank = max([a.shape[1] for a, _ in factors.values()] + [1])
    targets = sorted({keras_name for _, keras_name in factors},
                     key=list(KERAS_TO_PEFT).index)
    layers.enable_lora(model, LoraConfig(rank=rank, alpha=rank * default_scale,
                                         target_layers=tuple(targets)))
    weights = layers.lora_weights(model)
    for index in range(backbone.num_layers):
        for keras_name, layer in block_layers(backbone, index).items():
            if not layer.lora_enabled:
                continue
            a = weights[layer.lora_kernel_a.path]
            b = np.zeros_like(weights[layer.lora_kernel_b.path])
            if (index, keras_name) in factors:
                a_flat, b_part = factors[index, keras_name]
                kept = a_flat.shape[1]
                a = a.copy()
                a[..., :kept] = a_flat.reshape(a.shape[:-1] + (kept,))
                b[:kept] = b_part
            weights[layer.lora_kernel_a.path] = a.astype(np.float32)
            weights[layer.lora_kernel_b.path] = b.astype(np.float32)
    layers.assign_lora_weights(model, weights, source=str(folder))
    return layers.parameter_summary(model)


def _read_peft_config(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise ModelError(f"PEFT adapter folder {str(folder)!r} does not exist.")
    config_file = folder / PEFT_CONFIG
    if not config_file.is_file():
        raise ModelError(
            f"{str(folder)!r} is not a PEFT adapter folder: {PEFT_CONFIG} is missing."
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{config_file}: not valid JSON ({error}).") from error
    if not isinstance(config, dict):
        raise ModelError(f"{config_file}: expected a JSON object, got {type(config).__name__}.")
    if config.get("peft_type") != "LORA":
        raise ModelError(
            f"{config_file}: peft_type is {config.get('peft_type')!r}; only LoRA adapters "
            "(peft_type 'LORA') can be imported."
        )
    for field, allowed in _UNSUPPORTED_OPTIONS.items():
        if config.get(field, allowed[0]) not in allowed:
            raise ModelError(
                f"{config_file}: {field} = {config[field]!r} is not supported: Keras LoRA "
                f"layers hold only the plain update scale * B @ A (expected {allowed[0]!r})."
            )
    for field in ("r", "lora_alpha"):
        value = config.get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ModelError(f"{config_file}: {field} must be a positive number; got {value!r}.")
    if not (folder / PEFT_WEIGHTS).is_file():
        other = [p.name for p in folder.glob("adapter_model.*")]
        hint = (f" It has {other}: save it again with "
                "`save_pretrained(..., safe_serialization=True)`.") if other else ""
        raise ModelError(f"PEFT adapter {str(folder)!r} has no {PEFT_WEIGHTS}.{hint}")
    return config


_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read a safetensors file as float32 arrays, bfloat16 included.

    `safetensors.numpy` cannot read bfloat16 (numpy has no such type), and
    PEFT saves adapters of bfloat16 models in bfloat16.
    """
    data = path.read_bytes()
    try:
        (header_size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + header_size])
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{path}: not a safetensors file ({error}).") from error
    start = 8 + header_size
    arrays = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[start + begin:start + end]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        elif info["dtype"] in _SAFETENSORS_DTYPES:
            array = np.frombuffer(raw, dtype=np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<"))
        else:
            raise ModelError(f"{path}: tensor {name!r} has dtype {info['dtype']}; expected floats.")
        arrays[name] = array.astype(np.float32).reshape(info["shape"])
    return arrays


def peft_modules(
    weights: dict[str, np.ndarray], folder: Path
) -> dict[tuple[int, str], tuple[str, np.ndarray, np.ndarray]]:
    """Group `lora_A`/`lora_B` by (block index, PEFT module name).

    Returns `{(index, "q_proj"): (module path, lora_A, lora_B)}`, the module
    path as PEFT matches `rank_pattern`/`alpha_pattern` against it
    (`model.layers.0.self_attn.q_proj`).
    """
    parts: dict[tuple[int, str], dict[str, Any]] = {}
    for key, array in weights.items():
        name = key[len(_KEY_PREFIX):] if key.startswith(_KEY_PREFIX) else key
        match = _KEY_PATTERN.match(name)
        if match is None:
            raise ModelError(
                f"PEFT adapter {str(folder)!r} holds {key!r}, which is not a LoRA weight of a "
                "Gemma 3 attention or MLP projection (expected keys like "
                f"'{_KEY_PREFIX}model.layers.0.self_attn.q_proj.lora_A.weight'): it was made "
                "for another kind of model."
            )
        index, _, peft_name, which = match.groups()
        pair = parts.setdefault((int(index), peft_name), {})
        pair[which] = array
        pair["module"] = name[:-len(f".lora_{which}.weight")]
    if not parts:
        raise ModelError(f"PEFT adapter {str(folder)!r} holds no LoRA weights.")
    modules = {}
    for (index, peft_name), pair in parts.items():
        if not {"A", "B"} <= set(pair):
            missing = ({"A", "B"} - set(pair)).pop()
            raise ModelError(
                f"PEFT adapter {str(folder)!r}: layers.{index}.{peft_name} has no lora_{missing}."
            )
        lora_a, lora_b = pair["A"], pair["B"]
        if lora_a.ndim != 2 or lora_b.ndim != 2 or lora_a.shape[0] != lora_b.shape[1]:
            raise ModelError(
                f"PEFT adapter {str(folder)!r}: layers.{index}.{peft_name} has lora_A "
                f"{lora_a.shape} and lora_B {lora_b.shape}, which do not make a LoRA pair."
            )
        modules[index, peft_name] = (pair["module"], lora_a, lora_b)
    return modules


def _checked_layer(backbone, index, keras_name, peft_name, lora_a, lora_b, config, folder):
    """The Keras layer for a PEFT module, after checking that shapes agree."""
    base = config.get("base_model_name_or_path")
    if index >= backbone.num_layers:
        raise ModelError(
            f"PEFT adapter {str(folder)!r} (base model {base!r}) has weights for "
            f"layers.{index}, but this model has {backbone.num_layers} blocks: it was made "
            "for another base model."
        )
    layer = block_layers(backbone, index)[keras_name]
    shape = kernel_shape(layer)
    out_dim, in_dim = hf_shape(shape, KERAS_TO_PEFT[keras_name][2])
    adapter_out, adapter_in = lora_b.shape[0], lora_a.shape[1]
    if (adapter_out, adapter_in) != (out_dim, in_dim):
        raise ModelError(
            f"PEFT adapter {str(folder)!r} was made for another base model ({base!r}): its "
            f"layers.{index}.{peft_name} maps {adapter_in} -> {adapter_out} features "
            f"(lora_A {tuple(lora_a.shape)}, lora_B {tuple(lora_b.shape)}), but this "
            f"model's {peft_name} maps {in_dim} -> {out_dim} (Keras {keras_name} kernel "
            f"{shape}, Hugging Face weight [{out_dim}, {in_dim}])."
        )
    return layer


def _check_coverage(modules, num_layers, config, folder) -> None:
    """An adapter that targets module names in every block must have them all.

    Catches an adapter for a Gemma 3 with fewer blocks but the same widths.
    """
    if (config.get("layers_to_transform") is not None or config.get("exclude_modules")
            or isinstance(config.get("target_modules"), str)):
        return  # The adapter may target some blocks only, on purpose.
    blocks: dict[str, set[int]] = {}
    for index, peft_name in modules:
        blocks.setdefault(peft_name, set()).add(index)
    for peft_name, found in sorted(blocks.items()):
        if found != set(range(num_layers)):
            raise ModelError(
                f"PEFT adapter {str(folder)!r} (base model "
                f"{config.get('base_model_name_or_path')!r}) has {peft_name} weights for "
                f"{len(found)} blocks ({min(found)}..{max(found)}), but this model has "
                f"{num_layers} blocks: it was made for another base model."
            )


def _pattern_value(pattern: dict[str, Any], module_name: str, default: Any) -> Any:
    """PEFT's `rank_pattern`/`alpha_pattern` lookup (`peft.utils.get_pattern_key`)."""
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default


def _peft_scale(config: dict[str, Any], rank: int, alpha: float) -> float:
    if config.get("use_rslora", False):
        return float(alpha) / float(np.sqrt(rank))
    return float(alpha) / float(rank)


def _module_scale(config: dict[str, Any], module_name: str, rank: int) -> float:
    alpha = _pattern_value(config.get("alpha_pattern"), module_name, config["lora_alpha"])
    return _peft_scale(config, rank, alpha)
