"""Several hosts: find the cluster, start `jax.distributed` before anything uses a device."""

from __future__ import annotations

import os
from typing import Callable

import jax
import keras

from gemma_lora.config import RunConfig


# Environment variables that say this process is one of several.
_HOST_LIST_VARIABLES = ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES")
_PROCESS_COUNT_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


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
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"SLURM_NTASKS": "4"}):  # as in a 4-task Slurm step
    ...     cluster_environment()
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

    Example (on each of two hosts, with its own `process_id`)::

        initialize_multi_host(RunConfig(coordinator_address="10.0.0.2:1234",
                                        num_processes=2, process_id=0))  # True

    On one host, with no cluster variable set, it does nothing:

    >>> initialize_multi_host(RunConfig())
    False
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
