"""`LoraConfig`: what a LoRA adapter is, in PEFT's terms, saved beside its weights.

One `LoraConfig` says which layers get LoRA, of which rank, with which
scale. `enable_lora(model, lora_config)` applies it, `save_adapter` writes it
into the adapter's `adapter_config.json`, and `LoraConfig.from_adapter(path)`
reads it back, so loading an adapter needs nothing but its folder.

**One meaning of alpha.** `alpha` is the user's alpha, PEFT's `lora_alpha`:
each layer's update `A @ B` is scaled by `alpha / rank`, or by
`alpha / sqrt(rank)` with `use_rslora`. Keras' own `layer.enable_lora(rank,
lora_alpha=...)` takes a different number, `scale * rank` (it always divides
by the rank); that per-layer value is recorded in `adapter_config.json` as
`keras_lora_alpha`, never as "alpha".

`adapter_config.json`, format 1 (written by `save_adapter`)::

    {"format_version": 1,
     "rank": 8, "alpha": 16.0, "target_layers": ["query", "value"],
     "use_rslora": false, "dropout": 0.0, "rank_pattern": null,
     "base_preset": "gemma3_270m", "source": "...", "dtype": "float32",
     "quantize": null, "template": "alpaca",
     "architecture": {"class": "Gemma3Backbone", "hidden_dim": 640, ...},
     "layers": {"decoder_block_0/attention/query": {"rank": 8, "keras_lora_alpha": 16.0}, ...},
     "gemma_lora_version": "...", "keras_version": "...", "keras_hub_version": "..."}

Adapters written before this format (no `format_version`; "alpha" there is
Keras' `lora_alpha` and `use_rslora` was not recorded) are read by
`read_adapter_config` as format 1 with `use_rslora` inferred from the
per-layer values (False unless layers of different ranks show it), the
per-layer ranks as `rank_pattern`, and no source, dtype, quantize or
template.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError
from gemma_lora.errors import GemmaLoraError
from gemma_lora.errors import ModelError
from gemma_lora.io_utils import write_json_atomic
from gemma_lora.validation import check_bool
from gemma_lora.validation import check_fraction
from gemma_lora.validation import check_int
from gemma_lora.validation import check_positive
from gemma_lora.validation import check_rank_pattern


ADAPTER_CONFIG = "adapter_config.json"
# Version of the adapter_config.json layout; files without one are format 0.
ADAPTER_FORMAT_VERSION = 1
# `target_layers` entry selecting every Dense/EinsumDense layer of the backbone.
ALL_LINEAR = "all-linear"
# One default per parameter: a LoraConfig field defaults to the RunConfig field's value.
_RUN_DEFAULTS = {field.name: field.default for field in dataclasses.fields(RunConfig)}


# === Config ===


@dataclasses.dataclass
class LoraConfig:
    """Which layers get LoRA, of which rank and scale: PEFT's `LoraConfig` for Keras.

    Validated on creation; the field names and defaults are `RunConfig`'s (`rank` is
    PEFT's `r`, `alpha` its `lora_alpha`, `target_layers` its
    `target_modules`, `dropout` its `lora_dropout`), and each layer's update
    `A @ B` is scaled by `alpha / rank`, or `alpha / sqrt(rank)` with
    `use_rslora`, where `rank` is that layer's rank.

    Args:
        rank: the rank `r` of each update `A @ B`.
        alpha: the scale numerator (PEFT's `lora_alpha`); `None` means
            `alpha = rank` (scale 1 without rsLoRA).
        target_layers: the layers that get LoRA: exact layer names
            (`"query"`), regular expressions that must match a whole layer
            path (`"decoder_block_(0|1)/attention/query"`), or
            `"all-linear"`. A single string is one entry.
        use_rslora: rank-stabilised LoRA: scale by `alpha / sqrt(rank)`, so
            high ranks do not learn slower.
        dropout: fraction of each LoRA branch's inputs dropped while
            training (PEFT's `lora_dropout`), in [0, 1); the frozen path and
            inference are never affected.
        rank_pattern: optional `{path pattern: rank}` giving the layers whose
            path a pattern fully matches another rank than `rank` (the first
            matching pattern wins), e.g. `{"decoder_block_1[0-7]/.*": 16}`.
            `{}` is stored as `None`.

    Raises:
        ConfigError: a field has a wrong value; the message names the field.

    Example:
    >>> config = LoraConfig(rank=8, alpha=16, target_layers=("query", "value"))
    >>> config.scale
    2.0
    >>> LoraConfig(rank=16, alpha=16, use_rslora=True).scale
    4.0
    >>> LoraConfig(rank=16, alpha=None).scale  # alpha = rank
    1.0
    >>> LoraConfig.from_dict(config.to_dict()) == config
    True
    >>> LoraConfig(rank=8, rank_pattern={"x": "big"})
    Traceback (most recent call last):
    ...
    gemma_lora.errors.ConfigError: rank_pattern['x'] must be an integer >= 1; got 'big'.
    """

    rank: int = dataclasses.field(
        default=_RUN_DEFAULTS["rank"],
        metadata={"help": "Rank r of each LoRA update A @ B (PEFT's r)."})
    alpha: float | None = dataclasses.field(
        default=_RUN_DEFAULTS["alpha"],
        metadata={"help": "Scale numerator (PEFT's lora_alpha); None means rank."})
    target_layers: tuple[str, ...] = dataclasses.field(
        default=_RUN_DEFAULTS["target_layers"],
        metadata={"help": "Layer names, full-path regular expressions, or 'all-linear'."})
    use_rslora: bool = dataclasses.field(
        default=_RUN_DEFAULTS["use_rslora"],
        metadata={"help": "Scale by alpha / sqrt(rank) instead of alpha / rank."})
    dropout: float = dataclasses.field(
        default=_RUN_DEFAULTS["dropout"],
        metadata={"help": "Dropout on the LoRA branch's inputs while training."})
    rank_pattern: dict[str, int] | None = dataclasses.field(
        default=_RUN_DEFAULTS["rank_pattern"],
        metadata={"help": "{path pattern: rank} overriding rank per layer."})

    def __post_init__(self) -> None:
        if isinstance(self.target_layers, str):
            self.target_layers = (self.target_layers,)
        if not isinstance(self.target_layers, (list, tuple)) or not all(
                isinstance(entry, str) for entry in self.target_layers):
            raise ConfigError(
                "target_layers must be a layer name or a list of layer names like "
                f"['query', 'value']; got {self.target_layers!r}."
            )
        self.target_layers = tuple(self.target_layers)
        if not self.target_layers:
            raise ConfigError("target_layers must name at least one layer.")
        for entry in self.target_layers:
            compile_pattern("target_layers entry", entry)
        check_int("rank", self.rank, minimum=1)
        if self.alpha is not None:
            check_positive("alpha", self.alpha)
        check_bool("use_rslora", self.use_rslora)
        check_fraction("dropout", self.dropout)
        check_rank_pattern("rank_pattern", self.rank_pattern)
        if self.rank_pattern is not None:
            for pattern in self.rank_pattern:
                compile_pattern("rank_pattern key", pattern)
            self.rank_pattern = dict(self.rank_pattern) or None

    @property
    def effective_alpha(self) -> float:
        """`alpha`, or `rank` when `alpha` is None."""
        return float(self.rank if self.alpha is None else self.alpha)

    @property
    def scale(self) -> float:
        """The factor of a rank-`rank` layer's update: alpha/rank, or alpha/sqrt(rank)."""
        return self.scale_for(self.rank)

    def scale_for(self, rank: int) -> float:
        """The factor of the update of a layer of rank `rank` (see `rank_for`).

        Args:
            rank: the layer's rank.

        Returns:
            `alpha / rank`, or `alpha / sqrt(rank)` with `use_rslora`.
        """
        return self.effective_alpha / (math.sqrt(rank) if self.use_rslora else rank)

    def rank_for(self, path: str) -> int:
        """The rank of the layer at `path`: the first `rank_pattern` match, else `rank`.

        Args:
            path: a layer path like `"decoder_block_3/attention/query"`.

        Returns:
            The layer's rank.

        Example:
        >>> LoraConfig(rank=4, rank_pattern={".*/key": 8}).rank_for("decoder_block_1/attention/key")
        8
        """
        for pattern, rank in (self.rank_pattern or {}).items():
            if re.fullmatch(pattern, path):
                return rank
        return self.rank

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (`target_layers` as a list)."""
        values = dataclasses.asdict(self)
        values["target_layers"] = list(self.target_layers)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "LoraConfig":
        """Build a config from `to_dict`'s output, rejecting unknown keys by name.

        Args:
            values: field names and values.

        Returns:
            The validated `LoraConfig`.

        Raises:
            ConfigError: a key is not a field, or a value is wrong.
        """
        known = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"Unknown LoRA parameter(s) {unknown}. Known parameters: {known}.")
        return cls(**values)

    @classmethod
    def from_run(cls, run_config: RunConfig) -> "LoraConfig":
        """The LoRA part of a run's `RunConfig` (same field names, same values).

        Args:
            run_config: the run's parameters.

        Returns:
            The `LoraConfig` with `run_config`'s LoRA fields.

        Example:
        >>> LoraConfig.from_run(RunConfig(rank=4, alpha=8, use_rslora=True))
        LoraConfig(rank=4, alpha=8, target_layers=('query', 'value'), use_rslora=True, dropout=0.0, rank_pattern=None)
        """
        return cls(**{field.name: getattr(run_config, field.name)
                      for field in dataclasses.fields(cls)})

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the fields into `folder/adapter_config.json`, atomically.

        Other keys already in the file (what `save_adapter` records about the
        base model and the layers) are kept. `save_adapter` calls this for
        you; call it yourself only to write a config without weights.

        Args:
            folder: the adapter folder (created if missing).

        Returns:
            The path of `adapter_config.json`.
        """
        path = Path(folder) / ADAPTER_CONFIG
        path.parent.mkdir(parents=True, exist_ok=True)
        values = read_adapter_config(folder) if path.is_file() else {}
        values.update({"format_version": ADAPTER_FORMAT_VERSION, **self.to_dict()})
        write_json_atomic(path, values)
        return path

    @classmethod
    def from_adapter(cls, path: str | os.PathLike) -> "LoraConfig":
        """The config an adapter was made with, read from its `adapter_config.json`.

        Args:
            path: an adapter folder written by `save_adapter` (any format).

        Returns:
            The adapter's `LoraConfig`.

        Raises:
            ModelError: the folder has no readable adapter config, or its
                values are not a valid `LoraConfig` (the message names the
                file and the field).

        Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> config = LoraConfig(rank=4, alpha=8, use_rslora=True, rank_pattern={".*/key": 2})
        >>> _ = config.save(folder)
        >>> LoraConfig.from_adapter(folder) == config
        True
        """
        values = read_adapter_config(path)
        names = [field.name for field in dataclasses.fields(cls)]
        try:
            return cls(**{name: values[name] for name in names if name in values})
        except ConfigError as error:
            raise ModelError(f"{Path(path) / ADAPTER_CONFIG}: {error}") from error

    @classmethod
    def from_layer_ranks(
        cls,
        layers: Mapping[str, tuple[int, float]],
        target_layers: Sequence[str],
        dropout: float = 0.0,
    ) -> "LoraConfig":
        """The config that gives layers their `(rank, Keras lora_alpha)`.

        For LoRA that was not enabled from a `LoraConfig` (Keras' own
        `enable_lora`, adapters saved before this format). The most common
        rank is `rank`, the other ranks go into `rank_pattern` by exact path;
        `use_rslora` is True only when layers of different ranks show
        `lora_alpha / sqrt(rank)` constant and `lora_alpha` not; then
        `alpha = lora_alpha / sqrt(rank)`, else `alpha` is the most common
        rank's `lora_alpha` (= scale · rank).

        Args:
            layers: `{layer path: (rank, Keras lora_alpha)}`, not empty.
            target_layers: the `target_layers` to record (e.g. layer names).
            dropout: the layers' LoRA dropout.

        Returns:
            The `LoraConfig`.

        Example:
        >>> LoraConfig.from_layer_ranks({"a/query": (4, 8.0), "a/key": (4, 8.0)}, ["query", "key"])
        LoraConfig(rank=4, alpha=8.0, target_layers=('query', 'key'), use_rslora=False, dropout=0.0, rank_pattern=None)
        """
        ranks = [rank for rank, _ in layers.values()]
        rank = collections.Counter(ranks).most_common(1)[0][0]
        keras_alphas = {round(alpha, 6) for _, alpha in layers.values()}
        rs_alphas = {round(alpha / math.sqrt(r), 6) for r, alpha in layers.values()}
        use_rslora = len(keras_alphas) > 1 and len(rs_alphas) == 1
        alpha = next(a for r, a in layers.values() if r == rank)
        pattern = {re.escape(path): r for path, (r, _) in layers.items() if r != rank}
        return cls(rank=rank, alpha=alpha / math.sqrt(rank) if use_rslora else alpha,
                   target_layers=tuple(target_layers), use_rslora=use_rslora,
                   dropout=dropout, rank_pattern=pattern or None)


def compile_pattern(what: str, entry: str) -> re.Pattern:
    """Compile a layer path pattern, or raise `ConfigError` naming `what`.

    Args:
        what: what the pattern is, for the message (`"target_layers entry"`).
        entry: the regular expression.

    Returns:
        The compiled pattern.

    Raises:
        ConfigError: `entry` is not a valid regular expression.

    Example:
    >>> compile_pattern("target_layers entry", "(")
    Traceback (most recent call last):
    ...
    gemma_lora.errors.ConfigError: target_layers entry '(' is not a valid pattern: missing ), unterminated subpattern at position 0.
    """
    try:
        return re.compile(entry)
    except re.error as error:
        raise ConfigError(f"{what} {entry!r} is not a valid pattern: {error}.") from error


# === adapter_config.json ===


def read_adapter_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read an adapter folder's `adapter_config.json`, in format 1 whatever its age.

    Args:
        path: an adapter folder written by `save_adapter`.

    Returns:
        The adapter config as a dict (see the module docstring); an older
        file is converted (its Keras "alpha" becomes the user's alpha, each
        layer's becomes `keras_lora_alpha`).

    Raises:
        ModelError: the file is missing or not a JSON object, or the folder
            holds a Hugging Face PEFT adapter (use `import_peft_adapter`).
    """
    config_file = Path(path) / ADAPTER_CONFIG
    if not config_file.is_file():
        raise ModelError(f"{str(path)!r} is not an adapter folder: {ADAPTER_CONFIG} is missing.")
    try:
        values = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{config_file}: not valid JSON ({error}).") from error
    if not isinstance(values, dict):
        raise ModelError(f"{config_file}: expected a JSON object, got {type(values).__name__}.")
    if "peft_type" in values:
        raise ModelError(
            f"{str(path)!r} is a Hugging Face PEFT adapter, not a gemma_lora one: load it "
            "with lora.import_peft_adapter(model, path)."
        )
    version = values.get("format_version", 0)
    if version == 0:
        try:
            return _from_format_0(values)
        except (KeyError, TypeError, ValueError, GemmaLoraError) as error:
            raise ModelError(f"{config_file}: not a readable adapter config ({error!r}).") from error
    if version != ADAPTER_FORMAT_VERSION:
        raise ModelError(
            f"{config_file} has format_version {version!r}; this gemma_lora reads formats "
            f"0 to {ADAPTER_FORMAT_VERSION}. Upgrade gemma_lora to load it."
        )
    return values


def _from_format_0(old: dict[str, Any]) -> dict[str, Any]:
    """A format-0 config (gemma_lora 0.1.0: "alpha" is Keras' scale · rank) as format 1."""
    layers = {path: (int(spec["rank"]), float(spec["alpha"]))
              for path, spec in old["layers"].items()}
    lora_config = LoraConfig.from_layer_ranks(layers, old["target_layers"],
                                              dropout=old.get("dropout", 0.0))
    values = {"format_version": ADAPTER_FORMAT_VERSION, **lora_config.to_dict()}
    for key in ("base_preset", "source", "dtype", "quantize", "template"):
        values[key] = old.get(key)
    values["architecture"] = old["architecture"]
    values["layers"] = {path: {"rank": rank, "keras_lora_alpha": alpha}
                        for path, (rank, alpha) in layers.items()}
    for key in ("gemma_lora_version", "keras_version", "keras_hub_version"):
        values[key] = old.get(key)
    return values
