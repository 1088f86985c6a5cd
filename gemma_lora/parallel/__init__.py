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

Example (on 8 devices)::

    config = RunConfig(preset="gemma3_1b", batch_size=8, data_parallel=2, model_parallel=4)
    parallel.apply(config)       # before models.load_causal_lm
    model = models.load_causal_lm(config.preset)

Modules: `runtime` (jax only: `is_writer`, `shard_batch`, `batch_summary`),
`multihost` (`jax.distributed` start-up), `layout` (Gemma layout rules and
Keras distributions), `mesh` (`apply`).
"""

from gemma_lora.parallel.layout import DATA_AXIS
from gemma_lora.parallel.layout import GEMMA3_LAYOUT_RULES
from gemma_lora.parallel.layout import MODEL_AXIS
from gemma_lora.parallel.layout import GemmaDataParallel
from gemma_lora.parallel.layout import GemmaModelParallel
from gemma_lora.parallel.layout import backbone_class
from gemma_lora.parallel.layout import layout_rules
from gemma_lora.parallel.mesh import MeshShape
from gemma_lora.parallel.mesh import apply
from gemma_lora.parallel.mesh import check_batch_size
from gemma_lora.parallel.mesh import mesh_shape
from gemma_lora.parallel.multihost import cluster_environment
from gemma_lora.parallel.multihost import initialize_multi_host
from gemma_lora.parallel.runtime import batch_summary
from gemma_lora.parallel.runtime import is_writer
from gemma_lora.parallel.runtime import shard_batch

__all__ = [
    "DATA_AXIS",
    "GEMMA3_LAYOUT_RULES",
    "MODEL_AXIS",
    "GemmaDataParallel",
    "GemmaModelParallel",
    "MeshShape",
    "apply",
    "backbone_class",
    "batch_summary",
    "check_batch_size",
    "cluster_environment",
    "initialize_multi_host",
    "is_writer",
    "layout_rules",
    "mesh_shape",
    "shard_batch",
]
