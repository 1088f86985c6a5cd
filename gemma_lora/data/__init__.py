"""The data stage: instruction records and labelled texts, read, checked, formatted and split.

A data set is a list of `Record`s with the three Alpaca fields
(`instruction`, optional `input`, `output`), or of `Conversation`s (OpenAI
`messages` or ShareGPT `conversations` records, see `conversations`), read
from a JSON list, a JSONL file, a CSV file (`read_records`) or a TensorFlow
Datasets split written `"tfds:NAME[SPLIT]"`, or a Hugging Face data set
(`"hf:NAME[SPLIT]"`, a `save_to_disk` folder, Parquet or Arrow files; the
optional `datasets` package) (`read_source`). Every record is checked field by field
(an error names the file, the line and the field). Records are turned into
the `{"prompts": [...], "responses": [...]}` dictionary that KerasHub's
`CausalLMPreprocessor` takes, in one of the `PROMPT_TEMPLATES`
(`to_prompt_response`), split into train, validation and test sets from a
seed (`split_records`, `load_splits`), and measured against the training
sequence length (`truncation_report`). Classification data are labelled
texts (`read_labelled`) that become records whose response is the label
(`to_records`, `load_labelled_splits`, `check_labels`).

Modules: `records` (the record, its fields and their validation),
`conversations` (multi-turn records in Gemma's turn format), `hf` (Hugging
Face data sets), `files`
(JSON, JSONL and CSV), `tfds` (TensorFlow Datasets), `templates` (prompts),
`splits`, `truncation`, `labelled` (classification) and `messages` (how
errors quote names). Everything other code needs is re-exported here.

Example:
>>> from gemma_lora import data
>>> records = data.read_records("data/order_extraction.jsonl")
>>> splits = data.split_records(records, validation_fraction=0.05, test_fraction=0.1)
>>> train = data.to_prompt_response(splits.train)
>>> train["prompts"][0].endswith("### Response:\\n")
True
"""

from gemma_lora.data.conversations import CONVERSATION_FORMATS
from gemma_lora.data.conversations import END_OF_TURN
from gemma_lora.data.conversations import Conversation
from gemma_lora.data.conversations import Turn
from gemma_lora.data.conversations import conversation_segments
from gemma_lora.data.conversations import make_conversation
from gemma_lora.data.files import FORMATS
from gemma_lora.data.files import read_records
from gemma_lora.data.hf import HF_PREFIX
from gemma_lora.data.hf import is_hf_source
from gemma_lora.data.hf import load_hf_records
from gemma_lora.data.hf import parse_hf_source
from gemma_lora.data.labelled import LABELLED_FIELDS
from gemma_lora.data.labelled import LabelledText
from gemma_lora.data.labelled import check_labels
from gemma_lora.data.labelled import default_instruction
from gemma_lora.data.labelled import labels_of
from gemma_lora.data.labelled import load_labelled_splits
from gemma_lora.data.labelled import read_labelled
from gemma_lora.data.labelled import shorten_texts
from gemma_lora.data.labelled import to_records
from gemma_lora.data.records import ALPACA_FIELDS
from gemma_lora.data.records import DOLLY_FIELDS
from gemma_lora.data.records import OPTIONAL_FIELDS
from gemma_lora.data.records import RECORD_FIELDS
from gemma_lora.data.records import Record
from gemma_lora.data.records import resolve_fields
from gemma_lora.data.splits import Splits
from gemma_lora.data.splits import filter_categories
from gemma_lora.data.splits import load_splits
from gemma_lora.data.splits import make_splits
from gemma_lora.data.splits import read_source
from gemma_lora.data.splits import split_records
from gemma_lora.data.templates import PROMPT_TEMPLATES
from gemma_lora.data.templates import format_prompt
from gemma_lora.data.templates import training_segments
from gemma_lora.data.templates import to_prompt_response
from gemma_lora.data.tfds import TFDS_PREFIX
from gemma_lora.data.tfds import load_tfds_records
from gemma_lora.data.tfds import parse_tfds_source
from gemma_lora.data.tfds import summarize_tfds_error
from gemma_lora.data.truncation import TruncationReport
from gemma_lora.data.truncation import fit_segments
from gemma_lora.data.truncation import token_counts
from gemma_lora.data.truncation import truncation_report

__all__ = [
    # records
    "ALPACA_FIELDS",
    "DOLLY_FIELDS",
    "OPTIONAL_FIELDS",
    "RECORD_FIELDS",
    "Record",
    "resolve_fields",
    # conversations
    "CONVERSATION_FORMATS",
    "END_OF_TURN",
    "Conversation",
    "Turn",
    "conversation_segments",
    "make_conversation",
    # files
    "FORMATS",
    "read_records",
    # Hugging Face datasets
    "HF_PREFIX",
    "is_hf_source",
    "load_hf_records",
    "parse_hf_source",
    # tfds
    "TFDS_PREFIX",
    "load_tfds_records",
    "parse_tfds_source",
    "summarize_tfds_error",
    # templates
    "PROMPT_TEMPLATES",
    "format_prompt",
    "training_segments",
    "to_prompt_response",
    # splits
    "Splits",
    "filter_categories",
    "load_splits",
    "make_splits",
    "read_source",
    "split_records",
    # truncation
    "TruncationReport",
    "fit_segments",
    "token_counts",
    "truncation_report",
    # labelled
    "LABELLED_FIELDS",
    "LabelledText",
    "check_labels",
    "default_instruction",
    "labels_of",
    "load_labelled_splits",
    "read_labelled",
    "shorten_texts",
    "to_records",
]
