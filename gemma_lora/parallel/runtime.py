"""What every process of a distributed run needs at run time: who writes, how a batch is split.

Only `jax` and `keras` are imported here, so the training step, the
checkpoints and the reports can ask `is_writer()` or `shard_batch(batch)`
without the mesh set-up and its model knowledge.
"""

from __future__ import annotations

import jax
import keras
import numpy as np


def is_writer() -> bool:
    """Whether this process writes the run's files: only process 0 does.

    Every process of a multi-host run computes the same steps; the adapter,
    checkpoints, history, metrics and plots are written once, by process 0.
    On one host this is always True.

    Returns:
        True on process 0.

    Example:
    >>> is_writer()  # one host: this is process 0
    True
    """
    return jax.process_index() == 0


def batch_summary(batch_size: int) -> str:
    """How a batch is split under the current distribution, for the run log.

    Args:
        batch_size: the global batch.

    Returns:
        `""` on one device, else e.g. `" (4 per device, data_parallel=2)"`.

    Example:
    >>> f"Training 100 steps of 8 examples{batch_summary(8)}"  # no distribution set
    'Training 100 steps of 8 examples'

    With a Keras `DataParallel` distribution over two devices::

        f"Training 100 steps of 8 examples{batch_summary(8)}"
        # 'Training 100 steps of 8 examples (4 per device, data_parallel=2)'
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
    >>> batch = {"token_ids": np.zeros((8, 32), dtype="int32")}
    >>> shard_batch(batch) is batch  # no distribution set: nothing to split
    True

    On 8 devices with `data_parallel=8`, each device gets one row::

        sharded = shard_batch(batch)
        sharded["token_ids"].sharding.shard_shape((8, 32))  # (1, 32)
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
