"""The device mesh of a run: resolve `data_parallel × model_parallel`, set Keras' distribution.

`apply(config)` is called before the model is loaded, because Keras places
each weight on its devices when it creates it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import keras

from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError
from gemma_lora.parallel.layout import DATA_AXIS
from gemma_lora.parallel.layout import MODEL_AXIS
from gemma_lora.parallel.layout import GemmaDataParallel
from gemma_lora.parallel.layout import GemmaModelParallel
from gemma_lora.parallel.layout import backbone_class
from gemma_lora.parallel.layout import layout_rules
from gemma_lora.parallel.multihost import initialize_multi_host


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


# === Mesh ===


def mesh_shape(data_parallel: int | str, model_parallel: int | str,
               device_count: int, platform: str = "",
               batch_size: int | None = None) -> tuple[int, int]:
    """Resolve `"auto"` sizes and check that the mesh uses every device once.

    Args:
        data_parallel: devices on the data axis, or `"auto"`.
        model_parallel: devices on the model axis, or `"auto"`.
        device_count: the devices available.
        platform: their platform (`"tpu"`), named in error messages.
        batch_size: the global batch; when given and both sizes are
            `"auto"`, the data axis gets only as many devices as split it
            evenly, and the model axis the rest.

    Returns:
        `(data_parallel, model_parallel)` with product `device_count`;
        both `"auto"` put every device on the data axis, or, when that many
        do not divide `batch_size`, `gcd(batch_size, device_count)` of them
        (e.g. batch 4 on 8 devices: 4 × 2).

    Raises:
        ConfigError: the sizes do not multiply to `device_count`.

    Example:
    >>> mesh_shape("auto", 4, device_count=8)
    (2, 4)
    >>> mesh_shape("auto", "auto", device_count=8, batch_size=4)
    (4, 2)
    """
    if model_parallel == "auto":
        if data_parallel == "auto":
            data = device_count if batch_size is None else math.gcd(batch_size, device_count)
            return data, device_count // data
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

    With both sizes `"auto"` and a `batch_size` that the devices do not
    divide, the data axis takes `gcd(batch_size, devices)` of them and the
    model axis the rest, and a second line says so.

    Example (on a TPU v5e-8)::

        apply(RunConfig(batch_size=8, model_parallel=4))
        # 8 tpu devices: data_parallel=2 × model_parallel=4; batch_size 8 = 4 per device.
        apply(RunConfig(batch_size=4))
        # 8 tpu devices: data_parallel=4 × model_parallel=2; batch_size 4 = 1 per device.
        # data_parallel="auto": batch_size=4 does not split across 8 tpu devices, so 4 model
        # replicas of 2 devices each (model_parallel=2). For data parallelism alone, set
        # batch_size to a multiple of 8.
    """
    initialize_multi_host(config, log)
    devices = _ordered_devices()
    data, model = mesh_shape(config.data_parallel, config.model_parallel, len(devices),
                             devices[0].platform, config.batch_size)
    check_batch_size(config.batch_size, data)
    chose_model_axis = config.data_parallel == config.model_parallel == "auto" and model > 1
    if chose_model_axis and jax.process_count() > 1 and jax.local_device_count() % model:
        check_batch_size(config.batch_size, len(devices))  # raises, naming the batch size to set
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
    if chose_model_axis:
        log(f'data_parallel="auto": batch_size={config.batch_size} does not split across '
            f"{_devices(len(devices), shape.platform)}, so {data} model replicas of {model} devices "
            f"each (model_parallel={model}). For data parallelism alone, set batch_size to a "
            f"multiple of {len(devices)}.")
    return shape
