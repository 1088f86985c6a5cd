"""Where each Gemma weight lives on the device mesh: layout rules and the Keras distributions.

With `model_parallel > 1`, Gemma's embeddings, attention and MLP kernels are
split across the model axis (`layout_rules`). A dimension that does not
divide by the axis size is replicated instead: Gemma 3 270M and 1B have a
single key/value head (multi-query attention), which cannot be split
(keras-hub issue #1613), so their key and value kernels are kept whole on
every device. LoRA matrices follow their base kernel's split across the
model axis, and Keras gives the optimizer state the layout of its variable.
"""

from __future__ import annotations

import os
import re

import keras
import keras_hub
from keras_hub.src.utils import preset_utils

from gemma_lora import models
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
    >>> devices = keras.distribution.list_devices()
    >>> mesh = keras.distribution.DeviceMesh((1, len(devices)), ("batch", "model"), devices)
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
    if preset == models.PYPI_PRESET_NAME:
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

    Example (on 8 devices)::

        mesh = keras.distribution.DeviceMesh((8,), ("batch",))
        keras.distribution.set_distribution(GemmaDataParallel(mesh))

    On the devices at hand, without setting it for the process:

    >>> devices = keras.distribution.list_devices()
    >>> mesh = keras.distribution.DeviceMesh((len(devices),), ("batch",), devices)
    >>> GemmaDataParallel(mesh).get_data_layout((8, 32)).axes  # batches split on "batch"
    ('batch', None)
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

    Example (on 8 devices: 2 replicas, each split over 4)::

        mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"))
        keras.distribution.set_distribution(
            GemmaModelParallel(mesh, layout_rules(keras_hub.models.Gemma3Backbone, mesh)))

    On the devices at hand, without setting it for the process:

    >>> devices = keras.distribution.list_devices()
    >>> mesh = keras.distribution.DeviceMesh((1, len(devices)), ("batch", "model"), devices)
    >>> distribution = GemmaModelParallel(mesh, layout_rules(keras_hub.models.Gemma3Backbone, mesh))
    >>> distribution.get_data_layout((8, 32)).axes  # batches split on "batch" only
    ('batch', None)
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
