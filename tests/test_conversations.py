"""Conversations: reading `messages` and ShareGPT files, Gemma's turn format, the loss mask."""

import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from gemma_lora import data
from gemma_lora.config import RunConfig
from gemma_lora.data.conversations import Conversation
from gemma_lora.data.conversations import Turn
from gemma_lora.data.conversations import conversation_segments
from gemma_lora.data.conversations import make_conversation
from gemma_lora.data.truncation import fit_segments
from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError
from gemma_lora.training import batching

# Gemma 3's chat template for text turns, as shipped in the `chat_template` of
# google/gemma-3-*-it's tokenizer_config.json (its branch for content that is a
# list of image/text parts left out: we read text only).
GEMMA3_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

MESSAGES = [
    {"role": "system", "content": "You take orders for a shop.\n"},
    {"role": "user", "content": "I'd like 2 red mugs.  "},
    {"role": "assistant", "content": " Noted: 2 red mugs."},
    {"role": "user", "content": "Make them blue. Send the order as JSON."},
    {"role": "assistant", "content": '{"item": "mug", "color": "blue", "quantity": 2}\n'},
]
SHAREGPT = [
    {"from": "human", "value": "Name a color."},
    {"from": "gpt", "value": "Teal."},
    {"from": "human", "value": "Another one."},
    {"from": "gpt", "value": "Amber."},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def render(conversation, generation_prompt=False):
    return "".join(text for text, _ in conversation_segments(conversation, generation_prompt))


def render_with_gemma_template(messages, add_generation_prompt=False):
    jinja2 = pytest.importorskip("jinja2")

    def raise_exception(message):
        raise ValueError(message)

    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = raise_exception
    return environment.from_string(GEMMA3_CHAT_TEMPLATE).render(
        messages=messages, bos_token="<bos>", add_generation_prompt=add_generation_prompt)


# === Reading ===


def test_messages_and_sharegpt_files_are_read_as_conversations(tmp_path):
    messages = data.read_records(write_jsonl(tmp_path / "m.jsonl", [{"messages": MESSAGES}]))
    sharegpt = data.read_records(write_jsonl(tmp_path / "s.jsonl", [{"conversations": SHAREGPT}]))
    (conversation,) = messages
    assert isinstance(conversation, Conversation)
    assert [turn.role for turn in conversation.turns] == [
        "system", "user", "assistant", "user", "assistant"]
    assert conversation.instruction == "Make them blue. Send the order as JSON."
    assert conversation.output == '{"item": "mug", "color": "blue", "quantity": 2}'
    assert conversation.source == f"{tmp_path / 'm.jsonl'}:1"
    assert [turn.role for turn in sharegpt[0].turns] == ["user", "assistant"] * 2
    assert sharegpt[0].output == "Amber."


def test_a_json_list_of_conversations_and_the_model_role(tmp_path):
    path = tmp_path / "m.json"
    turns = [{"role": "user", "content": "Hi"}, {"role": "model", "content": "Hello"}]
    path.write_text(json.dumps([{"messages": turns}, {"messages": turns}], indent=1))
    records = data.read_records(path)
    assert [record.turns[-1] for record in records] == [Turn("assistant", "Hello")] * 2
    assert records[1].source == f"{path}:14"


@pytest.mark.parametrize("role", ["human", "user"])
@pytest.mark.parametrize("assistant", ["gpt", "assistant", "model", "chatgpt", "bard"])
def test_sharegpt_role_variants(role, assistant):
    row = {"conversations": [{"from": role, "value": "Hi"}, {"from": assistant, "value": "Yo"}]}
    assert [t.role for t in make_conversation(row, "s.jsonl:1").turns] == ["user", "assistant"]


def test_the_format_parameter_forces_one_format(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"conversations": SHAREGPT}])
    assert data.read_records(path, data_format="sharegpt")[0].output == "Amber."
    with pytest.raises(DataError, match=r"s.jsonl:1: field 'messages' is missing"):
        data.read_records(path, data_format="messages")
    with pytest.raises(ConfigError, match=r"data_format must be one of 'messages', 'sharegpt'"):
        data.read_records(path, data_format="chatml")


def test_trailing_user_turns_are_dropped():
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                        {"role": "user", "content": "Bye"}]}
    assert [t.content for t in make_conversation(row, "x:1").turns] == ["Hi", "Yo"]


# === Gemma's turn format ===


def test_rendering_equals_gemmas_chat_template():
    conversation = make_conversation({"messages": MESSAGES}, "x.jsonl:1")
    expected = render_with_gemma_template(MESSAGES)
    assert "<bos>" + render(conversation) == expected
    assert expected == (
        "<bos><start_of_turn>user\nYou take orders for a shop.\n\n\nI'd like 2 red mugs."
        "<end_of_turn>\n<start_of_turn>model\nNoted: 2 red mugs.<end_of_turn>\n"
        "<start_of_turn>user\nMake them blue. Send the order as JSON.<end_of_turn>\n"
        '<start_of_turn>model\n{"item": "mug", "color": "blue", "quantity": 2}<end_of_turn>\n')


def test_the_prompt_equals_gemmas_template_with_a_generation_prompt():
    conversation = make_conversation({"messages": MESSAGES}, "x.jsonl:1")
    assert "<bos>" + data.format_prompt(conversation) == render_with_gemma_template(
        MESSAGES[:-1], add_generation_prompt=True)
    sharegpt = make_conversation({"conversations": SHAREGPT}, "s.jsonl:1")
    as_messages = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]}
                   for t in SHAREGPT]
    assert "<bos>" + render(sharegpt) == render_with_gemma_template(as_messages)


def test_only_assistant_turns_and_their_end_of_turn_train():
    conversation = make_conversation({"messages": MESSAGES}, "x.jsonl:1")
    trained = [text for text, trains in conversation_segments(conversation) if trains]
    assert trained == ["Noted: 2 red mugs.<end_of_turn>",
                       '{"item": "mug", "color": "blue", "quantity": 2}<end_of_turn>']


def test_conversation_examples(tmp_path):
    records = data.read_records(write_jsonl(tmp_path / "m.jsonl", [{"messages": MESSAGES}]))
    examples = data.to_prompt_response(records)
    assert examples["prompts"][0].endswith("JSON.<end_of_turn>\n<start_of_turn>model\n")
    assert examples["responses"] == ['{"item": "mug", "color": "blue", "quantity": 2}']
    assert examples["segments"] == [conversation_segments(records[0])]
    assert examples["sources"] == [records[0].source]


def test_alpaca_examples_are_as_before_and_gemma_chat_closes_the_turn():
    record = data.Record("Say hi.", "", "Hi!", "x.jsonl:1")
    assert data.to_prompt_response([record]) == {
        "prompts": [data.format_prompt(record)], "responses": ["Hi!"]}
    chat = data.to_prompt_response([record], "gemma_chat")
    assert chat["responses"] == ["Hi!"]
    assert chat["segments"] == [[(chat["prompts"][0], False), ("Hi!<end_of_turn>", True),
                                 ("\n", False)]]


# === Tokens and loss ===


def _weighted_text(tokenizer, split, row):
    weighted = split.labels[row][split.loss_weights[row] > 0]
    return tokenizer.detokenize(weighted)


def test_the_loss_mask_covers_exactly_the_assistant_turns(tiny_causal_lm):
    tokenizer = tiny_causal_lm.preprocessor.tokenizer
    row = {"messages": [{"role": "user", "content": "Which color? A red mug."},
                        {"role": "assistant", "content": "red"},
                        {"role": "user", "content": "And a blue hat?"},
                        {"role": "assistant", "content": "blue"}]}
    examples = data.to_prompt_response([make_conversation(row, "x:1")])
    split = batching.tokenize(tiny_causal_lm.preprocessor, examples, 64)
    pieces = [[int(i) for i in tokenizer(text)] for text, _ in examples["segments"][0]]
    expected = [[train] * len(ids) for ids, (_, train) in zip(pieces, examples["segments"][0])]
    tokens = [tokenizer.start_token_id] + sum(pieces, [])
    length = len(tokens) - 1
    np.testing.assert_array_equal(split.token_ids[0, :length], tokens[:-1])
    np.testing.assert_array_equal(split.labels[0, :length], tokens[1:])
    np.testing.assert_array_equal(split.loss_weights[0, :length] > 0, sum(expected, []))
    assert not split.loss_weights[0, length:].any()
    end = tokenizer.token_to_id("<end_of_turn>")
    weighted = split.labels[0][split.loss_weights[0] > 0].tolist()
    assert weighted.count(end) == 2 and weighted[-1] == end
    text = _weighted_text(tokenizer, split, 0)  # the tiny tokenizer adds a space before a piece
    assert text.replace("<end_of_turn>", "|").replace(" ", "") == "red|blue|"
    assert int(split.padding_mask[0].sum()) == length + 1


def test_mixed_examples_keep_the_preprocessors_rows(tiny_causal_lm):
    records = [data.Record("Which color? A red mug.", "", "red", "x:1"),
               make_conversation({"messages": MESSAGES}, "y:1")]
    examples = data.to_prompt_response(records)
    assert examples["segments"][0] is None
    split = batching.tokenize(tiny_causal_lm.preprocessor, examples, 64)
    alone = batching.tokenize(tiny_causal_lm.preprocessor, data.to_prompt_response(records[:1]), 64)
    for name in ("token_ids", "padding_mask", "labels", "loss_weights"):
        np.testing.assert_array_equal(getattr(split, name)[0], getattr(alone, name)[0])


def test_a_long_conversation_is_cut_after_its_last_assistant_turn_that_fits(tiny_causal_lm):
    tokenizer = tiny_causal_lm.preprocessor.tokenizer
    row = {"messages": [{"role": "user", "content": "Which color? A red mug."},
                        {"role": "assistant", "content": "red"},
                        {"role": "user", "content": "And now a long one: " + "blue hat " * 40},
                        {"role": "assistant", "content": "blue"}]}
    examples = data.to_prompt_response([make_conversation(row, "x.jsonl:7")])
    split = batching.tokenize(tiny_causal_lm.preprocessor, examples, 48)
    text = _weighted_text(tokenizer, split, 0)
    assert text == "red<end_of_turn>"
    assert split.labels[0][split.lengths[0] - 2] == tokenizer.token_to_id("<end_of_turn>")
    report = data.truncation_report(tokenizer, examples, 48)
    assert (report.truncated, report.cut_at_turn) == (1, 1)
    assert str(report).endswith("1 of them are cut after their last assistant turn that fits.")


def test_a_conversation_whose_every_assistant_turn_is_cut_away_is_refused(tiny_causal_lm):
    row = {"messages": [{"role": "user", "content": "blue hat " * 40},
                        {"role": "assistant", "content": "blue"}]}
    examples = data.to_prompt_response([make_conversation(row, "x.jsonl:7")])
    with pytest.raises(DataError, match=r"^x.jsonl:7: every assistant turn lies beyond "
                                        r"sequence_length=32 \(the first one starts at token"):
        data.truncation_report(tiny_causal_lm.preprocessor.tokenizer, examples, 32)


def test_fit_segments_cuts_mid_turn_only_when_no_turn_fits():
    lengths, trains = [5, 3, 4, 3, 1], [False, True, False, True, False]
    assert fit_segments(lengths, trains, 100) == (17, True)
    assert fit_segments(lengths, trains, 15) == (16, True)  # all but the last "\n"
    assert fit_segments(lengths, trains, 14) == (9, True)
    assert fit_segments(lengths, trains, 7) == (8, False)


# === Splits and runs ===


def test_load_splits_reads_a_conversation_file(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"Echo {i}."},
                          {"role": "assistant", "content": str(i)}]} for i in range(20)]
    config = RunConfig(data_path=write_jsonl(tmp_path / "c.jsonl", rows),
                       validation_fraction=0.1, test_fraction=0.1)
    splits = data.load_splits(config)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (16, 2, 2)
    assert all(isinstance(record, Conversation) for record in splits.test)


def test_a_conversation_trains(tiny_causal_lm, tmp_path):
    from gemma_lora import lora
    from gemma_lora.training import train

    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8))
    rows = [{"messages": [{"role": "user", "content": f"Which color? A {color} mug."},
                          {"role": "assistant", "content": "Noted."},
                          {"role": "user", "content": "The color?"},
                          {"role": "assistant", "content": color}]}
            for color in ["red", "blue", "green", "black"] * 4]
    records = data.read_records(write_jsonl(tmp_path / "c.jsonl", rows))
    examples = data.to_prompt_response(records)
    config = RunConfig(run_dir=str(tmp_path / "run"), max_steps=4, batch_size=4, eval_every=2,
                       sequence_length=48, warmup_steps=1)
    result = train(tiny_causal_lm, config, examples, examples, log=lambda line: None)
    assert result.steps == 4 and np.isfinite(result.best_val_loss)


# === The shipped conversation task ===

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "conversations.jsonl"
GENERATOR = SHIPPED.with_name("make_conversations.py")


def test_shipped_conversations():
    records = data.read_records(SHIPPED)
    assert len(records) >= 2000
    assert len({tuple(record.turns) for record in records}) == len(records)
    users = Counter(sum(turn.role == "user" for turn in record.turns) for record in records)
    assert set(users) == {2, 3, 4} and min(users.values()) > 300
    for record in records:
        order = json.loads(record.output)
        assert list(order) == ["item", "color", "quantity", "city"], record.source
        assert record.output == json.dumps(order, separators=(",", ":")), record.source
        # The final request never names the order: the answer depends on earlier turns.
        assert order["city"] not in record.instruction and order["color"] not in record.instruction


def test_the_generator_reproduces_the_shipped_conversations(tmp_path):
    spec = importlib.util.spec_from_file_location("make_conversations", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output = tmp_path / "conversations.jsonl"
    module.main(["--output", str(output)])
    assert output.read_bytes() == SHIPPED.read_bytes()



@pytest.mark.real_model
def test_gemma_tokens_of_the_pieces_are_the_tokens_of_the_whole(gemma3_270m_preset):
    """With Gemma 3's own tokenizer, tokenizing piece by piece gives the rendered text's tokens."""
    import keras_hub

    tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(str(gemma3_270m_preset))
    records = data.read_records(SHIPPED)[:300] + [make_conversation({"messages": MESSAGES}, "x:1")]
    examples = data.to_prompt_response(records)
    split = batching.tokenize_segments(tokenizer, examples["segments"], 128)
    end = tokenizer.token_to_id("<end_of_turn>")
    for row, segments in enumerate(examples["segments"]):
        whole = [tokenizer.start_token_id] + [int(i) for i in tokenizer(
            "".join(text for text, _ in segments))]
        assert split.token_ids[row, :len(whole) - 1].tolist() == whole[:-1]
        trained = split.labels[row][split.loss_weights[row] > 0].tolist()
        assert trained.count(end) == sum(turn.role == "assistant" for turn in records[row].turns)
        expected = "".join(text for text, trains in segments if trains)
        assert tokenizer.detokenize(trained) == expected
