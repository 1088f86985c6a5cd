"""Prompt templates: records as the prompts and responses a causal LM trains on.

A template turns a record's instruction (and input, if any) into the prompt
that precedes the response. `to_prompt_response` gives the
`{"prompts": [...], "responses": [...]}` dictionary that KerasHub's
`CausalLMPreprocessor` takes, so the loss covers the response only. The
template names are also `gemma_lora.config.TEMPLATES`, which `RunConfig`
checks `template` against.

Example:
>>> examples = to_prompt_response([Record("Say hi.", "", "Hi!", "x.jsonl:1")], "gemma_chat")
>>> examples["prompts"][0]
'<start_of_turn>user\\nSay hi.<end_of_turn>\\n<start_of_turn>model\\n'
"""

from __future__ import annotations

from collections.abc import Iterable

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
    no-input variants; both end with `"### Response:\\n"`.

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
    with_input, no_input = PROMPT_TEMPLATES[template]
    if record.input:
        return with_input.format(instruction=record.instruction, input=record.input)
    return no_input.format(instruction=record.instruction)


def to_prompt_response(
    records: Iterable[Record], template: str = "alpaca"
) -> dict[str, list[str]]:
    """Records as the `{"prompts", "responses"}` input of a CausalLMPreprocessor.

    KerasHub's `CausalLMPreprocessor` packs each prompt and response into one
    sequence and weights the loss on the response tokens only.

    Args:
        records: the records to format.
        template: a name in `PROMPT_TEMPLATES`.

    Returns:
        `{"prompts": [...], "responses": [...]}`, aligned by index.

    Raises:
        ConfigError: `template` is not a name in `PROMPT_TEMPLATES`.
        DataError: an item of `records` is not a `Record`.

    Example:
    >>> examples = to_prompt_response([Record("Say hi.", "", "Hi!", "x.jsonl:1")])
    >>> examples["responses"]
    ['Hi!']
    """
    records = list(records)
    return {
        "prompts": [format_prompt(record, template) for record in records],
        "responses": [record.output for record in records],
    }
