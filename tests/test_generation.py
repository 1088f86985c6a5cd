"""The decoder (`gemma_lora.tasks.decoding`) against KerasHub's own `generate`."""

import keras
import numpy as np
import pytest

from gemma_lora import lora
from gemma_lora import tasks
from gemma_lora import training
from gemma_lora.tasks import decoding
from gemma_lora.tasks import generation
from gemma_lora.tasks import stopping

# Prompts of several lengths: some longer than the tiny model's sliding window
# (16) and one past the first prompt bucket (32 tokens).
PROMPTS = [
    "### Instruction:\nWhich color is wanted?\n\n### Input:\nPlease send one red mug.\n\n### Response:\n",
    "Which color?",
    "A blue hat to Paris",
    "The lamp is green and I feel positive about it. The mug",
    "### Instruction:\nWhich color is wanted?\n\n### Input:\nPlease send 3 white scarf to Oslo. "
    "The scarf is white and I feel negative about it.\n\n### Response:\n",
]


def lively(model):
    """LoRA on, and weights that make a random tiny model's tokens vary.

    With KerasHub's initialisation the tiny model repeats one token forever,
    which would make an equality test weak; larger kernels, LoRA factors and
    post-norm scales let each step's attention and feed-forward outputs
    dominate the residual stream.
    """
    lora.enable_lora(model, lora.LoraConfig(rank=4, alpha=8))
    for index, variable in enumerate(model.backbone.variables):
        if "kernel" in variable.path:
            variable.assign(keras.random.normal(variable.shape, stddev=0.5, seed=index))
        elif "post" in variable.path and "scale" in variable.path:
            variable.assign(keras.ops.full(variable.shape, 5.0))
    return model


def keras_hub_greedy(model, prompts, max_new_tokens, end_ids):
    """KerasHub's `generate_step` on right-padded prompts: new ids per prompt, cut at the first end id."""
    decoder = decoding.Decoder(model)
    prompt_ids = decoder.token_ids(prompts)
    length = max(len(ids) for ids in prompt_ids) + max_new_tokens
    token_ids = np.zeros((len(prompts), length), np.int32)
    padding_mask = np.zeros((len(prompts), length), bool)
    for row, ids in enumerate(prompt_ids):
        token_ids[row, :len(ids)], padding_mask[row, :len(ids)] = ids, True
    generation.use_greedy_sampling(model)
    out = model.make_generate_function()({"token_ids": token_ids, "padding_mask": padding_mask},
                                         stop_token_ids=tuple(end_ids))
    out = np.asarray(out["token_ids"])
    result = []
    for row, ids in enumerate(prompt_ids):
        new = out[row, len(ids):len(ids) + max_new_tokens].tolist()
        ends = [i for i, token in enumerate(new) if token in end_ids]
        result.append(new[:ends[0] + 1] if ends else new)
    return result


@pytest.fixture
def lively_lm(tiny_causal_lm):
    return lively(tiny_causal_lm)


def test_greedy_equals_keras_hub_generate_with_lora(lively_lm):
    decoder = decoding.Decoder(lively_lm)
    ours = decoder.decode(PROMPTS, max_new_tokens=24, batch_size=3)
    reference = keras_hub_greedy(lively_lm, PROMPTS, 24, decoder.end_ids)
    assert ours.token_ids == reference
    assert len({tuple(ids) for ids in ours.token_ids}) == len(PROMPTS)
    assert len({token for ids in ours.token_ids for token in ids}) > 20  # not one repeated token
    assert ours.programs == 2  # buckets 32 and 64, batch 3
    assert ours.texts == decoder.texts(reference)
    # A second call reuses the compiled programs.
    again = decoder.decode(PROMPTS, max_new_tokens=24, batch_size=3)
    assert again.token_ids == ours.token_ids and again.compile_seconds == 0.0


def test_rows_stop_at_their_own_end_token(lively_lm):
    free = decoding.Decoder(lively_lm).decode(PROMPTS, 24, batch_size=5)
    # Pretend a token row 0 emits mid-way is the end of text.
    end = free.token_ids[0][5]
    decoder = decoding.Decoder(lively_lm)
    decoder.end_ids = (end,)
    stopped = decoder.decode(PROMPTS, 24, batch_size=5)
    assert stopped.token_ids == keras_hub_greedy(lively_lm, PROMPTS, 24, (end,))
    for ids, reason, full in zip(stopped.token_ids, stopped.stop_reasons, free.token_ids):
        if end in full:
            assert reason == decoding.END_TOKEN and ids == full[:full.index(end) + 1]
        else:
            assert reason == decoding.BUDGET and ids == full
    assert stopped.stop_reasons[0] == decoding.END_TOKEN and len(stopped.token_ids[0]) <= 6
    assert stopped.texts[0] == decoder.texts([free.token_ids[0][:free.token_ids[0].index(end)]])[0]


def test_section_automaton_follows_the_header_pattern():
    texts = ["a", "\n", "#", "##", "###", " ", "\n\n###", "x\n", " ##"]
    table = stopping.section_stop_table(texts)

    def run(ids):
        state = 0
        for i in ids:
            state = table[i, state]
        return state == 4

    for ids in ([1, 4], [6], [1, 5, 5, 2, 3], [7, 2, 2, 2], [1, 1, 3, 2], [0, 1, 5, 4]):
        text = "".join(texts[i] for i in ids)
        assert run(ids) == bool(stopping.SECTION_HEADER.search(text)), text
    for ids in ([4], [1, 0, 4], [1, 2, 0, 3], [8, 2], [2, 2, 2]):
        assert not run(ids) and not stopping.SECTION_HEADER.search("".join(texts[i] for i in ids))


def test_stop_string_ends_the_row_and_cuts_the_text(lively_lm):
    free = decoding.Decoder(lively_lm).decode(PROMPTS, 24, batch_size=5)
    # A stop table under which row 1's 4th token completes a stop string.
    marker = free.token_ids[1][3]
    table = np.tile(np.arange(5, dtype=np.int32), (lively_lm.backbone.vocabulary_size, 1))
    table[marker] = 4
    decoder = decoding.Decoder(lively_lm)
    decoder.stop_table = table
    stopped = decoder.decode(PROMPTS, 24, batch_size=5, stop_at_section=True)
    assert stopped.stop_reasons[1] == decoding.STOP_STRING
    assert stopped.token_ids[1] == free.token_ids[1][:free.token_ids[1].index(marker) + 1]
    for ids, full in zip(stopped.token_ids, free.token_ids):
        assert ids == full[:len(ids)]


def stops_at_section(tokenizer, text):
    """Whether the section automaton over `text`'s tokens ends matched, and the decoded text."""
    table = stopping.section_stop_table(stopping.token_texts(tokenizer))
    ids = [int(i) for i in np.asarray(tokenizer(text))]
    state = 0
    for i in ids:
        state = table[i, state]
    return state == 4, tokenizer.detokenize(ids)


def test_the_stop_table_agrees_with_the_decoded_text(tiny_causal_lm):
    tokenizer = tiny_causal_lm.preprocessor.tokenizer
    for text in ("blue\n\n### Instruction:", "blue ### Instruction", "red\n#\n##", "a #### b"):
        matched, decoded = stops_at_section(tokenizer, text)
        assert matched == bool(stopping.SECTION_HEADER.search(decoded)), (text, decoded)


def test_generate_responses_is_keras_hub_generate_cut_at_the_section(lively_lm):
    answers = tasks.generate_responses(lively_lm, PROMPTS, max_new_tokens=16, batch_size=4)
    decoder = decoding.Decoder(lively_lm)
    reference = decoder.texts(keras_hub_greedy(lively_lm, PROMPTS, 16, decoder.end_ids))
    assert answers == [stopping.SECTION_HEADER.split(text, maxsplit=1)[0] for text in reference]
    assert tasks.generate_responses(lively_lm, [], 16, batch_size=4) == []


def test_seeded_sampling_is_reproducible_and_top_k_1_is_greedy(lively_lm):
    SHORT = PROMPTS[:4]  # one prompt bucket: fewer programs to compile
    greedy = tasks.generate_responses(lively_lm, SHORT, 12, batch_size=4)
    sample = lambda **options: tasks.generate_responses(lively_lm, SHORT, 12, batch_size=4, **options)
    first = sample(temperature=1.0, seed=3)
    assert sample(temperature=1.0, seed=3) == first
    assert sample(temperature=1.0, seed=4) != first
    assert first != greedy
    assert sample(temperature=0.8, top_k=1, seed=5) == greedy
    assert sample(temperature=0.8, top_p=1e-6, seed=5) == greedy  # only the top token is kept
    assert sample(temperature=0.0, top_k=5, seed=5) == greedy  # temperature 0 is greedy
    # A prompt's keys follow its place in the call, not its batch.
    assert tasks.generate_responses(lively_lm, SHORT, 12, batch_size=2, temperature=1.0, seed=3) == first


def test_sampling_options_are_checked(tiny_causal_lm):
    from gemma_lora.errors import ConfigError

    for options in ({"temperature": -1}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ConfigError):
            tasks.generate_responses(tiny_causal_lm, PROMPTS, 4, batch_size=2, **options)


@pytest.mark.parametrize("length, bucket", [(1, 32), (32, 32), (33, 64), (129, 160), (257, 320), (600, 640)])
def test_bucket_lengths(length, bucket):
    assert decoding.bucket_length(length) == bucket


@pytest.mark.real_model
def test_greedy_equals_keras_hub_generate_on_gemma3_270m(real_causal_lm):
    from gemma_lora import data
    from gemma_lora.config import RunConfig

    splits = data.load_splits(RunConfig())
    prompts = data.to_prompt_response(splits.test)["prompts"][:8]
    decoder = decoding.Decoder(real_causal_lm)
    ours = decoder.decode(prompts, max_new_tokens=16, batch_size=4)
    assert ours.token_ids == keras_hub_greedy(real_causal_lm, prompts, 16, decoder.end_ids)
    tokenizer = real_causal_lm.preprocessor.tokenizer
    assert stops_at_section(tokenizer, '{"a": 1}\n\n### Instruction:\nmore')[0]
    assert stops_at_section(tokenizer, "one\n  ###")[0]
    assert not stops_at_section(tokenizer, "one ### two\n# three")[0]


def test_keras_hub_path_gives_the_same_greedy_text_for_one_prompt(lively_lm):
    for prompt in PROMPTS[:2]:
        ours = tasks.generate_responses(lively_lm, [prompt], 10, batch_size=1, stop_at_section=False)
        assert ours == tasks.generate_with_keras_hub(lively_lm, [prompt], 10, batch_size=1)


def test_timed_generation_counts_new_tokens_without_compiling(lively_lm):
    timing = tasks.inference.timed_generation(lively_lm, PROMPTS, max_new_tokens=8, batch_size=2)
    assert len(timing.answers) == len(PROMPTS)
    assert timing.new_tokens == sum(len(ids) for ids in decoding.decode(
        lively_lm, PROMPTS, 8, batch_size=2, stop_at_section=True).token_ids)
    assert 0 < timing.seconds


def test_response_token_loss_reuses_one_compiled_step_per_model(tiny_causal_lm, color_examples,
                                                                 monkeypatch):
    traces = []  # the loss function's Python body runs only when jax traces (compiles) it
    original = training.CompiledSteps.token_log_probs
    monkeypatch.setattr(training.CompiledSteps, "token_log_probs",
                        lambda self, *args, **kwargs: traces.append(1) or original(self, *args, **kwargs))
    test = color_examples["test"]
    base = tasks.response_token_loss(tiny_causal_lm, test, batch_size=8, sequence_length=48)
    steps = tasks.loss_steps(tiny_causal_lm)
    assert tasks.loss_steps(tiny_causal_lm) is steps
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8))
    tuned_steps = tasks.loss_steps(tiny_causal_lm)  # new variables: new steps
    assert tuned_steps is not steps
    assert tasks.response_token_loss(tiny_causal_lm, test, 8, 48) == pytest.approx(base, abs=1e-5)
    compiled = len(traces)
    for variable in tiny_causal_lm.backbone.trainable_variables:  # as training would
        variable.assign(keras.random.normal(variable.shape, stddev=0.2, seed=1))
    changed = tasks.response_token_loss(tiny_causal_lm, test, 8, 48)
    assert tasks.loss_steps(tiny_causal_lm) is tuned_steps
    assert changed != pytest.approx(base, abs=1e-3)  # the new values are read
    assert len(traces) == compiled  # and nothing was compiled again


@pytest.mark.parametrize("fast", [True, False], ids=["decoder", "keras_hub"])
def test_generation_progress_counts_every_prompt_as_plain_lines(lively_lm, capsys, monkeypatch,
                                                                 fast):
    monkeypatch.setenv("GEMMA_LORA_PROGRESS", "lines")
    if not fast:
        monkeypatch.setattr(decoding, "supports_fast_decoding", lambda model: False)
    prompts = ["### Instruction:\nWhich color?", "A red mug.", "A blue hat on a shelf."]
    texts = generation.generate_responses(lively_lm, prompts, 3, batch_size=2,
                                          progress="generate (test)")
    lines = capsys.readouterr().out.splitlines()
    assert len(texts) == 3
    assert lines[0].startswith("generate (test) 2/3 |") and lines[-1].startswith("generate (test) 3/3 |")
    assert "\r" not in "".join(lines)
    assert ("new tokens/s" in lines[-1]) == fast


def test_generation_shows_no_progress_unless_asked(lively_lm, capsys, monkeypatch):
    monkeypatch.setenv("GEMMA_LORA_PROGRESS", "lines")
    generation.generate_responses(lively_lm, ["A red mug."], 2, batch_size=1)
    assert capsys.readouterr().out == ""
