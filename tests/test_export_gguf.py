"""GGUF exports (llama.cpp, Ollama) and the Ollama Modelfile.

The references are the runtimes that read the files: transformers' own GGUF
loader (`from_pretrained(..., gguf_file=...)`) and llama.cpp through
llama-cpp-python, whose log-probabilities, tokens and greedy answers are
compared with the Keras model's; Ollama's Modelfile parser (ported line for
line from `parser/parser.go` into `tests/export_helpers.py`) and Go's
`text/template` (when a Go toolchain is installed) for the Modelfile. Tests skip per missing package.
"""

import json
import os
import shutil
import subprocess

import gguf
import numpy as np
import pytest

from gemma_lora import export
from gemma_lora import lora
from gemma_lora.data import conversation_segments, make_conversation
from gemma_lora.errors import ConfigError, ModelError
from gemma_lora.export import ollama
from gemma_lora.lora.peft_layout import KERAS_TO_PEFT
from gemma_lora.testing.serving import log_softmax
from gemma_lora.testing.serving import randomize_lora
from tests.export_helpers import TOKEN_IDS
from tests.export_helpers import TOLERANCE
from tests.export_helpers import gemma_proto  # noqa: F401 (a fixture)
from tests.export_helpers import interop_modules
from tests.export_helpers import keras_log_probs
from tests.export_helpers import ollama_parse
from tests.export_helpers import tiny  # noqa: F401 (a fixture)

ALL_TARGETS = tuple(KERAS_TO_PEFT)
# Measured on the tiny random model (max |Δ log p| over the vocabulary) and
# asserted with about 2x headroom. Its random weights (embedding std 0.25)
# make it far more sensitive to rounding than the real model.
TINY_BOUNDS = {
    # transformers' GGUF loader (dequantizes to float32): measured 9.9e-3, 5.9e-2, 0.21.
    "transformers": {"f16": 2e-2, "bf16": 0.12, "q8_0": 0.4},
    # llama.cpp computes GELU through a float16 table, so float32 is not exact
    # there: measured 4.0e-3 (float32 KV cache), merged file and base + LoRA alike.
    "llama_cpp_f32": 1e-2,
}
CHAT = {"messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Hi!"},
                     {"role": "assistant", "content": "Hello."},
                     {"role": "user", "content": "Which color?"},
                     {"role": "assistant", "content": "Red."}]}


@pytest.fixture(scope="module")
def transformers_stack():
    return interop_modules("torch", "transformers")


@pytest.fixture(scope="module")
def llama_cpp():
    return interop_modules("llama_cpp")


def _transformers_log_probs(transformers_stack, path, ids=TOKEN_IDS, **config):
    torch, transformers = transformers_stack
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32,
        attn_implementation="eager", **config).eval()
    with torch.no_grad():
        return log_softmax(model(input_ids=torch.as_tensor(np.asarray(ids))).logits.double())


def _llama(llama_cpp, path, **options):
    # A float32 KV cache (type 0), so that only llama.cpp's arithmetic differs.
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=1, logits_all=True,
                           type_k=0, type_v=0, verbose=False, **options)


def _llama_log_probs(llm, ids=TOKEN_IDS):
    rows = []
    for row in np.asarray(ids).tolist():
        llm.reset()
        llm.eval(row)
        rows.append(log_softmax(llm.scores[:len(row)]))
    return np.stack(rows)


# === Tiny model: transformers and llama.cpp read what Keras computes ===


def test_tiny_gguf_loads_in_transformers_with_keras_log_probs(transformers_stack, tiny,
                                                              tmp_path):
    lora.enable_lora(tiny, lora.LoraConfig(rank=4, alpha=8, target_layers=ALL_TARGETS))
    randomize_lora(tiny)
    tuned_log_probs = keras_log_probs(tiny)
    differences = {}
    for file_type in export.FILE_TYPES:
        path = export.export_gguf(tiny, tmp_path / f"tiny-{file_type}.gguf", file_type)
        # Gemma's query scale is not in GGUF; transformers assumes 256 (Gemma 3
        # 270M-12B's head size), llama.cpp takes the head size (16 here).
        log_probs = _transformers_log_probs(transformers_stack, path, query_pre_attn_scalar=16)
        differences[file_type] = np.abs(log_probs - tuned_log_probs).max()
    print("tiny model, transformers' GGUF loader, max |Δ log p|:",
          {name: f"{value:.1e}" for name, value in differences.items()})
    assert differences["f32"] <= TOLERANCE
    for file_type, bound in TINY_BOUNDS["transformers"].items():
        assert differences[file_type] <= bound, file_type
    # Exporting merged a copy: the model still has its LoRA and computes the same.
    assert lora.lora_layers(tiny)
    np.testing.assert_array_equal(keras_log_probs(tiny), tuned_log_probs)


def test_tiny_gguf_and_gguf_lora_in_llama_cpp(llama_cpp, tiny, tmp_path):
    base = export.export_gguf(tiny, tmp_path / "base.gguf")
    lora.enable_lora(tiny, lora.LoraConfig(rank=4, alpha=8, target_layers=ALL_TARGETS))
    randomize_lora(tiny)
    tuned_log_probs = keras_log_probs(tiny)
    merged = export.export_gguf(tiny, tmp_path / "merged.gguf")
    adapter = export.export_gguf_lora(tiny, tmp_path / "adapter.gguf", base=base)
    # Without its LoRA, the tuned model writes the file the base wrote before LoRA.
    unadapted = export.export_gguf(tiny, tmp_path / "unadapted.gguf", with_lora=False)
    assert unadapted.read_bytes() == base.read_bytes()

    llm = _llama(llama_cpp, merged)
    merged_log_probs = _llama_log_probs(llm)
    # llama.cpp's own tokenizer and Gemma's chat template, as stored in the file.
    tokenizer = tiny.preprocessor.tokenizer
    for text in ["Please send one red mug.", "Which color?\n\n  Be  brief!", "<start_of_turn>user"]:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == np.asarray(
            tokenizer(text)).tolist(), text
    formatter = llama_cpp.llama_chat_format.Jinja2ChatFormatter(
        llm.metadata["tokenizer.chat_template"], eos_token="<eos>", bos_token="<bos>")
    conversation = make_conversation(CHAT, "chat.jsonl:1")
    expected = "".join(text for text, _ in conversation_segments(conversation, True))
    assert formatter(messages=CHAT["messages"][:-1]).prompt == "<bos>" + expected
    llm.close()

    llm = _llama(llama_cpp, base, lora_path=str(adapter))
    adapted_log_probs = _llama_log_probs(llm)
    llm.close()
    merged_difference = np.abs(merged_log_probs - tuned_log_probs).max()
    adapter_difference = np.abs(adapted_log_probs - tuned_log_probs).max()
    print(f"tiny model in llama.cpp, max |Δ log p| vs Keras: merged float32 GGUF "
          f"{merged_difference:.1e}, base + GGUF LoRA {adapter_difference:.1e}")
    assert merged_difference <= TINY_BOUNDS["llama_cpp_f32"]
    # The adapter's scale is right for every module (query's rank is heads * r).
    assert adapter_difference <= TINY_BOUNDS["llama_cpp_f32"]
    assert np.abs(tuned_log_probs - log_softmax(
        np.asarray(lora.merge_lora(tiny)({"token_ids": TOKEN_IDS,
                                          "padding_mask": np.ones_like(TOKEN_IDS)})))).max() < 1e-5


def test_gguf_lora_factors_carry_keras_scale(tiny, tmp_path):
    lora.enable_lora(tiny, lora.LoraConfig(rank=4, alpha=8, target_layers=("query", "value")))
    randomize_lora(tiny)
    reader = gguf.GGUFReader(export.export_gguf_lora(tiny, tmp_path / "adapter.gguf"))
    alpha = reader.get_field("adapter.lora.alpha").contents()
    assert (reader.get_field("general.type").contents(), alpha) == ("adapter", 8.0)
    tensors = {tensor.name: np.asarray(tensor.data) for tensor in reader.tensors}
    layer = tiny.backbone.get_layer("decoder_block_0").attention.query_dense
    a, b = np.asarray(layer.lora_kernel_a), np.asarray(layer.lora_kernel_b)
    lora_a, lora_b = tensors["blk.0.attn_q.weight.lora_a"], tensors["blk.0.attn_q.weight.lora_b"]
    # llama.cpp's update: alpha / rank(lora_b) * lora_b @ lora_a, in [out, in].
    update = alpha / lora_b.shape[1] * lora_b @ lora_a
    (heads, width, _), head_dim = a.shape, b.shape[1]
    keras_update = 8.0 / 4 * np.einsum("ndr,rh->ndh", a, b)  # Keras' (n, d, h)
    np.testing.assert_allclose(update, keras_update.transpose(0, 2, 1).reshape(
        heads * head_dim, width), atol=1e-6)


# === Bad input ===


def test_refuses_what_a_gemma3_gguf_cannot_hold(tiny, tiny_causal_lm, tmp_path):
    import keras_hub

    from gemma_lora.testing import build_tiny_gemma3

    with pytest.raises(ConfigError, match="file_type.*'f32', 'f16', 'bf16', 'q8_0'"):
        export.export_gguf(tiny, tmp_path / "x.gguf", file_type="q4_k")
    gemma2 = keras_hub.models.GemmaBackbone(
        vocabulary_size=16, num_layers=1, num_query_heads=1, num_key_value_heads=1,
        hidden_dim=8, intermediate_dim=16, head_dim=8)
    with pytest.raises(ModelError, match="Gemma 3.*GemmaBackbone"):
        export.export_gguf(gemma2, tmp_path / "x.gguf")
    with pytest.raises(ModelError, match="normalizes text.*'nmt_nfkc'"):
        export.export_gguf(tiny_causal_lm, tmp_path / "x.gguf")  # the default tiny tokenizer
    wide = build_tiny_gemma3(tiny.preprocessor.tokenizer.proto, hidden_dim=48)
    with pytest.raises(ModelError, match="blocks of 32.*'token_embd.weight' has rows of 48"):
        export.export_gguf(wide, tmp_path / "x.gguf", file_type="q8_0")
    # A quantized base: tests/test_export_transformers.py, with the Hugging Face folder.
    with pytest.raises(ModelError, match="no LoRA layers"):
        export.export_gguf_lora(wide, tmp_path / "x.gguf")
    lora.enable_lora(wide, lora.LoraConfig(rank=2))
    with pytest.raises(ModelError, match="'blk.0.attn_v.weight' of shape \\(16, 32\\).*"
                                         "needs \\(16, 48\\)"):
        export.export_gguf_lora(wide, tmp_path / "x.gguf",
                                base=export.export_gguf(build_tiny_gemma3(
                                    tiny.preprocessor.tokenizer.proto), tmp_path / "base.gguf"))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["base.gguf"]


def test_existing_file_is_replaced_only_when_the_new_one_is_complete(tiny, tmp_path,
                                                                      monkeypatch):
    target = tmp_path / "model.gguf"
    target.write_bytes(b"old")

    def interrupted(writer, *args, **kwargs):
        writer.fout[0].write(b"partial tensor data")
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(gguf.GGUFWriter, "write_tensors_to_file", interrupted)
        with pytest.raises(KeyboardInterrupt):
            export.export_gguf(tiny, target)
        with pytest.raises(KeyboardInterrupt):
            export.export_gguf(tiny, tmp_path / "new.gguf")
    assert target.read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["model.gguf"]  # no temporary files
    export.export_gguf(tiny, target)
    assert gguf.GGUFReader(target).get_field("general.architecture").contents() == "gemma3"


# === Ollama ===


def test_modelfile_parses_as_ollama_reads_it(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF\x03\x00")
    (tmp_path / "adapter.gguf").write_bytes(b"GGUF\x03\x00")
    path = ollama.write_modelfile(tmp_path, "model.gguf", adapter_name="adapter.gguf",
                                  system="You extract orders.\nAnswer in JSON.",
                                  parameters={"temperature": 0, "num_ctx": 2048})
    assert path == tmp_path / ollama.MODELFILE
    assert ollama_parse(path.read_text()) == [
        ("model", "./model.gguf"),
        ("adapter", "./adapter.gguf"),
        ("template", ollama.GEMMA_OLLAMA_TEMPLATE),
        ("system", "You extract orders.\nAnswer in JSON."),
        ("stop", "<end_of_turn>"),
        ("stop", "<eos>"),
        ("temperature", "0"),
        ("num_ctx", "2048"),
    ]

    with pytest.raises(ModelError, match="missing.gguf.*export_gguf"):
        ollama.write_modelfile(tmp_path, "missing.gguf")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="not a GGUF file"):
        ollama.write_modelfile(tmp_path, "notes.txt")
    with pytest.raises(ConfigError, match="system"):
        ollama.write_modelfile(tmp_path, system='Say """hi"""')
    with pytest.raises(ConfigError, match="parameter name"):
        ollama.write_modelfile(tmp_path, parameters={"num ctx": 1})
    with pytest.raises(ConfigError, match="quotes"):
        ollama.write_modelfile(tmp_path, parameters={"stop": 'a"b'})


_GO_RENDER = """package main

import ("encoding/json"; "os"; "strings"; "text/template")

type Message struct { Role, Content string }

// Ollama's template.Execute for a template over .Messages: collate merges
// consecutive turns of one role and joins the system messages into .System.
func main() {
	var messages []Message
	if err := json.NewDecoder(os.Stdin).Decode(&messages); err != nil { panic(err) }
	var system []string
	var collated []*Message
	for i := range messages {
		m := messages[i]
		if m.Role == "system" { system = append(system, m.Content) }
		if len(collated) > 0 && collated[len(collated)-1].Role == m.Role {
			collated[len(collated)-1].Content += "\\n\\n" + m.Content
		} else { collated = append(collated, &m) }
	}
	t := template.Must(template.New("").Option("missingkey=zero").Parse(os.Args[1]))
	values := map[string]any{"System": strings.Join(system, "\\n\\n"), "Messages": collated,
		"Response": ""}
	if err := t.Execute(os.Stdout, values); err != nil { panic(err) }
}
"""


@pytest.mark.skipif(shutil.which("go") is None, reason="needs a Go toolchain (apt-get install "
                                                        "golang-go) to run Go's text/template")
def test_ollama_template_renders_gemma_turns_in_go(tmp_path):
    (tmp_path / "render.go").write_text(_GO_RENDER)
    for turns in (CHAT["messages"][:-1], CHAT["messages"][1:2]):
        messages = [{"Role": turn["role"], "Content": turn["content"]} for turn in turns]
        rendered = subprocess.run(
            ["go", "run", str(tmp_path / "render.go"), ollama.GEMMA_OLLAMA_TEMPLATE],
            input=json.dumps(messages), capture_output=True, text=True, check=True,
            env={**os.environ, "GOCACHE": str(tmp_path / "cache"),
                 "GOPATH": str(tmp_path / "go"), "GO111MODULE": "off"}).stdout
        conversation = make_conversation({"messages": turns + [{"role": "assistant",
                                                                "content": "x"}]}, "c:1")
        assert rendered == "".join(text for text, _ in conversation_segments(conversation, True))
