"""Train on many devices: device mesh, Gemma layouts, batch sharding, multi-host.

Keras distributes a model through `keras.distribution`: a `DeviceMesh` of
devices with named axes, and a distribution that gives every variable a
layout when it is created. So the distribution is applied **before** the
model is loaded (`apply`), and everything else follows:

- the mesh is `data_parallel × model_parallel` devices, with axes `"batch"`
  and `"model"` (KerasHub's names). By default (`"auto"`) every device is on
  the data axis: each holds the whole model and a slice of every batch;
- with `model_parallel > 1`, Gemma's embeddings, attention and MLP kernels
  are split across the model axis (`layout_rules`). A dimension that does
  not divide by the axis size is replicated instead: Gemma 3 270M and 1B
  have a single key/value head (multi-query attention), which cannot be
  split (keras-hub issue #1613), so their key and value kernels are kept
  whole on every device. LoRA matrices follow their base kernel's split
  across the model axis, and Keras gives the optimizer state the layout of
  its variable;
- `shard_batch` splits each batch across the data axis, so `batch_size` is
  the global batch (`batch_size / data_parallel` examples per device);
- on several hosts, `jax.distributed` is started first
  (`initialize_multi_host`), every process runs the same steps on the same
  global batches, and only process 0 writes files (`is_writer`).

Example:
>>> config = RunConfig(preset="gemma3_1b", batch_size=8, data_parallel=2, model_parallel=4)
>>> distribution.apply(config)       # before models.load_causal_lm
>>> model = models.load_causal_lm(config.preset)
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Callable

import jax
import keras
import keras_hub
import numpy as np
from keras_hub.src.utils import preset_utils

from gemma_lora import gguf
from gemma_lora import models
from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError

DATA_AXIS = "batch"
MODEL_AXIS = "model"

# One layout: for each dimension of a variable, the mesh axis it is split
# across, or None to keep it whole.
Axes = tuple[str | None, ...]

# Gemma 3: Megatron-style tensor parallelism over the model axis. Each
# pattern (matched against the whole variable path) maps to the layouts to
# try, best first; the first whose split dimensions divide evenly is used.
GEMMA3_LAYOUT_RULES: dict[str, tuple[Axes, ...]] = {
    # (vocabulary, hidden): split the vocabulary, so the tied output
    # projection yields vocabulary-split logits; else split the width.
    r"token_embedding/embeddings": ((MODEL_AXIS, None), (None, MODEL_AXIS)),
    # (heads, hidden, head_dim): split the heads.
    r"decoder_block_\d+/attention/(query|key|value)/kernel": ((MODEL_AXIS, None, None),),
    # (heads, head_dim, hidden): split the heads.
    r"decoder_block_\d+/attention/attention_output/kernel": ((MODEL_AXIS, None, None),),
    # (hidden, intermediate): split the intermediate width ...
    r"decoder_block_\d+/ffw_gating(_2)?/kernel": ((None, MODEL_AXIS),),
    # ... and (intermediate, hidden) along it.
    r"decoder_block_\d+/ffw_linear/kernel": ((MODEL_AXIS, None),),
}

# A LoRA matrix's path ends with one of these; its base variable is the
# layer's `kernel` (EinsumDense, Dense) or `embeddings` (Embedding).
_LORA_BASES = {
    "lora_kernel_a": "kernel",
    "lora_kernel_b": "kernel",
    "lora_embeddings_a": "embeddings",
    "lora_embeddings_b": "embeddings",
}

# Environment variables that say this process is one of several.
_HOST_LIST_VARIABLES = ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES")
_PROCESS_COUNT_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


@dataclasses.dataclass(frozen=True)
class MeshShape:
    """How many devices are on each axis of the device mesh.

    Args:
        data_parallel: devices on the data axis (model replicas; each gets
            `batch_size / data_parallel` examples of every batch).
        model_parallel: devices on the model axis (each holds a slice of
            the split weights).
        platform: the devices' platform (`"cpu"`, `"gpu"`, `"tpu"`).

    Example:
    >>> str(MeshShape(2, 4, "tpu"))
    '8 tpu devices: data_parallel=2 × model_parallel=4'
    """

    data_parallel: int
    model_parallel: int
    platform: str

    def __str__(self) -> str:
        return (f"{_devices(self.data_parallel * self.model_parallel, self.platform)}: "
                f"data_parallel={self.data_parallel} × model_parallel={self.model_parallel}")


# === Multi-host ===


def cluster_environment() -> str | None:
    """The environment variable that shows this process is one of several hosts.

    Recognised: Keras' `KERAS_DISTRIBUTION_JOB_ADDRESSES`, JAX's
    `JAX_COORDINATOR_ADDRESS`, a Slurm job step or Open MPI job with more
    than one task (`SLURM_NTASKS`, `OMPI_COMM_WORLD_SIZE`), and a Cloud TPU
    on GKE listing more than one host (`TPU_WORKER_HOSTNAMES`,
    `TPU_PROCESS_ADDRESSES`).

    Returns:
        `"NAME=value"` of the first variable found, or None (one host).

    Example:
    >>> os.environ["SLURM_NTASKS"] = "4"
    >>> cluster_environment()
    'SLURM_NTASKS=4'
    """
    for name in ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "JAX_COORDINATOR_ADDRESS"):
        if os.environ.get(name):
            return f"{name}={os.environ[name]}"
    for name in _PROCESS_COUNT_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 1:
            return f"{name}={value}"
    for name in _HOST_LIST_VARIABLES:
        if len([host for host in os.environ.get(name, "").split(",") if host.strip()]) > 1:
            return f"{name}={os.environ[name]}"
    return None


def initialize_multi_host(config: RunConfig, log: Callable[[str], None] = print) -> bool:
    """Start `jax.distributed` when this run spans several hosts.

    It must run before anything uses a JAX device, which is why `apply`
    calls it first. It starts when `config.coordinator_address` is set
    (`"host:port"` with `num_processes` and `process_id`, or `"auto"` to let
    JAX detect them on Cloud TPU pod slices, Slurm, Open MPI or Kubernetes),
    or when `cluster_environment()` finds a cluster; then it calls
    `keras.distribution.initialize`, which also gives every process the same
    random seed. Calling it again is harmless.

    Args:
        config: the run's parameters.
        log: where the one-line notice goes.

    Returns:
        Whether this call started `jax.distributed`.

    Example:
    >>> initialize_multi_host(RunConfig(coordinator_address="10.0.0.2:1234",
    ...                                 num_processes=2, process_id=0))
    True
    """
    if jax.distributed.is_initialized():
        return False
    if config.coordinator_address is not None:
        reason = f"coordinator_address={config.coordinator_address!r}"
    else:
        reason = cluster_environment()
        if reason is None:
            return False
    address = None if config.coordinator_address in (None, "auto") else config.coordinator_address
    keras.distribution.initialize(address, config.num_processes, config.process_id)
    log(f"Multi-host run ({reason}): process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} local of {jax.device_count()} devices.")
    return True


def is_writer() -> bool:
    """Whether this process writes the run's files: only process 0 does.

    Every process of a multi-host run computes the same steps; the adapter,
    checkpoints, history, metrics and plots are written once, by process 0.
    On one host this is always True.

    Returns:
        True on process 0.

    Example:
    >>> if is_writer():
    ...     write_history(history, path)
    """
    return jax.process_index() == 0


# === Mesh ===


def mesh_shape(data_parallel: int | str, model_parallel: int | str,
               device_count: int, platform: str = "") -> tuple[int, int]:
    """Resolve `"auto"` sizes and check that the mesh uses every device once.

    Args:
        data_parallel: devices on the data axis, or `"auto"`.
        model_parallel: devices on the model axis, or `"auto"`.
        device_count: the devices available.
        platform: their platform (`"tpu"`), named in error messages.

    Returns:
        `(data_parallel, model_parallel)` with product `device_count`;
        both `"auto"` put every device on the data axis.

    Raises:
        ConfigError: the sizes do not multiply to `device_count`.

    Example:
    >>> mesh_shape("auto", 4, device_count=8)
    (2, 4)
    """
    if model_parallel == "auto":
        if data_parallel == "auto":
            return device_count, 1
        _check_divides("data_parallel", data_parallel, device_count, platform)
        return data_parallel, device_count // data_parallel
    if data_parallel == "auto":
        _check_divides("model_parallel", model_parallel, device_count, platform)
        return device_count // model_parallel, model_parallel
    if data_parallel * model_parallel != device_count:
        raise ConfigError(
            f"data_parallel × model_parallel = {data_parallel} × {model_parallel} = "
            f"{data_parallel * model_parallel}, but {_devices(device_count, platform)} are "
            "available: "
            "the product must equal the device count. Set one of them to \"auto\" to use "
            "all devices (e.g. data_parallel=\"auto\", "
            f"model_parallel={model_parallel if device_count % model_parallel == 0 else 1})."
        )
    return data_parallel, model_parallel


def _check_divides(name: str, size: int, device_count: int, platform: str) -> None:
    if device_count % size:
        divisors = [d for d in range(1, device_count + 1) if device_count % d == 0]
        raise ConfigError(
            f"{name}={size} does not divide the {_devices(device_count, platform)} available; "
            f"it must be one of {divisors} (or \"auto\")."
        )


def _devices(count: int, platform: str) -> str:
    return f"{count} {platform + ' ' if platform else ''}device{'s' if count != 1 else ''}"


def check_batch_size(batch_size: int, data_parallel: int) -> None:
    """Check that `batch_size` splits evenly across the data-parallel devices.

    Args:
        batch_size: the global batch: examples per training step.
        data_parallel: devices on the data axis.

    Raises:
        ConfigError: `batch_size` is not a multiple of `data_parallel`.

    Example:
    >>> check_batch_size(8, data_parallel=4)   # 2 examples per device
    """
    if batch_size % data_parallel:
        raise ConfigError(
            f"batch_size={batch_size} cannot be split across data_parallel={data_parallel} "
            f"devices: batch_size is the global batch and each data-parallel device gets "
            f"batch_size / data_parallel examples. Use a multiple of {data_parallel} "
            f"(e.g. {data_parallel * math.ceil(batch_size / data_parallel)}), or a smaller "
            "data_parallel (with model_parallel taking the other devices)."
        )


def _ordered_devices() -> list:
    # Grouped by host, so that each model-parallel group lies within one host.
    return sorted(jax.devices(), key=lambda device: (device.process_index, device.id))


# === Layouts ===


def layout_rules(backbone_class: type, device_mesh: keras.distribution.DeviceMesh
                 ) -> dict[str, tuple[Axes, ...]]:
    """The layout map of a Gemma backbone: path pattern -> layouts to try.

    Gemma 3 uses `GEMMA3_LAYOUT_RULES` (KerasHub has no layout map for it);
    Gemma 1 and 2 use KerasHub's own `GemmaBackbone.get_layout_map`, which
    also splits weights across the data axis. Either way, `GemmaModelParallel`
    replicates any dimension that does not divide by its axis size, such as a
    single key/value head.

    Args:
        backbone_class: the model's KerasHub backbone class.
        device_mesh: the mesh, with axes `"batch"` and `"model"`.

    Returns:
        `{regular expression over variable paths: (layout, ...)}`.

    Raises:
        ConfigError: there is no layout map for this architecture.

    Example:
    >>> layout_rules(keras_hub.models.Gemma3Backbone, mesh)[r"token_embedding/embeddings"]
    (('model', None), (None, 'model'))
    """
    if issubclass(backbone_class, keras_hub.models.Gemma3Backbone):
        return dict(GEMMA3_LAYOUT_RULES)
    if issubclass(backbone_class, keras_hub.models.GemmaBackbone):
        layout_map = keras_hub.models.GemmaBackbone.get_layout_map(
            device_mesh, model_parallel_dim_name=MODEL_AXIS, data_parallel_dim_name=DATA_AXIS)
        return {pattern: (tuple(layout.axes),) for pattern, layout in layout_map.items()}
    raise ConfigError(
        f"model_parallel > 1 needs a layout map, and there is none for "
        f"{backbone_class.__name__} (only Gemma 1, 2 and 3); use model_parallel=1 "
        "(data parallel only)."
    )


def backbone_class(preset: str) -> type:
    """The KerasHub backbone class of `preset`, without loading its weights.

    Args:
        preset: anything `models.load_causal_lm` accepts.

    Returns:
        A `keras_hub.models.Backbone` subclass, e.g. `Gemma3Backbone`.

    Raises:
        ConfigError, ModelError: from `models.check_preset`, for a preset
            that names no model.

    Example:
    >>> backbone_class("gemma2_2b_en").__name__
    'GemmaBackbone'
    """
    models.check_preset(preset)
    if preset == gguf.PYPI_PRESET_NAME:
        return keras_hub.models.Gemma3Backbone
    for cls in (keras_hub.models.Gemma3Backbone, keras_hub.models.GemmaBackbone):
        if preset in cls.presets:
            return cls
    return preset_utils.get_preset_loader(os.path.expanduser(preset)).check_backbone_class()


class _SplitBatchesEvenly:
    """Split inputs across the data axis only when their first dimension divides.

    Keras lays out every model input (KerasHub's `generate` included) with
    the distribution's `get_data_layout`, which always splits the first
    dimension; a batch that does not divide by the data-parallel size (one
    prompt to generate from, the last evaluation batch) is replicated instead.
    """

    def get_data_layout(self, data_shape) -> keras.distribution.TensorLayout:
        mesh = self.device_mesh
        replicas = mesh.shape[mesh.axis_names.index(self.batch_dim_name)]
        if not data_shape or data_shape[0] % replicas:
            return keras.distribution.TensorLayout([None] * len(data_shape), mesh)
        return super().get_data_layout(data_shape)


class GemmaDataParallel(_SplitBatchesEvenly, keras.distribution.DataParallel):
    """Keras' `DataParallel` (every device holds the whole model) for `model_parallel=1`.

    Batches split across the devices when their size divides, else are
    replicated (see `shard_batch`).

    Args:
        device_mesh: a one-axis mesh named `"batch"`.

    Example:
    >>> mesh = keras.distribution.DeviceMesh((8,), ("batch",))
    >>> keras.distribution.set_distribution(GemmaDataParallel(mesh))
    """

    def __init__(self, device_mesh: keras.distribution.DeviceMesh):
        super().__init__(device_mesh=device_mesh)


class GemmaModelParallel(_SplitBatchesEvenly, keras.distribution.ModelParallel):
    """`ModelParallel` that fits each layout to its variable's shape.

    Keras asks the distribution for a layout when it creates each variable.
    This one takes the first layout of the first matching rule whose split
    dimensions divide evenly by their mesh axis sizes; when none does, it
    keeps the first layout's axes that divide and replicates the others (a
    key kernel with one head stays whole across the model axis). A LoRA
    matrix follows the layout chosen for its base variable: `A` is split
    like the base's input dimensions, `B` like its output dimension, so
    `A·B` comes out split like the kernel it is added to. Variables matched
    by no rule (norms, scales) are replicated. LoRA matrices are split on
    the model axis only, never on the data axis (as KerasHub's Gemma map
    splits kernels), so each host holds them whole.

    Args:
        device_mesh: the mesh, with axes `"batch"` and `"model"`.
        rules: from `layout_rules`.

    Example:
    >>> mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"))
    >>> keras.distribution.set_distribution(
    ...     GemmaModelParallel(mesh, layout_rules(keras_hub.models.Gemma3Backbone, mesh)))
    """

    def __init__(self, device_mesh: keras.distribution.DeviceMesh,
                 rules: dict[str, tuple[Axes, ...]]):
        layout_map = keras.distribution.LayoutMap(device_mesh)
        for pattern, layouts in rules.items():
            layout_map[pattern] = layouts[0]
        super().__init__(layout_map=layout_map, batch_dim_name=DATA_AXIS)
        self._rules = [(re.compile(pattern), layouts) for pattern, layouts in rules.items()]
        self._axis_sizes = dict(zip(device_mesh.axis_names, device_mesh.shape))
        self._chosen: dict[str, Axes] = {}

    def get_variable_layout(self, variable) -> keras.distribution.TensorLayout:
        if getattr(variable, "_layout", None) is not None:
            return variable._layout
        axes = self.variable_axes(variable.path, tuple(variable.shape))
        return keras.distribution.TensorLayout(axes, self.device_mesh)

    def variable_axes(self, path: str, shape: tuple[int, ...]) -> Axes:
        """The mesh axis of each dimension of the variable at `path`."""
        parent, _, name = path.rpartition("/")
        base = self._chosen.get(f"{parent}/{_LORA_BASES[name]}") if name in _LORA_BASES else None
        if base is not None:
            # Only the model axis: the matrices are small, and whole on every
            # host they can be saved from any process.
            base = tuple(axis if axis == MODEL_AXIS else None for axis in base)
            candidates = [base[:-1] + (None,)] if name.endswith("_a") else [(None, base[-1])]
        else:
            candidates = next((layouts for pattern, layouts in self._rules
                               if pattern.fullmatch(path)), [])
        candidates = [axes for axes in candidates if len(axes) == len(shape)]
        axes = next((axes for axes in candidates if self._fits(axes, shape)), None)
        if axes is None:
            first = candidates[0] if candidates else (None,) * len(shape)
            axes = tuple(axis if self._fits((axis,), (dim,)) else None
                         for axis, dim in zip(first, shape))
        self._chosen[path] = axes
        return axes

    def _fits(self, axes: Axes, shape: tuple[int, ...]) -> bool:
        return all(axis is None or dim % self._axis_sizes[axis] == 0
                   for axis, dim in zip(axes, shape))


# === Applying it ===


def apply(config: RunConfig, log: Callable[[str], None] = print) -> MeshShape:
    """Set up the devices for this run; call it before loading the model.

    Starts `jax.distributed` on a multi-host run, resolves
    `config.data_parallel` and `config.model_parallel` against the devices,
    checks `batch_size`, and sets Keras' global distribution: none on a
    single device, `GemmaDataParallel` when `model_parallel` is 1, otherwise
    `GemmaModelParallel` with the layout map of `config.preset`'s
    architecture.

    Args:
        config: the run's parameters.
        log: where the one-line summary goes.

    Returns:
        The resolved `MeshShape`.

    Raises:
        ConfigError: the sizes do not fit the devices, `batch_size` does not
            split across the data axis, the model axis would span hosts, or
            the architecture has no layout map; the message names the
            parameter.

    Example:
    >>> apply(RunConfig(batch_size=8, model_parallel=4))
    8 tpu devices: data_parallel=2 × model_parallel=4; batch_size 8 = 4 per device.
    """
    initialize_multi_host(config, log)
    devices = _ordered_devices()
    data, model = mesh_shape(config.data_parallel, config.model_parallel, len(devices),
                             devices[0].platform)
    check_batch_size(config.batch_size, data)
    if jax.process_count() > 1 and jax.local_device_count() % model:
        raise ConfigError(
            f"model_parallel={model} must divide the {jax.local_device_count()} devices of "
            "each host: a model-parallel group has to lie within one host (the data axis "
            "spans the hosts), so that every host holds whole weights to save."
        )
    shape = MeshShape(data, model, devices[0].platform)
    if len(devices) == 1:
        distribution = None
    elif model == 1:
        distribution = GemmaDataParallel(
            keras.distribution.DeviceMesh((data,), (DATA_AXIS,), devices))
    else:
        mesh = keras.distribution.DeviceMesh((data, model), (DATA_AXIS, MODEL_AXIS), devices)
        distribution = GemmaModelParallel(mesh, layout_rules(backbone_class(config.preset), mesh))
    keras.distribution.set_distribution(distribution)
    log(f"{shape}; batch_size {config.batch_size} = {config.batch_size // data} per device.")
    return shape


def batch_summary(batch_size: int) -> str:
    """How a batch is split under the current distribution, for the run log.

    Args:
        batch_size: the global batch.

    Returns:
        `""` on one device, else e.g. `" (4 per device, data_parallel=2)"`.

    Example:
    >>> f"Training 100 steps of 8 examples{batch_summary(8)}"
    'Training 100 steps of 8 examples (4 per device, data_parallel=2)'
    """
    distribution = keras.distribution.distribution()
    if distribution is None:
        return ""
    mesh = distribution.device_mesh
    replicas = mesh.shape[mesh.axis_names.index(distribution.batch_dim_name)]
    return f" ({batch_size // replicas} per device, data_parallel={replicas})"


def shard_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray | jax.Array]:
    """Split a batch along its first dimension across the data axis.

    Every process holds the same global batch (batches are a function of the
    seed and step); each device receives its slice, as the distribution's
    `get_data_layout` says. An array whose first dimension does not divide
    by the data-parallel size (the last, smaller evaluation batch) is
    replicated instead. Without a distribution, the batch is returned as it
    is.

    Args:
        batch: numpy arrays with the examples on the first dimension.

    Returns:
        The batch as `jax.Array`s sharded on the data axis.

    Example:
    >>> loss, finite = steps.train_step(shard_batch(batch))
    """
    distribution = keras.distribution.distribution()
    if distribution is None:
        return batch
    sharded = {}
    for name, array in batch.items():
        sharding = distribution.get_data_layout(array.shape).backend_layout
        sharded[name] = jax.make_array_from_callback(
            array.shape, sharding, lambda index, array=array: array[index])
    return sharded
