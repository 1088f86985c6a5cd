"""A non-finite loss or gradient stops training without applying that step.

Three poisons reach the real compiled step (`training.CompiledSteps`): a
NaN loss and gradient, an infinite loss under finite gradients (both through
the batch's loss weights), and a NaN gradient under a finite loss. For the
last, `PoisonableSteps` adds `0·sqrt(p·s²)` to the loss, with `s` the sum of
the first trainable variable (a LoRA A matrix: random, so `s != 0`) and `p`
the batch's `POISON` entry: the term is worth exactly 0, and its gradient is
`0·sign(s) = 0` when `p = 1` but `0·∞ = NaN` when `p = 0`. Every training
batch holds the entry, so one compiled step serves clean and poisoned batches
alike. After a poisoned step, every trainable value and every optimizer
variable (the iteration count among them) must be bit-identical to before it.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from gemma_lora import lora
from gemma_lora import training
from gemma_lora.config import RunConfig
from gemma_lora.testing import build_tiny_gemma3
from gemma_lora.training import batching
from gemma_lora.training import checkpoint
from gemma_lora.training import loop

POISON = "poison"


class PoisonableSteps(training.CompiledSteps):
    """The real steps, plus the `POISON` term (see above); records every train step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.record = []  # (state before, state after, loss, finite) per train_step

    def loss_fn(self, trainable, non_trainable, batch, dropout_key=None):
        clean = {key: value for key, value in batch.items() if key != POISON}
        loss = super().loss_fn(trainable, non_trainable, clean, dropout_key)
        if POISON not in batch:
            return loss
        return loss + 0.0 * jnp.sqrt(batch[POISON] * jnp.square(jnp.sum(trainable[0])))

    def train_step(self, batch):
        before = self.state_arrays()
        loss, finite = super().train_step(batch)
        self.record.append((before, self.state_arrays(), loss, finite))
        return loss, finite


def clean(batch: dict) -> dict:
    """`batch` with the `POISON` entry that leaves its loss and gradients as they are."""
    return dict(batch, **{POISON: np.float32(1.0)})


def poison(batch: dict, kind: str) -> dict:
    """`batch` made to give a NaN loss, an infinite loss, or a NaN gradient with a finite loss."""
    batch = clean(batch)
    weights = batch["loss_weights"]
    if kind == "nan loss":
        return dict(batch, loss_weights=weights * np.nan)
    if kind == "inf loss":  # Σ loss·w overflows to inf while Σ w stays finite
        share = np.finfo(np.float32).max / np.count_nonzero(weights)
        return dict(batch, loss_weights=np.where(weights > 0, share, 0.0).astype(np.float32))
    return dict(batch, **{POISON: np.float32(0.0)})


def assert_bit_identical(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for name in before:
        assert before[name].dtype == after[name].dtype, name
        assert before[name].tobytes() == after[name].tobytes(), name


def iterations(steps: training.CompiledSteps) -> int:
    optimizer = steps.optimizer
    return int(steps.optimizer_state[optimizer.variables.index(optimizer.iterations)])


@pytest.fixture(scope="module")
def stepped(tiny_tokenizer_proto, color_examples):
    """Tiny-model steps after one finite step (moments, iteration count non-zero), a batch."""
    model = build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48)
    lora.enable_lora(model, lora.LoraConfig(rank=4, alpha=8))
    split = batching.tokenize(model.preprocessor, color_examples["train"], 48)
    batch = batching.make_batch(split, np.arange(8), buckets=(48,),
                                loss_buffer=batching.loss_buffer_size(split))
    steps = PoisonableSteps(model, training.make_optimizer(RunConfig(warmup_steps=0), 10))
    loss, finite = steps.train_step(clean(batch))
    assert finite and np.isfinite(loss) and iterations(steps) == 1
    return steps, batch


@pytest.mark.parametrize("kind", ["nan loss", "inf loss", "nan gradient"])
def test_non_finite_step_leaves_every_value_and_the_step_count_as_they_were(stepped, kind):
    steps, batch = stepped
    loss, finite = steps.train_step(poison(batch, kind))
    before, after, _, _ = steps.record[-1]
    assert finite is False
    assert_bit_identical(before, after)
    assert iterations(steps) == 1
    # Each poison trips its own check: both, the loss's alone, the gradient's alone.
    assert np.isfinite(loss) == (kind == "nan gradient")
    assert np.isfinite(steps.last_gradient_norm) == (kind == "inf loss")


def test_train_stops_at_a_non_finite_gradient_without_applying_it(
        tiny_causal_lm, color_examples, tmp_path, monkeypatch):
    # The loop stops on the step's `finite` flag, whichever check cleared it;
    # a NaN gradient under a finite loss is the case a loss check alone would miss.
    real_batches = batching.training_batches

    def poisoned(*args, **kwargs):
        for step, batch in enumerate(real_batches(*args, **kwargs), start=1):
            yield poison(batch, "nan gradient") if step == 7 else clean(batch)

    built = []
    monkeypatch.setattr(batching, "training_batches", poisoned)
    monkeypatch.setattr(loop, "CompiledSteps",
                        lambda *args, **kwargs: built.append(PoisonableSteps(*args, **kwargs))
                        or built[-1])
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8))
    config = RunConfig(max_steps=20, eval_every=5, batch_size=8, sequence_length=48,
                       learning_rate=3e-2, warmup_steps=2, eval_batch_size=8, run_dir=str(tmp_path))
    lines = []
    result = training.train(tiny_causal_lm, config, color_examples["train"],
                            color_examples["validation"], log=lines.append)
    (steps,) = built
    assert (result.diverged_at, result.steps, result.best_step) == (7, 6, 5)
    assert [row["step"] for row in result.history] == list(range(7))
    assert len(steps.record) == 7
    before, after, loss, finite = steps.record[6]
    assert not finite and np.isfinite(loss)
    assert_bit_identical(before, after)  # step 7 applied nothing ...
    assert iterations(steps) == 6
    assert_bit_identical(steps.record[5][1], steps.state_arrays())  # ... and step 6 is the last
    assert lines[-1] == (
        f"Step 7: the loss or a gradient is not finite (loss {loss}); stopped without applying "
        "it. The best adapter (step 5) and the last checkpoint are kept. Try a lower "
        "learning_rate, dtype='float32', or a smaller gradient_clip_norm.")
    # The model holds the best adapter (step 5), as saved; the last checkpoint is step 5's.
    saved = load_file(str(tmp_path / "adapter" / lora.ADAPTER_WEIGHTS))
    best = load_file(str(checkpoint.latest(tmp_path) / checkpoint.ARRAYS_FILE))
    assert checkpoint.latest(tmp_path).name == "step-000005"
    for key, value in lora.lora_weights(tiny_causal_lm).items():
        np.testing.assert_array_equal(value, saved[key])
        np.testing.assert_array_equal(value, best[f"best/{key}"])
