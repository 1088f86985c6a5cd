"""Compiled training and evaluation steps for a KerasHub `CausalLM` (JAX).

The steps are pure functions of the variables' values (Keras' stateless API),
compiled once per batch shape with `jax.jit`:

- the backbone runs on the batch's tokens and returns hidden states; a
  packed batch (one with `segment_ids`, see `batching.make_packed_batch`)
  runs through `packed_forward`, which keeps its examples apart;
- only the hidden states at the loss positions gathered by `batching` go
  through the tied vocabulary projection (with Gemma's logit soft cap, if
  any), so the `[batch, length, vocabulary]` logits are never built; with
  `loss_chunk_size`, the projection and log-softmax run over those positions
  in chunks (recomputed in the backward pass), so only one chunk's
  `[chunk, vocabulary]` logits are alive at a time;
- the loss is the mean cross-entropy over loss-bearing tokens, the same
  number KerasHub's `fit` reports with `reduction="mean_with_sample_weight"`;
- the optimizer update (clipping, weight decay, schedule) is Keras' own
  `optimizer.stateless_apply`.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import keras
import numpy as np

from gemma_lora.config import DEFAULT_LOSS_CHUNK_SIZE
from gemma_lora.lora import dropout as lora_dropout
from gemma_lora.parallel.runtime import shard_batch
from gemma_lora.training import packed_forward


class CompiledSteps:
    """Jitted train and loss steps bound to one model and optimizer.

    The model's variables are read once into `self.trainable`,
    `self.non_trainable` and `self.optimizer_state`; steps update these
    arrays, and `write_back()` copies them into the Keras variables (for
    saving, generating or evaluating with Keras).

    Args:
        model: a KerasHub `CausalLM` with LoRA (or other trainable weights).
        optimizer: a Keras optimizer; built here on the trainable variables.
        seed: root of the LoRA dropout masks (folded with the step number).
        loss_chunk_size: loss positions whose logits are computed at once
            when a batch has more; `None` or 0 computes them all at once.

    Example:
    >>> from gemma_lora.config import RunConfig
    >>> from gemma_lora.lora import LoraConfig, enable_lora
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> from gemma_lora.training import batching, make_optimizer
    >>> model = tiny_causal_lm()
    >>> summary = enable_lora(model, LoraConfig(rank=4))
    >>> examples = {"prompts": ["Which color? A red mug.", "Which color? A blue hat."],
    ...             "responses": ["red", "blue"]}
    >>> split = batching.tokenize(model.preprocessor, examples, sequence_length=32)
    >>> batch = batching.make_batch(split, np.arange(2), buckets=(32,), loss_buffer=8)
    >>> steps = CompiledSteps(model, make_optimizer(RunConfig(warmup_steps=0), total_steps=10))
    >>> loss, finite = steps.train_step(batch)
    >>> finite, steps.mean_loss([batch]) < loss  # one step of AdamW lowers the loss
    (True, True)
    >>> steps.write_back()  # the new LoRA weights into the Keras model
    """

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer | None = None,
                 seed: int = 0, loss_chunk_size: int | None = DEFAULT_LOSS_CHUNK_SIZE):
        self.backbone = model.backbone
        self.loss_chunk_size = loss_chunk_size
        self.trainable_variables = list(self.backbone.trainable_variables)
        self.non_trainable_variables = list(self.backbone.non_trainable_variables)
        self.optimizer = optimizer
        self.trainable = [v.value for v in self.trainable_variables]
        self.non_trainable = [v.value for v in self.non_trainable_variables]
        if optimizer is not None:
            optimizer.build(self.trainable_variables)
            self.optimizer_state = [v.value for v in optimizer.variables]
            self._iterations_index = optimizer.variables.index(optimizer.iterations)
        self._dropout_root = jax.random.key(seed)
        self.last_gradient_norm: float | None = None  # of the latest train_step
        # On several devices, updated values keep their variables' layouts (else
        # the compiler picks its own, and the next step compiles again).
        keep_layouts = {} if keras.distribution.distribution() is None else {"out_shardings": (
            None, None, None, [value.sharding for value in self.trainable],
            [value.sharding for value in getattr(self, "optimizer_state", [])])}
        self._train_step = jax.jit(self._train_step_fn, **keep_layouts)
        self._loss_step = jax.jit(self.loss_fn)
        self._log_likelihood_step = jax.jit(self._log_likelihood_fn)

    # === Pure functions ===

    def token_log_probs(self, trainable, non_trainable, batch, training):
        """Log-probabilities of the target tokens at the gathered loss positions."""
        mapping = list(zip(self.trainable_variables, trainable)) + list(
            zip(self.non_trainable_variables, non_trainable)
        )
        with keras.StatelessScope(state_mapping=mapping):
            if "segment_ids" in batch:
                hidden = packed_forward.hidden_states(
                    self.backbone, batch["token_ids"], batch["segment_ids"], batch["positions"],
                    training=training,
                )
                # Loss positions index the flattened rows, one buffer per example.
                picked = hidden.reshape(-1, hidden.shape[-1])[batch["loss_positions"]]
            else:
                hidden = self.backbone(
                    {"token_ids": batch["token_ids"], "padding_mask": batch["padding_mask"]},
                    training=training,
                )
                picked = jnp.take_along_axis(hidden, batch["loss_positions"][..., None], axis=1)
            return self._label_log_probs(picked, batch["loss_labels"])

    def _label_log_probs(self, hidden, labels):
        """`log p(label)` from hidden states `[..., d]`, `loss_chunk_size` positions at a time."""
        embedding = self.backbone.token_embedding

        def log_probs_of(hidden, labels):
            logits = embedding(hidden, reverse=True)
            log_probs = jax.nn.log_softmax(logits.astype("float32"), axis=-1)
            return jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]

        count, chunk = labels.size, self.loss_chunk_size
        if not chunk or count <= chunk:
            return log_probs_of(hidden, labels)
        # Equal chunks of at most `chunk` rows, padded by fewer than one row per chunk.
        chunks = -(-count // chunk)
        size = -(-count // chunks)
        pad = chunks * size - count
        flat_hidden = jnp.pad(hidden.reshape(count, -1), ((0, pad), (0, 0)))
        flat_labels = jnp.pad(labels.reshape(count), (0, pad))
        # Checkpointing each chunk keeps its logits out of the saved residuals:
        # the backward pass recomputes them one chunk at a time.
        per_chunk = jax.lax.map(
            jax.checkpoint(lambda xs: log_probs_of(*xs)),
            (flat_hidden.reshape(chunks, size, -1), flat_labels.reshape(chunks, size)),
        )
        return per_chunk.reshape(-1)[:count].reshape(labels.shape)

    def loss_fn(self, trainable, non_trainable, batch, dropout_key=None):
        dropout = (contextlib.nullcontext() if dropout_key is None
                   else lora_dropout.dropout_keys(dropout_key))
        with dropout:
            token_loss = -self.token_log_probs(trainable, non_trainable, batch, training=True)
        weights = batch["loss_weights"]
        return jnp.sum(token_loss * weights) / jnp.maximum(jnp.sum(weights), 1.0)

    def _log_likelihood_fn(self, trainable, non_trainable, batch):
        log_probs = self.token_log_probs(trainable, non_trainable, batch, training=False)
        return jnp.sum(log_probs * batch["loss_weights"], axis=1)

    def _train_step_fn(self, trainable, non_trainable, optimizer_state, batch):
        # LoRA dropout masks depend on (seed, step) only: a resumed run draws the same ones.
        key = jax.random.fold_in(self._dropout_root, optimizer_state[self._iterations_index])
        loss, grads = jax.value_and_grad(self.loss_fn)(trainable, non_trainable, batch, key)
        finite = jnp.isfinite(loss) & jnp.all(
            jnp.array([jnp.all(jnp.isfinite(g)) for g in grads])
        )
        # The global norm before clipping (what `gradient_clip_norm` compares), for the logs.
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype("float32"))) for g in grads))
        new_trainable, new_state = self.optimizer.stateless_apply(optimizer_state, grads, trainable)
        # A non-finite loss or gradient leaves every value as it was.
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        return (loss, finite, norm, keep(new_trainable, trainable),
                keep(new_state, optimizer_state))

    # === Public steps ===

    def train_step(self, batch: dict[str, np.ndarray]) -> tuple[float, bool]:
        """One optimizer step on `batch`.

        Returns:
            The loss before the update, and whether the loss and every
            gradient were finite; when they were not, nothing was updated.
            The gradients' global norm (before clipping) is left in
            `last_gradient_norm`.
        """
        loss, finite, norm, self.trainable, self.optimizer_state = self._train_step(
            self.trainable, self.non_trainable, self.optimizer_state, shard_batch(batch)
        )
        self.last_gradient_norm = float(norm)
        return float(loss), bool(finite)

    def loss(self, batch: dict[str, np.ndarray]) -> tuple[float, float]:
        """Summed token loss and token count of `batch`, without updating."""
        mean = self._loss_step(self.trainable, self.non_trainable, shard_batch(batch))
        count = float(np.sum(batch["loss_weights"]))
        return float(mean) * count, count

    def log_likelihoods(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Per example, the summed log-probability of its weighted target tokens."""
        return np.asarray(self._log_likelihood_step(self.trainable, self.non_trainable, batch))

    def mean_loss(self, batches) -> float:
        """Mean loss per loss-bearing token over an iterable of batches."""
        total = count = 0.0
        for batch in batches:
            batch_total, batch_count = self.loss(batch)
            total, count = total + batch_total, count + batch_count
        return total / max(count, 1.0)

    def learning_rate(self) -> float:
        """The optimizer's current learning rate."""
        iterations = self.optimizer_state[self._iterations_index]
        schedule = self.optimizer._learning_rate
        return float(schedule(iterations) if callable(schedule) else schedule)

    def write_back(self) -> None:
        """Copy the step's variable values into the model and optimizer."""
        for variable, value in zip(self.trainable_variables, self.trainable):
            variable.assign(value)
        if self.optimizer is not None:
            for variable, value in zip(self.optimizer.variables, self.optimizer_state):
                variable.assign(value)

    def is_bound_to(self, model: keras.Model) -> bool:
        """Whether these steps run `model`'s backbone with the same variables.

        False once LoRA was enabled (or variables otherwise added, removed
        or frozen) since the steps were built: their compiled functions no
        longer fit the model.

        Args:
            model: a KerasHub `CausalLM`.

        Returns:
            True when the steps can be reused for `model`.
        """
        backbone = getattr(model, "backbone", None)
        ids = lambda variables: [id(variable) for variable in variables]
        return (backbone is self.backbone
                and ids(backbone.trainable_variables) == ids(self.trainable_variables)
                and ids(backbone.non_trainable_variables) == ids(self.non_trainable_variables))

    def read_variables(self) -> None:
        """Re-read the variables' values into the steps (after training or loading elsewhere)."""
        self.trainable = [v.value for v in self.trainable_variables]
        self.non_trainable = [v.value for v in self.non_trainable_variables]

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Trainable values and optimizer state as named numpy arrays."""
        arrays = self.trainable_values()
        for index, value in enumerate(self.optimizer_state):
            arrays[f"optimizer/{index:04d}"] = np.asarray(value)
        return arrays

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore values saved by `state_arrays` (sizes must match)."""
        # Reshape: safetensors may store a scalar such as the step counter as [1].
        self.trainable = [
            jnp.asarray(arrays[v.path]).reshape(old.shape)
            for v, old in zip(self.trainable_variables, self.trainable)
        ]
        self.optimizer_state = [
            jnp.asarray(arrays[f"optimizer/{index:04d}"]).reshape(old.shape)
            for index, old in enumerate(self.optimizer_state)
        ]

    def trainable_values(self) -> dict[str, np.ndarray]:
        """Current trainable values as numpy arrays keyed by variable path."""
        return {v.path: np.asarray(value) for v, value in zip(self.trainable_variables, self.trainable)}

