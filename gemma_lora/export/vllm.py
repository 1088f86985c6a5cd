"""Serving a PEFT adapter with vLLM: the `--max-lora-rank` it needs, and a rank-r export.

What vLLM does with a PEFT adapter (vllm-project/vllm, `vllm/config/lora.py`,
`vllm/lora/peft_helper.py`, the LoRA layers' `set_lora`):

- `--max-lora-rank` takes one of `VLLM_MAX_LORA_RANKS` (`MaxLoRARanks =
  Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]`, default 16); vLLM sizes
  its LoRA buffers to it.
- It reads only `r` and `lora_alpha` from `adapter_config.json` (no
  `rank_pattern`/`alpha_pattern`): one scale `lora_alpha / r` for every
  module, and `r <= max_lora_rank` is checked at load. Each module's rank is
  its tensors' shape, and a module of rank above `max_lora_rank` does not fit
  the buffers.

`lora.export_peft_adapter` is exact: a Keras rank-`r` `query` adapter (one `A`
per head, `B` shared) becomes a PEFT `q_proj` of rank `heads * r`, and
`k_proj`/`v_proj` of rank `kv_heads * r`, with `alpha` times the heads, so
every module's scale is `alpha / r`, the one vLLM applies. vLLM then needs
`--max-lora-rank` of at least `heads * r`: `peft_ranks` says which.

`export_peft_adapter_at_rank` writes instead an adapter whose every module
has rank exactly `rank` (default: the Keras rank), scale 1 (`lora_alpha = r`):
for each module the exact update `scale * lora_B @ lora_A` is factored by SVD
(in float64, from the factors: QR of both, then the SVD of the small `R x R`
core, never the `out x in` update) and its top `rank` singular triplets are
kept. That is exact when the update's rank is at most `rank`, else the best
rank-`rank` approximation in Frobenius norm (Eckart-Young). The measured
relative Frobenius error `||dW - dW_r|| / ||dW||`, per module and overall,
is returned and written to `export_report.json` in the folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import keras
import numpy as np
from safetensors.numpy import save_file

from gemma_lora.errors import ModelError
from gemma_lora.io_utils import atomic_directory
from gemma_lora.io_utils import read_text
from gemma_lora.io_utils import write_json_atomic
from gemma_lora.lora import lora_layers
from gemma_lora.lora.peft import PEFT_CONFIG
from gemma_lora.lora.peft import PEFT_WEIGHTS
from gemma_lora.lora.peft import peft_adapter_config
from gemma_lora.lora.peft import peft_module_factors
from gemma_lora.lora.peft import peft_modules
from gemma_lora.lora.peft import read_safetensors
from gemma_lora.lora.peft_layout import RANK_TOLERANCE
from gemma_lora.validation import check_int

VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM's `--max-lora-rank` accepts (`vllm/config/lora.py`, `MaxLoRARanks`)."""

EXPORT_REPORT = "export_report.json"
"""The file `export_peft_adapter_at_rank` writes its truncation errors to."""


@dataclasses.dataclass(frozen=True)
class PeftRanks:
    """The ranks of a PEFT adapter's modules, and the `--max-lora-rank` vLLM needs.

    Args:
        module_ranks: each PEFT module kind's rank (`{"q_proj": 8}`), the
            largest over the blocks.
        config_rank: `adapter_config.json`'s `r`.
        max_rank: the largest of these ranks.
        max_lora_rank: the smallest of `VLLM_MAX_LORA_RANKS` that is at least
            `max_rank`; `None` when none is (vLLM cannot serve the adapter).
    """

    module_ranks: dict[str, int]
    config_rank: int
    max_rank: int
    max_lora_rank: int | None

    def __str__(self) -> str:
        modules = ", ".join(f"{name} {rank}" for name, rank in sorted(self.module_ranks.items()))
        if self.max_lora_rank is None:
            return (f"PEFT ranks: {modules} (r={self.config_rank}); above vLLM's largest "
                    f"--max-lora-rank {VLLM_MAX_LORA_RANKS[-1]}")
        return f"PEFT ranks: {modules} (r={self.config_rank}); vLLM: --max-lora-rank {self.max_lora_rank}"


def vllm_max_lora_rank(rank: int) -> int | None:
    """The smallest `--max-lora-rank` vLLM accepts that holds `rank`, or None if none does.

    Example:
    >>> vllm_max_lora_rank(2), vllm_max_lora_rank(32), vllm_max_lora_rank(300), vllm_max_lora_rank(600)
    (8, 32, 320, None)
    """
    check_int("rank", rank, minimum=1)
    return next((allowed for allowed in VLLM_MAX_LORA_RANKS if allowed >= rank), None)


def peft_ranks(source: keras.Model | str | os.PathLike) -> PeftRanks:
    """The module ranks of a PEFT adapter and the `--max-lora-rank` vLLM needs for it.

    Args:
        source: a Gemma 3 model with LoRA (the ranks `lora.export_peft_adapter`
            would write) or a PEFT adapter folder.

    Returns:
        The ranks; `str()` of it is a one-line summary.

    Raises:
        ModelError: as `lora.export_peft_adapter` for a model; for a folder,
            when it is not a PEFT adapter.

    Example:
    >>> from gemma_lora import lora
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()  # 2 query heads, 1 key/value head
    >>> _ = lora.enable_lora(model, lora.LoraConfig(rank=4, target_layers=("query", "value")))
    >>> print(peft_ranks(model))
    PEFT ranks: q_proj 8, v_proj 4 (r=4); vLLM: --max-lora-rank 8
    """
    if isinstance(source, keras.Model):
        modules = {key: lora_a.shape[0] for key, (lora_a, _, _, _)
                   in peft_module_factors(source).items()}
        config_rank = int(lora_layers(source)[0].lora_rank)
    else:
        folder = Path(source)
        config_file = folder / PEFT_CONFIG
        if not config_file.is_file() or not (folder / PEFT_WEIGHTS).is_file():
            raise ModelError(f"{str(folder)!r} is not a PEFT adapter folder: expected "
                             f"{PEFT_CONFIG} and {PEFT_WEIGHTS} in it.")
        try:
            config_rank = int(json.loads(read_text(config_file))["r"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ModelError(f"{config_file}: expected a JSON object with an integer 'r' "
                             f"({type(error).__name__}: {error}).") from None
        modules = {name: lora_a.shape[0] for name, lora_a, _ in
                   peft_modules(read_safetensors(folder / PEFT_WEIGHTS), folder).values()}
    module_ranks: dict[str, int] = {}
    for name, rank in modules.items():
        kind = name.rsplit(".", 1)[1]
        module_ranks[kind] = max(module_ranks.get(kind, 0), int(rank))
    max_rank = max([config_rank, *module_ranks.values()])
    return PeftRanks(module_ranks, config_rank, max_rank, vllm_max_lora_rank(max_rank))


@dataclasses.dataclass(frozen=True)
class RankedExport:
    """What `export_peft_adapter_at_rank` wrote, and how far it is from the exact adapter.

    Args:
        folder: the adapter folder.
        rank: every module's rank (PEFT's `r`, with `lora_alpha = r`).
        relative_error: `||dW - dW_r||_F / ||dW||_F` over all modules together.
        module_errors: the same per module (PEFT module name).
        update_ranks: each module's exact update rank (singular values above
            `1e-6` of the largest); the module is exact when it is at most `rank`.
    """

    folder: Path
    rank: int
    relative_error: float
    module_errors: dict[str, float]
    update_ranks: dict[str, int]


def export_peft_adapter_at_rank(
    model: keras.Model,
    folder: str | os.PathLike,
    base_model_name_or_path: str,
    rank: int | None = None,
) -> RankedExport:
    """Write the model's LoRA as a PEFT adapter whose every module has rank `rank`.

    Each module's update is re-factored by SVD and cut to its best rank-`rank`
    approximation (exact when its rank is at most `rank`; see the module
    docstring). The adapter has `r = lora_alpha = rank`, no rank or alpha
    patterns, so vLLM serves it with `--max-lora-rank vllm_max_lora_rank(rank)`
    and applies the right scale; `peft.PeftModel.from_pretrained` loads it.
    The errors are also written to `export_report.json`. An existing folder
    is replaced only once the new one is complete.

    Args:
        model: a text-only Gemma 3 with LoRA (as for `lora.export_peft_adapter`).
        folder: the adapter folder to write.
        base_model_name_or_path: the Hugging Face base model, for `adapter_config.json`.
        rank: the rank of every module; `None` takes the model's Keras rank
            (the largest, with per-layer ranks).

    Returns:
        The folder, rank and measured errors.

    Raises:
        ConfigError: `rank` is not an integer >= 1.
        ModelError: as `lora.export_peft_adapter`.

    Example:
    >>> import tempfile
    >>> from gemma_lora import lora
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()
    >>> _ = lora.enable_lora(model, lora.LoraConfig(rank=2, target_layers=("query", "value")))
    >>> folder = Path(tempfile.mkdtemp()) / "adapter"
    >>> result = export_peft_adapter_at_rank(model, folder, "google/gemma-3-270m")
    >>> result.rank, result.relative_error  # a fresh adapter's update is zero: exact
    (2, 0.0)
    >>> sorted(path.name for path in folder.iterdir())
    ['adapter_config.json', 'adapter_model.safetensors', 'export_report.json']
    """
    modules = peft_module_factors(model)
    if rank is None:
        rank = max(int(layer.lora_rank) for layer in lora_layers(model))
    check_int("rank", rank, minimum=1)
    weights: dict[str, np.ndarray] = {}
    errors: dict[str, float] = {}
    update_ranks: dict[str, int] = {}
    dropped_total = energy_total = 0.0
    for key, (lora_a, lora_b, peft_rank, alpha) in modules.items():
        new_a, new_b, singular_values = truncated_factors(lora_a, lora_b, alpha / peft_rank, rank)
        weights[f"{key}.lora_A.weight"] = new_a.astype(np.float32)
        weights[f"{key}.lora_B.weight"] = new_b.astype(np.float32)
        energy = float(np.sum(singular_values ** 2))
        dropped = float(np.sum(singular_values[rank:] ** 2))
        errors[key] = float(np.sqrt(dropped / energy)) if energy > 0 else 0.0
        largest = singular_values[0] if singular_values.size else 0.0
        update_ranks[key] = int(np.sum(singular_values > largest * RANK_TOLERANCE)) if largest else 0
        dropped_total += dropped
        energy_total += energy
    overall = float(np.sqrt(dropped_total / energy_total)) if energy_total > 0 else 0.0
    kinds = {key.rsplit(".", 1)[1] for key in modules}
    config = peft_adapter_config(model, base_model_name_or_path,
                                 {kind: (rank, rank) for kind in kinds}, rank, rank)
    report = {"rank": rank, "relative_error": overall,
              "modules": {key: {"update_rank": update_ranks[key], "relative_error": errors[key]}
                          for key in modules}}
    folder = Path(folder)
    with atomic_directory(folder) as tmp:
        save_file(weights, str(tmp / PEFT_WEIGHTS), metadata={"format": "pt"})
        write_json_atomic(tmp / PEFT_CONFIG, config)
        write_json_atomic(tmp / EXPORT_REPORT, report)
    return RankedExport(folder, rank, overall, errors, update_ranks)


def truncated_factors(
    lora_a: np.ndarray, lora_b: np.ndarray, scale: float, rank: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best rank-`rank` factors of `scale * lora_b @ lora_a`, from the factors.

    With `lora_a.T = Qa Ra` and `lora_b = Qb Rb`, the update is
    `Qb (Rb Ra^T) Qa^T`; the SVD of the small core gives the update's. The
    top `rank` triplets are split evenly (`sqrt` of each singular value on
    either side); columns beyond the update's size are zeros.

    Args:
        lora_a: PEFT `lora_A` `[R, in]`.
        lora_b: PEFT `lora_B` `[out, R]`.
        scale: PEFT's scale of the module.
        rank: the rank to keep.

    Returns:
        `lora_A` `[rank, in]` and `lora_B` `[out, rank]` (float64, scale 1),
        and all singular values of the update, largest first.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(3, 6)), rng.normal(size=(5, 3))
    >>> new_a, new_b, s = truncated_factors(a, b, 0.5, rank=3)  # rank 3 holds it exactly
    >>> bool(np.allclose(new_b @ new_a, 0.5 * b @ a)), s.shape
    (True, (3,))
    """
    q_a, r_a = np.linalg.qr(lora_a.astype(np.float64).T)
    q_b, r_b = np.linalg.qr(scale * lora_b.astype(np.float64))
    u, singular_values, vt = np.linalg.svd(r_b @ r_a.T)
    kept = min(rank, singular_values.size)
    root = np.sqrt(singular_values[:kept])
    new_a = np.zeros((rank, lora_a.shape[1]))
    new_b = np.zeros((lora_b.shape[0], rank))
    new_a[:kept] = (root[:, None] * vt[:kept]) @ q_a.T
    new_b[:, :kept] = (q_b @ u[:, :kept]) * root
    return new_a, new_b, singular_values
