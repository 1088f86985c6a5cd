"""Evaluate a causal LM on held-out examples: loss, generation, task metrics.

The same `evaluate` call is made on the base model before training and
on the tuned model after, so the comparison is like for like: the same test
prompts, greedy decoding, the same answer extraction and metrics.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import weakref
from typing import Any, Sequence

import keras_hub
from rouge_score import rouge_scorer

from gemma_lora.tasks.stopping import SECTION_HEADER
from gemma_lora.tasks.generation import generate_responses
from gemma_lora.training import batching
from gemma_lora.training.steps import CompiledSteps




@dataclasses.dataclass
class Evaluation:
    """Results of one model on one held-out split.

    Args:
        loss: mean cross-entropy per response token.
        perplexity: `exp(loss)`.
        exact_match: share of answers equal to the reference after
            normalisation (see `answers_match`), in [0, 1].
        rouge_l: mean ROUGE-L F1 of answers against references, in [0, 1].
        predictions: the extracted answers, in test order.
        num_examples: number of test examples.
        generation_seconds: time spent generating.
    """

    loss: float
    perplexity: float
    exact_match: float
    rouge_l: float
    predictions: list[str]
    num_examples: int
    generation_seconds: float

    def scores(self) -> dict[str, float]:
        """The scalar results, for tables and `metrics.json`."""
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "exact_match": self.exact_match,
            "rouge_l": self.rouge_l,
            "num_examples": self.num_examples,
            "generation_seconds": self.generation_seconds,
        }


def extract_answer(generation: str) -> str:
    """The answer part of a generation: up to the end of the model's turn or the next section.

    Args:
        generation: text generated after the prompt.

    Returns:
        The generation cut before Gemma's `<end_of_turn>` and before a
        `### ...` header, stripped.

    Example:
    >>> extract_answer(' {"a": 1}\\n\\n### Instruction:\\nmore')
    '{"a": 1}'
    >>> extract_answer('{"a": 1}<end_of_turn>\\n<start_of_turn>user')
    '{"a": 1}'
    """
    generation = generation.split("<end_of_turn>", 1)[0]
    return SECTION_HEADER.split(generation, maxsplit=1)[0].strip()


def normalize_answer(text: str) -> Any:
    """Canonical form of an answer for exact match.

    JSON answers compare as parsed values (so spacing and quoting style do
    not matter); other text compares lower-cased with whitespace collapsed
    and trailing full stops removed.

    Args:
        text: an answer or reference.

    Returns:
        A parsed JSON value or a normalised string.

    Example:
    >>> normalize_answer('{"a":  1}') == normalize_answer('{"a": 1}')
    True
    """
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        return " ".join(text.lower().split()).rstrip(".")


def answers_match(prediction: str, reference: str) -> bool:
    """Whether two answers are equal after `normalize_answer`."""
    return normalize_answer(prediction) == normalize_answer(reference)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 (Google's `rouge-score`, with stemming).

    Args:
        predictions: generated answers.
        references: reference answers, in the same order.

    Returns:
        The mean F1 in [0, 1] (0 for no examples).
    """
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure
              for pred, ref in zip(predictions, references)]
    return sum(scores) / len(scores) if scores else 0.0


# One set of compiled loss steps per model, reused while its variables stay the same.
_LOSS_STEPS: "weakref.WeakKeyDictionary[keras_hub.models.CausalLM, CompiledSteps]" = (
    weakref.WeakKeyDictionary())


def loss_steps(model: keras_hub.models.CausalLM) -> CompiledSteps:
    """The training step's compiled loss for `model`, built once and reused.

    The steps read the variables' current values at each call, so the same
    compiled functions score the base model and, after training (or after
    loading an adapter), the tuned one; they are rebuilt only when the model's
    variables changed (e.g. LoRA was enabled since).

    Args:
        model: a KerasHub `CausalLM`.

    Returns:
        A `CompiledSteps` (without optimizer) bound to `model`.
    """
    steps = _LOSS_STEPS.get(model)
    if steps is None or not steps.is_bound_to(model):
        steps = _LOSS_STEPS[model] = CompiledSteps(model)
    else:
        steps.read_variables()
    return steps


def response_token_loss(
    model: keras_hub.models.CausalLM,
    examples: dict[str, list[str]],
    batch_size: int,
    sequence_length: int,
    steps: CompiledSteps | None = None,
) -> float:
    """Mean cross-entropy per response token (prompt tokens carry no loss).

    Batches are bucketed by length as in training, and only the hidden
    states at response positions go through the vocabulary projection (the
    training step's own loss). Its compiled functions are kept per model
    (`loss_steps`), so a second call with the same shapes compiles nothing.

    Args:
        model: a KerasHub `CausalLM`.
        examples: `{"prompts", "responses"}`.
        batch_size: examples per forward pass.
        sequence_length: tokens per example, as in training.
        steps: compiled steps bound to `model` whose values are current
            (e.g. the training run's); by default `loss_steps(model)`.

    Returns:
        The mean loss in nats.
    """
    split = batching.tokenize(model.preprocessor, examples, sequence_length)
    batches = batching.evaluation_batches(
        split, batch_size, batching.bucket_lengths(sequence_length),
        batching.loss_buffer_size(split),
    )
    return (steps or loss_steps(model)).mean_loss(batches)


def evaluate(
    model: keras_hub.models.CausalLM,
    examples: dict[str, list[str]],
    max_new_tokens: int,
    batch_size: int,
    sequence_length: int,
    progress: str | None = None,
) -> Evaluation:
    """Loss, perplexity, exact match and ROUGE-L on held-out examples.

    Args:
        model: a KerasHub `CausalLM` (base or tuned).
        examples: `{"prompts", "responses"}` of the test split.
        max_new_tokens: generation budget per example.
        batch_size: examples per batch.
        sequence_length: tokens per example for the loss.
        progress: when given, the description of a progress bar over the
            generations (`"generate (baseline)"`); none by default.

    Returns:
        An `Evaluation`.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()  # random weights: its answers are gibberish
    >>> test = {"prompts": ["Which color? One red mug.", "Which color? A blue hat."],
    ...         "responses": ["red", "blue"]}
    >>> baseline = evaluate(model, test, max_new_tokens=4, batch_size=2, sequence_length=32)
    >>> baseline.num_examples, baseline.exact_match
    (2, 0.0)
    >>> 4 < baseline.loss < 9  # about log(512), the loss of a uniform guess
    True
    """
    loss = response_token_loss(model, examples, batch_size, sequence_length)
    start = time.perf_counter()
    generations = generate_responses(model, examples["prompts"], max_new_tokens, batch_size,
                                     progress=progress)
    seconds = time.perf_counter() - start
    predictions = [extract_answer(text) for text in generations]
    references = examples["responses"]
    matches = [answers_match(p, r) for p, r in zip(predictions, references)]
    return Evaluation(
        loss=loss,
        perplexity=math.exp(min(loss, 50.0)),
        exact_match=sum(matches) / len(matches) if matches else 0.0,
        rouge_l=rouge_l(predictions, references),
        predictions=predictions,
        num_examples=len(references),
        generation_seconds=seconds,
    )
