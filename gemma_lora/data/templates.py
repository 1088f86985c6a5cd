"""Prompt templates: records as the prompts and responses a causal LM trains on.

A template turns a record's instruction (and input, if any) into the prompt
that precedes the response. `to_prompt_response` gives the
`{"prompts": [...], "responses": [...]}` dictionary that KerasHub's
`CausalLMPreprocessor` takes, so the loss covers the response only. The
template names are also `gemma_lora.config.TEMPLATES`, which `RunConfig`
checks `template` against.

With `gemma_chat`, and for conversations (always in Gemma's turn format,
whatever the template), the examples also hold `"segments"`: per example the
`(text, trains)` pieces that `training.batching.tokenize` trains on, so the
model's turn ends with `<end_of_turn>` and a conversation trains on every
assistant turn; and `"sources"`, each example's record source.

Example:
>>> examples = to_prompt_response([Record("Say hi.", "", "Hi!", "x.jsonl:1")], "gemma_chat")
>>> examples["prompts"][0]
'<start_of_turn>user\\nSay hi.<end_of_turn>\\n<start_of_turn>model\\n'
"""

from __future__ import annotations

from collections.abc import Iterable

from gemma_lora.data.conversations import END_OF_TURN
from gemma_lora.data.conversations import Conversation
from gemma_lora.data.conversations import conversation_segments
from gemma_lora.data.records import Record
from gemma_lora.errors import ConfigError
from gemma_lora.errors import DataError

ALPACA_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that "
    "provides further context. Write a response that appropriately completes "
    "the request.\n\n"
    "### Instruction:\n{instruction}\n\n"
    "### Input:\n{input}\n\n"
    "### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that "
    "appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n"
    "### Response:\n"
)
GEMMA_CHAT_PROMPT_WITH_INPUT = (
    "<start_of_turn>user\n{instruction}\n\n{input}<end_of_turn>\n<start_of_turn>model\n"
)
GEMMA_CHAT_PROMPT_NO_INPUT = "<start_of_turn>user\n{instruction}<end_of_turn>\n<start_of_turn>model\n"
PROMPT_TEMPLATES = {
    "alpaca": (ALPACA_PROMPT_WITH_INPUT, ALPACA_PROMPT_NO_INPUT),
    "gemma_chat": (GEMMA_CHAT_PROMPT_WITH_INPUT, GEMMA_CHAT_PROMPT_NO_INPUT),
}
"""Prompt templates by name: (with input, without input). `gemma_chat` is
Gemma's own turn format (the instruction and input as the user's turn, the
response as the model's); `alpaca` is Stanford Alpaca's. The names are those
of `gemma_lora.config.TEMPLATES`."""


def format_prompt(record: Record, template: str = "alpaca") -> str:
    """The prompt for one record, ending where the response begins.

    The `"alpaca"` template is Stanford Alpaca's, in its with-input and
    no-input variants; both end with `"### Response:\\n"`. A `Conversation`
    is rendered in Gemma's turn format whatever the template, up to its final
    assistant turn (see `conversation_segments`).

    Args:
        record: the record to format.
        template: a name in `PROMPT_TEMPLATES`.

    Returns:
        The prompt text; the record's `output` is the text that follows it.

    Raises:
        ConfigError: `template` is not a name in `PROMPT_TEMPLATES`.
        DataError: `record` is not a `Record`.

    Example:
    >>> print(format_prompt(Record("Say hi.", "", "Hi!", "x.jsonl:1")))
    Below is an instruction that describes a task. Write a response that appropriately completes the request.
    <BLANKLINE>
    ### Instruction:
    Say hi.
    <BLANKLINE>
    ### Response:
    <BLANKLINE>
    """
    if not isinstance(template, str) or template not in PROMPT_TEMPLATES:
        raise ConfigError(
            f"template must be one of {', '.join(map(repr, PROMPT_TEMPLATES))}; got {template!r}."
        )
    if not isinstance(record, Record):
        raise DataError(
            f"format_prompt takes a Record (from read_records); got {type(record).__name__}."
        )
    if isinstance(record, Conversation):
        return "".join(text for text, _ in conversation_segments(record, generation_prompt=True))
    with_input, no_input = PROMPT_TEMPLATES[template]
    if record.input:
        return with_input.format(instruction=record.instruction, input=record.input)
    return no_input.format(instruction=record.instruction)


def to_prompt_response(
    records: Iterable[Record], template: str = "alpaca"
) -> dict[str, list[str]]:
    """Records as the `{"prompts", "responses"}` input of a CausalLMPreprocessor.

    KerasHub's `CausalLMPreprocessor` packs each prompt and response into one
    sequence and weights the loss on the response tokens only. With
    `gemma_chat`, or when a record is a `Conversation`, the examples also
    hold `"segments"` and `"sources"` (see `training_segments`), which
    `training.batching.tokenize` trains on instead: the model's turn closed
    by `<end_of_turn>`, and every assistant turn of a conversation.

    Args:
        records: the records to format.
        template: a name in `PROMPT_TEMPLATES`.

    Returns:
        `{"prompts": [...], "responses": [...]}`, aligned by index: the
        prompt up to the (final) response, and the reference response; plus
        `"segments"` and `"sources"` as said above.

    Raises:
        ConfigError: `template` is not a name in `PROMPT_TEMPLATES`.
        DataError: an item of `records` is not a `Record`.

    Example:
    >>> examples = to_prompt_response([Record("Say hi.", "", "Hi!", "x.jsonl:1")])
    >>> examples["responses"]
    ['Hi!']
    """
    records = list(records)
    examples = {
        "prompts": [format_prompt(record, template) for record in records],
        "responses": [record.output for record in records],
    }
    if template == "gemma_chat" or any(isinstance(r, Conversation) for r in records):
        examples["segments"] = [training_segments(record, template) for record in records]
        examples["sources"] = [record.source for record in records]
    return examples


def training_segments(record: Record, template: str = "alpaca") -> list[tuple[str, bool]] | None:
    """The `(text, trains)` pieces one record trains on, or `None` for the preprocessor's way.

    A `Conversation` gives `conversation_segments` (every assistant turn and
    its `<end_of_turn>` train); with `gemma_chat` an instruction record is a
    one-turn conversation (the prompt, then the response and `<end_of_turn>`,
    which train); with `alpaca` it is `None`: KerasHub's preprocessor packs
    prompt, response and end token as before.

    Args:
        record: the record.
        template: a name in `PROMPT_TEMPLATES`.

    Returns:
        The pieces, or `None`.

    Example:
    >>> training_segments(Record("Say hi.", "", "Hi!", "x.jsonl:1"), "gemma_chat")[1:]
    [('Hi!<end_of_turn>', True), ('\\n', False)]
    """
    if isinstance(record, Conversation):
        return conversation_segments(record)
    if template != "gemma_chat":
        return None
    return [(format_prompt(record, template), False), (record.output + END_OF_TURN, True),
            ("\n", False)]
