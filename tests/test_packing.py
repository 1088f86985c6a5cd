"""Packed rows keep their examples apart: same log-probs, loss and gradients as unpacked."""

import jax
import numpy as np
import pytest

from gemma_lora.training import batching
from gemma_lora import lora
from gemma_lora import models
from gemma_lora import testing
from gemma_lora.training import packed_forward
from gemma_lora import training
from gemma_lora.config import RunConfig
from gemma_lora.errors import ConfigError
from gemma_lora.training import CompiledSteps
from tests.conftest import COLORS, ITEMS

ROW = 128


def _varied_examples(count: int, seed: int) -> dict:
    """Color requests of 1 to 4 sentences and 1 to 3 word answers: varied lengths."""
    rng = np.random.default_rng(seed)
    prompts, responses = [], []
    for _ in range(count):
        color, item = rng.choice(COLORS), rng.choice(ITEMS)
        request = " ".join([f"Please send one {color} {item}."] * int(rng.integers(1, 5)))
        prompts.append(f"### Instruction:\nWhich color is wanted?\n\n### Input:\n{request}"
                       "\n\n### Response:\n")
        responses.append(" ".join([color, item, "please"][: int(rng.integers(1, 4))]))
    return {"prompts": prompts, "responses": responses}


@pytest.fixture
def six_block_model(tiny_tokenizer_proto):
    """Tiny Gemma 3 with six blocks: five sliding-window layers (window 16), one global."""
    return testing.build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=ROW, num_layers=6)


def _with_random_lora(model, quantize=None):
    if quantize:
        models.quantize_base(model, quantize)
    lora.enable_lora(model, lora.LoraConfig(rank=4, alpha=8, target_layers="all-linear"))
    rng = np.random.default_rng(0)
    for variable in model.trainable_weights:  # non-zero B, so LoRA matters
        variable.assign(rng.normal(size=variable.shape).astype("float32") * 0.1)
    return model


def _log_probs(steps, batch):
    return np.asarray(steps.token_log_probs(steps.trainable, steps.non_trainable, batch,
                                             training=False))


def _batches(model, count=8):
    split = batching.tokenize(model.preprocessor, _varied_examples(count, seed=0), ROW)
    indices = np.arange(count)
    buffer = batching.loss_buffer_size(split)
    packed = batching.make_packed_batch(split, indices, ROW, buffer)
    unpacked = batching.make_batch(split, indices, batching.bucket_lengths(ROW), buffer)
    return split, packed, unpacked


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_each_packed_example_gets_its_unpacked_log_probs(six_block_model, quantize):
    model = _with_random_lora(six_block_model, quantize)
    windows = [block.attention.use_sliding_window_attention
               for block in model.backbone.transformer_layers]
    assert any(windows) and not all(windows)  # both kinds of layer are checked
    split, packed, unpacked = _batches(model)
    window = model.backbone.sliding_window_size
    assert len(set(split.lengths.tolist())) > 3
    assert packed["token_ids"].shape[0] < 8 and packed["segment_ids"].max() >= 3
    # Some loss tokens lie beyond the window, where it changes what they see.
    assert (unpacked["loss_positions"][unpacked["loss_weights"] > 0] > window).any()

    steps = CompiledSteps(model, loss_chunk_size=None)
    alone, together = _log_probs(steps, unpacked), _log_probs(steps, packed)
    weighted = unpacked["loss_weights"] > 0
    np.testing.assert_allclose(together[weighted], alone[weighted], rtol=1e-5, atol=1e-5)


def test_changing_one_example_leaves_its_row_neighbours_unchanged(six_block_model):
    model = _with_random_lora(six_block_model)
    _, packed, _ = _batches(model)
    steps = CompiledSteps(model, loss_chunk_size=None)
    row = int(np.argmax(packed["segment_ids"].max(axis=1)))  # the fullest row
    first = (packed["segment_ids"][row] == 1)
    changed = dict(packed, token_ids=packed["token_ids"].copy())
    changed["token_ids"][row, first] = np.random.default_rng(1).integers(
        10, 500, size=int(first.sum()))

    # Which examples are in `row`, and which of them is segment 1.
    flat_start = packed["loss_positions"][:, 0]
    in_row = flat_start // ROW == row
    segment = packed["segment_ids"].reshape(-1)[flat_start]
    mine, neighbours = in_row & (segment == 1), in_row & (segment > 1)
    assert mine.sum() == 1 and neighbours.sum() >= 2
    weights = packed["loss_weights"] > 0

    theirs, own = neighbours[:, None] & weights, mine[:, None] & weights
    before, after = _log_probs(steps, packed), _log_probs(steps, changed)
    np.testing.assert_allclose(after[theirs], before[theirs], rtol=0, atol=1e-6)
    assert not np.allclose(after[own], before[own], atol=1e-4)

    # The check can fail: with one segment per row the neighbours do see the change.
    leaky = {**packed, "segment_ids": (packed["segment_ids"] > 0).astype("int32")}
    leaky_changed = {**changed, "segment_ids": leaky["segment_ids"]}
    assert not np.allclose(_log_probs(steps, leaky_changed)[theirs],
                           _log_probs(steps, leaky)[theirs], atol=1e-4)


def test_packed_batch_loss_and_gradients_equal_the_unpacked_batch(six_block_model):
    model = _with_random_lora(six_block_model)
    _, packed, unpacked = _batches(model)
    steps = CompiledSteps(model, loss_chunk_size=None)
    grad = jax.value_and_grad(steps.loss_fn)
    loss, grads = grad(steps.trainable, steps.non_trainable, unpacked)
    packed_loss, packed_grads = grad(steps.trainable, steps.non_trainable, packed)
    np.testing.assert_allclose(float(packed_loss), float(loss), rtol=1e-6)
    assert len(grads) == len(packed_grads) > 20  # every LoRA matrix of six blocks
    for expected, actual in zip(grads, packed_grads):
        np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(steps.log_likelihoods(packed), steps.log_likelihoods(unpacked),
                               rtol=1e-5)


def test_training_with_packing_takes_the_same_steps(tiny_tokenizer_proto, tmp_path):
    examples = _varied_examples(48, seed=3)
    train_examples = {k: v[:40] for k, v in examples.items()}
    validation = {k: v[40:] for k, v in examples.items()}
    histories = []
    for packing in (False, True):
        model = testing.build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=ROW, seed=0)
        lora.enable_lora(model, lora.LoraConfig(rank=4, alpha=8))
        config = RunConfig(max_steps=6, eval_every=3, batch_size=8, sequence_length=ROW,
                           learning_rate=3e-2, warmup_steps=1, eval_batch_size=8, packing=packing,
                           run_dir=str(tmp_path / f"packing-{packing}"))
        result = training.train(model, config, train_examples, validation, log=lambda line: None)
        histories.append(result.history)
    unpacked, packed = histories
    assert [row["step"] for row in packed] == list(range(7))
    for key in ("loss", "val_loss"):
        expected = [row[key] for row in unpacked if row[key] is not None]
        actual = [row[key] for row in packed if row[key] is not None]
        assert len(actual) == len(expected) > 2
        np.testing.assert_allclose(actual, expected, rtol=1e-4)
    assert unpacked[-1]["loss"] < unpacked[1]["loss"]  # the weights did move


def test_packing_refuses_a_backbone_it_cannot_mask():
    import keras_hub

    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=64, num_layers=1, num_query_heads=1, num_key_value_heads=1,
        hidden_dim=16, intermediate_dim=32, head_dim=16)
    with pytest.raises(ConfigError, match="packing=True needs a text-only, causal Gemma 3"):
        packed_forward.check_packing_supported(backbone)


def test_packing_option_is_validated():
    assert RunConfig(packing=True).packing
    with pytest.raises(ConfigError, match="packing must be True or False"):
        RunConfig(packing="yes")
