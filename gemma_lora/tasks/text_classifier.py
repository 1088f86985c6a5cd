"""LoRA on a KerasHub `TextClassifier` (BERT, DistilBERT, RoBERTa, ...).

The LoRA helpers in `lora` work on any KerasHub text backbone: BERT-family
encoders name their attention projections `query`, `key`, `value` and
`attention_output`, like Gemma. For a classifier, `lora.enable_lora` freezes
the backbone and adds LoRA to its attention, while the classification head
(outside the backbone, freshly initialised for the task's labels) stays fully
trainable, as PEFT's `modules_to_save` does. Training is Keras' own `fit`,
with the run's AdamW schedule, validation loss every `eval_every` steps,
early stopping and the best adapter kept, so the run writes the same
`history.csv` and `adapter/` as a causal-LM run; the head's weights are saved
next to the LoRA weights, as `head.safetensors`.

Example (downloads DistilBERT and trains for minutes)::

    model = load_text_classifier("distil_bert_base_en_uncased", num_classes=2)
    lora.enable_lora(model, lora.LoraConfig(rank=8))
    result = train_text_classifier(model, config, train_records, val_records, labels)
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import keras
import keras_hub
import numpy as np
from safetensors.numpy import load_file
from safetensors.numpy import save_file

from gemma_lora import data
from gemma_lora import lora
from gemma_lora import training
from gemma_lora.config import RunConfig
from gemma_lora.errors import ModelError

HEAD_WEIGHTS = "head.safetensors"


def is_text_classifier_preset(preset: str) -> bool:
    """Whether `preset` is a KerasHub text classifier rather than a causal LM.

    Args:
        preset: a KerasHub preset name, or a local folder written by
            `save_to_preset`.

    Returns:
        `True` for a preset name that only `TextClassifier` knows (e.g.
        `"distil_bert_base_en_uncased"`) or a folder whose `task.json` is a
        `TextClassifier`; `False` otherwise (causal LMs, handles, Hugging
        Face folders).

    Example:
    >>> is_text_classifier_preset("distil_bert_base_en_uncased")
    True
    >>> is_text_classifier_preset("gemma3_270m")
    False
    """
    folder = Path(preset).expanduser()
    if folder.is_dir():
        task_file = folder / "task.json"
        if not task_file.is_file():
            return False
        class_name = json.loads(task_file.read_text(encoding="utf-8")).get("class_name", "")
        task_class = keras.saving.get_registered_object(f"keras_hub>{class_name}")
        return isinstance(task_class, type) and issubclass(
            task_class, keras_hub.models.TextClassifier)
    return (preset in keras_hub.models.TextClassifier.presets
            and preset not in keras_hub.models.CausalLM.presets)


def load_text_classifier(
    preset: str,
    num_classes: int,
    dtype: str = "float32",
    sequence_length: int | None = None,
) -> keras_hub.models.TextClassifier:
    """Load a KerasHub text classifier with a head for `num_classes` labels.

    Args:
        preset: a KerasHub classifier preset name (downloaded from Kaggle) or
            a local folder written by `save_to_preset`.
        num_classes: number of labels.
        dtype: the Keras dtype policy name.
        sequence_length: tokens per text (longer texts are truncated);
            `None` keeps the preset's.

    Returns:
        A `keras_hub.models.TextClassifier` with its preprocessor.

    Raises:
        ModelError: the preset cannot be found, downloaded or loaded.

    Example (downloads the preset from Kaggle)::

        model = load_text_classifier("distil_bert_base_en_uncased", 2)
    """
    try:
        model = keras_hub.models.TextClassifier.from_preset(
            preset, num_classes=num_classes, dtype=dtype)
    except (OSError, ValueError, KeyError) as error:
        raise ModelError(
            f"Could not load a text classifier from preset {preset!r}: {error}. Give a "
            "KerasHub classifier preset name (e.g. 'distil_bert_base_en_uncased', "
            "downloaded from Kaggle) or a folder written by `save_to_preset`."
        ) from error
    if sequence_length is not None:
        model.preprocessor.sequence_length = sequence_length
    return model


def predict_labels(
    model: keras_hub.models.TextClassifier,
    texts: Sequence[str],
    labels: Sequence[str],
    batch_size: int = 16,
) -> list[str]:
    """The most likely label of each text.

    Args:
        model: a text classifier whose classes are `labels`, in order.
        texts: the texts to classify.
        labels: the label names.
        batch_size: texts per forward pass.

    Returns:
        One label per text.

    Example:
    >>> from gemma_lora.testing import tiny_text_classifier
    >>> model = tiny_text_classifier(num_classes=2)  # random weights: it guesses
    >>> predictions = predict_labels(model, ["I loved it.", "Awful."], ["negative", "positive"])
    >>> len(predictions), set(predictions) <= {"negative", "positive"}
    (2, True)
    """
    if model.num_classes != len(labels):
        raise ModelError(
            f"The classifier has {model.num_classes} classes but there are "
            f"{len(labels)} labels {list(labels)}; load it with num_classes={len(labels)}."
        )
    logits = model.predict(list(texts), batch_size=batch_size, verbose=0)
    return [labels[i] for i in np.argmax(logits, axis=-1)]


def head_weights(model: keras_hub.models.TextClassifier) -> dict[str, np.ndarray]:
    """The trainable weights outside the backbone (the head), keyed by path."""
    backbone_paths = {weight.path for weight in model.backbone.weights}
    return {weight.path: np.asarray(keras.ops.convert_to_numpy(weight))
            for weight in model.trainable_weights if weight.path not in backbone_paths}


def save_head(model: keras_hub.models.TextClassifier, adapter_dir: str | os.PathLike) -> Path:
    """Save the head's weights into an adapter folder, atomically.

    Args:
        model: the trained classifier.
        adapter_dir: the folder `lora.save_adapter` wrote.

    Returns:
        The written file.
    """
    path = Path(adapter_dir) / HEAD_WEIGHTS
    tmp = path.with_name(f".{HEAD_WEIGHTS}.tmp")
    save_file(head_weights(model), str(tmp))
    os.replace(tmp, path)
    return path


def load_head(model: keras_hub.models.TextClassifier, adapter_dir: str | os.PathLike) -> None:
    """Load head weights saved by `save_head` (after `lora.load_adapter`).

    Raises:
        ModelError: the file is missing or its weights do not fit the head.

    Example:
    >>> import tempfile; adapter_dir = tempfile.mkdtemp()
    >>> from gemma_lora.testing import tiny_text_classifier
    >>> trained, fresh = tiny_text_classifier(seed=0), tiny_text_classifier(seed=1)
    >>> save_head(trained, adapter_dir).name
    'head.safetensors'
    >>> load_head(fresh, adapter_dir)  # after lora.load_adapter(fresh, adapter_dir)
    >>> all((head_weights(fresh)[k] == v).all() for k, v in head_weights(trained).items())
    True
    """
    path = Path(adapter_dir) / HEAD_WEIGHTS
    if not path.is_file():
        raise ModelError(f"{str(path)!r} is missing: this adapter has no classifier head.")
    saved = load_file(str(path))
    weights = {weight.path: weight for weight in model.weights if weight.path in saved}
    if set(saved) != set(weights):
        raise ModelError(
            f"{path}: head weights {sorted(set(saved) - set(weights))} are not in this model.")
    for key, weight in weights.items():
        if tuple(saved[key].shape) != tuple(weight.shape):
            raise ModelError(f"{path}: {key} has shape {saved[key].shape}, "
                             f"the model expects {tuple(weight.shape)}.")
        weight.assign(saved[key])


class _TrainingMonitor(keras.callbacks.Callback):
    """History rows, the best adapter and early stopping, as `train.train` does.

    Keras reports a step's `loss` as the mean since the last validation, so
    that is what the history's `loss` column holds on this path.
    """

    def __init__(self, config: RunConfig, schedule: training.WarmupDecay, total_steps: int,
                 first_val_loss: float, log: Callable[[str], None]):
        super().__init__()
        self.config = config
        self.schedule = schedule
        self.total_steps = total_steps
        self.history = [{"step": 0, "loss": None, "learning_rate": 0.0,
                         "val_loss": first_val_loss}]
        self.best_val_loss, self.best_step, self.best_values = first_val_loss, 0, None
        self.evals_without_improvement = 0
        self.stopped_early = False
        self.log = log

    def on_train_batch_end(self, batch, logs=None):
        step = self.history[-1]["step"] + 1
        self.history.append({"step": step, "loss": float(logs["loss"]),
                             "learning_rate": float(self.schedule(step - 1)), "val_loss": None})
        if step == self.total_steps:  # ends the epoch here; its validation still runs
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        row = self.history[-1]
        row["val_loss"] = float(logs["val_loss"])
        improved = row["val_loss"] < self.best_val_loss or self.best_values is None
        if improved:
            self.best_val_loss, self.best_step = row["val_loss"], row["step"]
            self.best_values = [np.asarray(w.value) for w in self.model.trainable_weights]
            adapter_dir = lora.save_adapter(self.model, Path(self.config.run_dir) / training.ADAPTER_DIR,
                                            self.config.preset)
            save_head(self.model, adapter_dir)
            self.evals_without_improvement = 0
        else:
            self.evals_without_improvement += 1
        training.write_history(self.history, Path(self.config.run_dir) / training.HISTORY_FILE)
        self.log(f"step {row['step']:>5} | loss {row['loss']:.4f} | val_loss "
                 f"{row['val_loss']:.4f}{' *' if improved else ''}")
        if self.evals_without_improvement > self.config.patience:
            self.stopped_early = self.model.stop_training = True
            self.log(f"Early stopping: no improvement for {self.evals_without_improvement} "
                     "evaluations.")


def train_text_classifier(
    model: keras_hub.models.TextClassifier,
    config: RunConfig,
    train_records: Sequence[data.Record],
    validation_records: Sequence[data.Record],
    labels: Sequence[str],
    log: Callable[[str], None] = print,
) -> training.TrainResult:
    """Fine-tune a LoRA-enabled text classifier and keep the best adapter.

    Args:
        model: a `TextClassifier` after `lora.enable_lora`.
        config: the run's parameters (`batch_size`, `learning_rate`,
            `max_steps`/`epochs`, `eval_every`, `patience`, ...).
        train_records: labelled records (`input` = text, `output` = label).
        validation_records: records for the validation loss.
        labels: the label set; class `i` is `labels[i]`.
        log: where progress lines go.

    Returns:
        A `training.TrainResult`; `history.csv` and `adapter/` (LoRA weights and
        `head.safetensors`) are in `config.run_dir`.

    Example (trains for minutes on a real classifier)::

        lora.enable_lora(model, lora.LoraConfig(rank=8))
        result = train_text_classifier(model, config, splits.train, splits.validation,
                                       ["negative", "positive"])
    """
    import tensorflow as tf

    classes = {label: i for i, label in enumerate(labels)}

    def dataset(records: Sequence[data.Record]) -> tf.data.Dataset:
        texts = [record.input for record in records]
        targets = np.array([classes[record.output] for record in records], dtype="int32")
        return tf.data.Dataset.from_tensor_slices((texts, targets))

    Path(config.run_dir).mkdir(parents=True, exist_ok=True)
    total_steps = config.training_steps(len(train_records))
    schedule = training.WarmupDecay(config.learning_rate, config.warmup_steps, total_steps,
                                    config.lr_schedule)
    model.compile(
        optimizer=training.make_optimizer(config, total_steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    validation = dataset(validation_records).batch(config.eval_batch_size)
    start = time.perf_counter()
    first_val_loss = float(model.evaluate(validation, verbose=0, return_dict=True)["loss"])
    log(f"Training {total_steps} steps of {config.batch_size} examples; validation every "
        f"{config.eval_every} steps (before training: val_loss {first_val_loss:.4f}).")
    monitor = _TrainingMonitor(config, schedule, total_steps, first_val_loss, log)
    batches = (dataset(train_records).shuffle(len(train_records), seed=config.seed)
               .repeat().batch(config.batch_size, drop_remainder=True))
    model.fit(batches, validation_data=validation, steps_per_epoch=config.eval_every,
              epochs=math.ceil(total_steps / config.eval_every), callbacks=[monitor],
              shuffle=False, verbose=0)
    if monitor.best_values is not None:
        for weight, value in zip(model.trainable_weights, monitor.best_values):
            weight.assign(value)
    return training.TrainResult(
        history=monitor.history,
        best_step=monitor.best_step,
        best_val_loss=monitor.best_val_loss,
        steps=monitor.history[-1]["step"],
        stopped_early=monitor.stopped_early,
        diverged_at=None,
        seconds=time.perf_counter() - start,
        adapter_dir=Path(config.run_dir) / training.ADAPTER_DIR,
    )
