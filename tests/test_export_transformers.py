"""Deployment exports: the merged model as a Hugging Face folder, and PEFT adapters for vLLM.

The reference is the runtime that reads the files: transformers loads the
folder (`AutoModelForCausalLM`, `AutoTokenizer`, `apply_chat_template`) and
PEFT loads the adapters; their log-probabilities over the whole vocabulary,
tokens and greedy answers are compared with the Keras model's. Tests that
load with PyTorch need torch, transformers and peft (`requirements-interop.txt`)
and are skipped without them.
"""

import json
import os

import numpy as np
import pytest

from gemma_lora import export
from gemma_lora import lora
from gemma_lora.data import conversation_segments, make_conversation
from gemma_lora.errors import ConfigError, ModelError
from gemma_lora.export import vllm
from gemma_lora.lora import peft as hf_interop
from gemma_lora.lora import peft_layout
from gemma_lora.testing.serving import log_softmax
from gemma_lora.testing.serving import randomize_lora
from tests.export_helpers import TOKEN_IDS
from tests.export_helpers import TOLERANCE
from tests.export_helpers import gemma_proto  # noqa: F401 (a fixture)
from tests.export_helpers import interop_modules
from tests.export_helpers import keras_log_probs
from tests.export_helpers import tiny  # noqa: F401 (a fixture)

ALL_TARGETS = tuple(hf_interop.KERAS_TO_PEFT)


@pytest.fixture(scope="module")
def hf_stack():
    """(torch, transformers, peft), or skip when the interop extras are missing."""
    return interop_modules("torch", "transformers", "peft")


def _hf_log_probs(torch, model, ids=TOKEN_IDS):
    with torch.no_grad():
        logits = model(input_ids=torch.as_tensor(np.asarray(ids))).logits
    return log_softmax(logits.double().numpy())


# === The Hugging Face folder ===


def test_merged_folder_loads_in_transformers_with_the_same_log_probs(hf_stack, tiny, tmp_path):
    torch, transformers, _ = hf_stack
    base_log_probs = keras_log_probs(tiny)
    lora.enable_lora(tiny, lora.LoraConfig(rank=4, alpha=8, target_layers=ALL_TARGETS))
    randomize_lora(tiny)
    tuned_log_probs = keras_log_probs(tiny)
    assert np.abs(tuned_log_probs - base_log_probs).max() > 100 * TOLERANCE  # LoRA matters

    folder = export.export_transformers_folder(tiny, tmp_path / "hf")
    assert lora.lora_layers(tiny)  # the model keeps its adapter
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), attn_implementation="eager").eval()
    assert hf.dtype == torch.float32
    difference = np.abs(_hf_log_probs(torch, hf) - tuned_log_probs).max()
    print(f"tiny float32 export: max |log p(Keras) - log p(transformers)| = {difference:.2e}")
    assert difference <= TOLERANCE
    config = hf.config
    assert config.max_position_embeddings == 32768
    assert {kind: params["rope_type"] for kind, params in config.rope_parameters.items()} == {
        "sliding_attention": "default", "full_attention": "default"}
    tokenizer = tiny.preprocessor.tokenizer
    assert hf.generation_config.eos_token_id == [tokenizer.end_token_id,
                                                 tokenizer.token_to_id("<end_of_turn>")]

    bf16_folder = export.export_transformers_folder(tiny, tmp_path / "hf_bf16", dtype="bfloat16")
    bf16 = transformers.AutoModelForCausalLM.from_pretrained(str(bf16_folder), dtype="auto")
    assert bf16.dtype == torch.bfloat16
    assert json.loads((bf16_folder / "config.json").read_text())["torch_dtype"] == "bfloat16"
    # The bfloat16 weights are the float32 export's, rounded by PyTorch itself.
    for name, weight in bf16.state_dict().items():
        torch.testing.assert_close(weight, hf.state_dict()[name].to(torch.bfloat16),
                                   atol=0, rtol=0)
    bf16_difference = np.abs(_hf_log_probs(torch, bf16.float()) - tuned_log_probs).max()
    print(f"tiny bfloat16 export (random rank-4 LoRA on all layers): max |Δ log p| = "
          f"{bf16_difference:.2e}")


def test_tokenizer_and_chat_template_match_ours(hf_stack, tiny, tmp_path):
    _, transformers, _ = hf_stack
    folder = export.export_transformers_folder(tiny, tmp_path / "hf")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    keras_tokenizer = tiny.preprocessor.tokenizer
    for text in ["Please send one red mug.", "  two  spaces\nand a new line ",
                 "<start_of_turn>user\nWhich color?<end_of_turn>\n", "café 3 hats!"]:
        assert hf_tokenizer(text, add_special_tokens=False).input_ids == \
            np.asarray(keras_tokenizer(text)).tolist(), text

    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": " Hi! "},
                {"role": "assistant", "content": "Hello. "},
                {"role": "user", "content": "Which color?"},
                {"role": "assistant", "content": "red"}]
    ours = conversation_segments(make_conversation({"messages": messages}, "chat.jsonl:1"))
    assert hf_tokenizer.apply_chat_template(messages, tokenize=False) == \
        "<bos>" + "".join(text for text, _ in ours)
    prompt = conversation_segments(make_conversation({"messages": messages}, "chat.jsonl:1"),
                                   generation_prompt=True)
    assert hf_tokenizer.apply_chat_template(messages[:-1], tokenize=False,
                                            add_generation_prompt=True) == \
        "<bos>" + "".join(text for text, _ in prompt)


def test_models_the_folder_cannot_hold_are_refused(tiny_causal_lm, gemma_proto, tmp_path):
    import keras_hub

    from gemma_lora.models import quantize_base
    from gemma_lora.testing import build_tiny_gemma3

    gemma2 = keras_hub.models.GemmaCausalLM(backbone=keras_hub.models.GemmaBackbone(
        vocabulary_size=64, num_layers=1, num_query_heads=1, num_key_value_heads=1,
        hidden_dim=16, intermediate_dim=32, head_dim=16, query_head_dim_normalize=False,
        use_post_ffw_norm=True, use_post_attention_norm=True, final_logit_soft_cap=30,
        attention_logit_soft_cap=50, use_sliding_window_attention=True), preprocessor=None)
    with pytest.raises(ModelError, match="Hugging Face export supports Gemma 3 models; this "
                                         "model's backbone is GemmaBackbone"):
        export.export_transformers_folder(gemma2, tmp_path / "hf")
    # The conftest tiny model's SentencePiece model adds a dummy prefix and NFKC-normalizes.
    with pytest.raises(ModelError, match="normalizes text unlike Gemma's .*'add_dummy_prefix': "
                                         "True"):
        export.export_transformers_folder(tiny_causal_lm, tmp_path / "hf")
    quantized = build_tiny_gemma3(gemma_proto, sequence_length=48)
    quantize_base(quantized, "int8")
    lora.enable_lora(quantized, lora.LoraConfig(rank=2))
    with pytest.raises(ModelError, match=r"quantized \(int8 in 15 layers.*without their scales.*"
                                         "without quantization"):
        export.export_transformers_folder(quantized, tmp_path / "hf")
    with pytest.raises(ModelError, match=r"quantized \(int8 .*export_gguf writes float weights"):
        export.export_gguf(quantized, tmp_path / "model.gguf", "q8_0")
    with pytest.raises(ConfigError, match="dtype"):
        export.export_transformers_folder(quantized, tmp_path / "hf", dtype="int8")
    assert not (tmp_path / "hf").exists() and not (tmp_path / "model.gguf").exists()


def test_export_is_atomic(tiny, tmp_path, monkeypatch):
    from keras_hub.src.utils.transformers.export import hf_exporter

    target = tmp_path / "hf"
    target.mkdir()
    (target / "old.txt").write_text("a previous export")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("interrupted after the weights were written")

    with monkeypatch.context() as patch:
        patch.setattr(hf_exporter, "export_tokenizer", interrupted)
        with pytest.raises(KeyboardInterrupt):
            export.export_transformers_folder(tiny, target)
        with pytest.raises(KeyboardInterrupt):
            export.export_transformers_folder(tiny, tmp_path / "new")
    assert [path.name for path in target.iterdir()] == ["old.txt"]  # untouched
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hf"]  # no half-written folder
    # Like lora.export_peft_adapter, a complete export replaces the folder.
    export.export_transformers_folder(tiny, target)
    assert "old.txt" not in os.listdir(target) and "model.safetensors" in os.listdir(target)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hf"]


# === PEFT adapters for vLLM ===


def _exact_updates(model):
    """`{PEFT module name: scale * update}` in Hugging Face `[out, in]` layout, from Keras."""
    backbone = model.backbone
    updates = {}
    for index in range(backbone.num_layers):
        for name, layer in hf_interop.block_layers(backbone, index).items():
            if layer.lora_enabled:
                group, peft_name, layout = hf_interop.KERAS_TO_PEFT[name]
                update = float(layer.lora_alpha) / layer.lora_rank * np.matmul(
                    np.asarray(layer.lora_kernel_a, np.float64),
                    np.asarray(layer.lora_kernel_b, np.float64))
                updates[f"model.layers.{index}.{group}.{peft_name}"] = \
                    peft_layout.keras_to_hf_kernel(update, layout)
    return updates


def _loaded_updates(tuned):
    """`{module name: scaling * lora_B @ lora_A}` as the loaded PEFT model holds them."""
    return {name.removeprefix("base_model.model."): module.scaling["default"] * (
                module.lora_B["default"].weight.double() @ module.lora_A["default"].weight.double()
            ).numpy()
            for name, module in tuned.named_modules() if hasattr(module, "lora_A")}


def test_rank_r_adapter_loads_in_peft_with_the_reported_error(hf_stack, tiny, tmp_path):
    torch, transformers, peft = hf_stack
    base_folder = export.export_transformers_folder(tiny, tmp_path / "base")
    lora.enable_lora(tiny, lora.LoraConfig(rank=2, alpha=4, target_layers=("query", "value")))
    randomize_lora(tiny)
    tuned_log_probs = keras_log_probs(tiny)

    exact = hf_interop.export_peft_adapter(tiny, tmp_path / "exact", str(base_folder))
    assert json.loads((exact / hf_interop.PEFT_CONFIG).read_text())["rank_pattern"] == {
        "q_proj": 4}  # 2 query heads x rank 2
    ranks = vllm.peft_ranks(exact)
    assert ranks == vllm.peft_ranks(tiny)
    assert (ranks.module_ranks, ranks.max_rank, ranks.max_lora_rank) == (
        {"q_proj": 4, "v_proj": 2}, 4, 8)

    result = vllm.export_peft_adapter_at_rank(tiny, tmp_path / "rank2", str(base_folder), rank=2)
    tuned = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(
        str(base_folder), attn_implementation="eager"), str(result.folder)).eval()
    assert tuned.peft_config["default"].r == 2 == result.rank
    assert vllm.peft_ranks(result.folder).module_ranks == {"q_proj": 2, "v_proj": 2}
    # The error measured from the weights PEFT loaded equals the reported one.
    exact_updates, loaded = _exact_updates(tiny), _loaded_updates(tuned)
    assert set(loaded) == set(exact_updates)
    squared = {name: (np.sum((loaded[name] - update) ** 2), np.sum(update ** 2))
               for name, update in exact_updates.items()}
    for name, (error, energy) in squared.items():
        reported = result.module_errors[f"base_model.model.{name}"]
        assert np.sqrt(error / energy) == pytest.approx(reported, rel=1e-4, abs=1e-6), name
    overall = np.sqrt(sum(e for e, _ in squared.values()) / sum(n for _, n in squared.values()))
    assert overall == pytest.approx(result.relative_error, rel=1e-4)
    report = json.loads((result.folder / vllm.EXPORT_REPORT).read_text())
    assert report["relative_error"] == pytest.approx(result.relative_error)
    assert result.update_ranks["base_model.model.model.layers.0.self_attn.q_proj"] == 4
    assert result.relative_error > 0.05  # q_proj's rank-4 update does not fit in rank 2...
    assert max(error for name, error in result.module_errors.items() if "v_proj" in name) < 1e-6
    difference = np.abs(_hf_log_probs(torch, tuned) - tuned_log_probs).max()
    print(f"rank-2 export of a rank-2 query/value adapter: relative Frobenius error "
          f"{result.relative_error:.3f}, max |Δ log p| = {difference:.2e}")

    # ...but rank 4 holds every module exactly.
    assert vllm.export_peft_adapter_at_rank(
        tiny, tmp_path / "rank4", str(base_folder), rank=4).relative_error < 1e-6
    with pytest.raises(ConfigError, match="rank"):
        vllm.export_peft_adapter_at_rank(tiny, tmp_path / "bad", str(base_folder), rank=0)


def test_rank_r_adapter_is_exact_when_heads_share_a(hf_stack, tiny, tmp_path):
    torch, transformers, peft = hf_stack
    base_folder = export.export_transformers_folder(tiny, tmp_path / "base")
    lora.enable_lora(tiny, lora.LoraConfig(rank=2, alpha=4, target_layers=("query", "value")))
    randomize_lora(tiny)
    for layer in lora.lora_layers(tiny):  # every head of a query layer gets head 0's A
        a = np.asarray(layer.lora_kernel_a)
        layer.lora_kernel_a.assign(np.broadcast_to(a[:1], a.shape))
    result = vllm.export_peft_adapter_at_rank(tiny, tmp_path / "rank2", str(base_folder))
    assert result.rank == 2 and result.relative_error < 1e-6
    tuned = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(
        str(base_folder), attn_implementation="eager"), str(result.folder)).eval()
    assert tuned.peft_config["default"].r == 2  # the Keras rank
    assert np.abs(_hf_log_probs(torch, tuned) - keras_log_probs(tiny)).max() <= TOLERANCE


def test_vllm_max_lora_rank_is_the_smallest_allowed_value():
    assert [vllm.vllm_max_lora_rank(rank) for rank in (1, 2, 8, 9, 64, 257, 320, 512)] == [
        1, 8, 8, 16, 64, 320, 320, 512]
    assert vllm.vllm_max_lora_rank(513) is None
    with pytest.raises(ConfigError, match="rank"):
        vllm.vllm_max_lora_rank(0)
