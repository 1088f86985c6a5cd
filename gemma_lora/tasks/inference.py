"""Use a tuned model: read requests, answer them in batches, time it, save.

Example:
>>> import tempfile; folder = tempfile.mkdtemp()
>>> from gemma_lora.testing import tiny_causal_lm
>>> model = tiny_causal_lm()  # random weights: its answers are gibberish
>>> requests = read_requests("data/order_requests.jsonl")[:2]
>>> prompts = [data.format_prompt(r) for r in requests]
>>> timing = timed_generation(model, prompts, max_new_tokens=4, batch_size=2)
>>> len(timing.answers), timing.seconds > 0
(2, True)
>>> write_predictions(f"{folder}/predictions.jsonl", requests, timing.answers)
>>> import json
>>> with open(f"{folder}/predictions.jsonl", encoding="utf-8") as file:
...     sorted(json.loads(file.readline()))
['input', 'instruction', 'prediction']
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Sequence

import keras_hub

from gemma_lora import data
from gemma_lora.tasks import decoding
from gemma_lora.tasks import evaluation
from gemma_lora.tasks import generation
from gemma_lora.errors import DataError
from gemma_lora.io_utils import write_jsonl_atomic
from gemma_lora.validation import check_sampling


def read_requests(path: str | os.PathLike) -> list[data.Record]:
    """Read unanswered requests: JSONL objects with `instruction` and optional `input`.

    Args:
        path: a `.jsonl` file, one request per line.

    Returns:
        Records with an empty `output`.

    Raises:
        DataError: naming the file, line and field of a malformed request.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found; expected a .jsonl file of requests.")
    requests = []
    with open(path, encoding="utf-8-sig") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{where}: not valid JSON ({error.msg}).") from error
            if not isinstance(row, dict) or not isinstance(row.get("instruction"), str) \
                    or not row["instruction"].strip():
                raise DataError(f"{where}: field 'instruction' must be a non-empty string.")
            if not isinstance(row.get("input", ""), str):
                raise DataError(f"{where}: field 'input' must be a string.")
            requests.append(data.Record(row["instruction"], row.get("input", ""), "", where))
    if not requests:
        raise DataError(f"{path}: no requests found.")
    return requests


@dataclasses.dataclass
class GenerationTiming:
    """Answers and how long generating them took (after compilation).

    Args:
        answers: the extracted answers, in request order.
        seconds: wall-clock generation time, compilation excluded.
        new_tokens: tokens generated, end tokens included.
    """

    answers: list[str]
    seconds: float
    new_tokens: int

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def timed_generation(
    model: keras_hub.models.CausalLM,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
) -> GenerationTiming:
    """Answers for `prompts` (greedy unless a temperature is given), timed after compiling.

    A text-only Gemma 3 compiles every program the run needs first
    (`decoding.Decoder.compile`), so the time is decoding only; other models
    warm up on one batch.

    Args:
        model: a KerasHub `CausalLM`.
        prompts: formatted prompts.
        max_new_tokens: generation budget per prompt.
        batch_size: prompts per batch.
        temperature: 0 or None for greedy decoding, else the sampling temperature.
        top_k: when sampling, only among the `top_k` most likely tokens.
        top_p: when sampling, only among the tokens holding probability `top_p`.
        seed: seed of the sampling.

    Returns:
        A `GenerationTiming`.
    """
    options = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
    if decoding.supports_fast_decoding(model):
        check_sampling(temperature, top_k, top_p)
        sampling = decoding.Sampling(temperature or None, top_k, top_p, seed)
        decoder = decoding.decoder_for(model)
        decoder.compile(prompts, max_new_tokens, batch_size, sampling, stop_at_section=True)
        start = time.perf_counter()
        result = decoder.decode(prompts, max_new_tokens, batch_size, sampling, stop_at_section=True)
        seconds = time.perf_counter() - start
        return GenerationTiming([evaluation.extract_answer(text) for text in result.texts],
                                seconds, result.new_tokens)
    generation.generate_responses(model, prompts[:batch_size], max_new_tokens, batch_size, **options)
    start = time.perf_counter()
    generations = generation.generate_responses(model, prompts, max_new_tokens, batch_size, **options)
    seconds = time.perf_counter() - start
    token_ids = model.preprocessor.tokenizer(list(generations))
    if hasattr(token_ids, "to_list"):
        token_ids = token_ids.to_list()
    new_tokens = sum(len(ids) + 1 for ids in token_ids)
    return GenerationTiming([evaluation.extract_answer(text) for text in generations],
                            seconds, new_tokens)


def write_predictions(path: str | os.PathLike, requests: Sequence[data.Record],
                      answers: Sequence[str]) -> None:
    """Write one JSON object per request (`instruction`, `input`, `prediction`), atomically."""
    write_jsonl_atomic(path, ({"instruction": r.instruction, "input": r.input, "prediction": a}
                              for r, a in zip(requests, answers)))
