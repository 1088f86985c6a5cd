"""The serving runtimes on many prompts at once, for the export tests and `benchmarks/export_fidelity.py`.

The exports are checked by the software that serves them: transformers (a
Hugging Face folder, or a GGUF through its GGUF loader) and llama.cpp
(through llama-cpp-python). These helpers run them on a batch of prompts
and Keras' greedy answers to them, and read out what those runtimes
compute: log-probabilities at each greedy step, and their own greedy
answers. Nothing here computes a model: the Keras side is the model's own
backbone and output head, the other sides are the runtimes'. PyTorch and
llama-cpp-python are imported by the caller and passed in (they are
optional extras: `requirements-interop.txt`).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from types import ModuleType

import keras
import keras_hub
import numpy as np

from gemma_lora import lora


def log_softmax(logits: object) -> np.ndarray:
    """Log-probabilities in float64 over the last axis.

    Example:
    >>> log_softmax([[0.0, 0.0]]).round(4).tolist()
    [[-0.6931, -0.6931]]
    """
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def randomize_lora(model: keras.Model, seed: int = 0, std: float = 0.2) -> None:
    """Give every LoRA factor of the model seeded normal values (a non-zero adapter without training).

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> model = tiny_causal_lm()
    >>> _ = lora.enable_lora(model, lora.LoraConfig(rank=2))
    >>> randomize_lora(model, seed=0, std=0.1)
    >>> bool(np.all(np.asarray(lora.lora_layers(model)[0].lora_kernel_b) != 0))
    True
    """
    rng = np.random.default_rng(seed)
    lora.assign_lora_weights(model, {key: rng.normal(0, std, value.shape).astype(np.float32)
                                     for key, value in lora.lora_weights(model).items()})


def lora_copy(model: keras_hub.models.Gemma3CausalLM, lora_config: lora.LoraConfig, seed: int,
              std: float) -> keras_hub.models.Gemma3CausalLM:
    """A copy of a Gemma 3 causal LM with LoRA and seeded random factors; `model` is left as it is.

    Args:
        model: the base model (shared: not changed).
        lora_config: the LoRA to enable on the copy.
        seed, std: of `randomize_lora`.

    Returns:
        The copy, preprocessor shared.

    Example:
    >>> from gemma_lora.testing import tiny_causal_lm
    >>> base = tiny_causal_lm()
    >>> tuned = lora_copy(base, lora.LoraConfig(rank=2), seed=0, std=0.1)
    >>> len(lora.lora_layers(tuned)), len(lora.lora_layers(base))
    (4, 0)
    """
    source = model.backbone
    backbone = type(source).from_config(source.get_config())
    for variable, value in zip(backbone.weights, source.weights):
        variable.assign(value)
    copy = keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=model.preprocessor)
    lora.enable_lora(copy, lora_config)
    randomize_lora(copy, seed=seed, std=std)
    return copy


class GreedySteps:
    """The greedy steps of many answers, in one right-padded batch of each prompt and its answer.

    Step `s` of row `r` is the position whose next-token distribution chose
    answer token `s`; logits are computed there only (the vocabulary
    projection is most of a small model's work).

    Args:
        prompt_ids: each prompt's token ids (`<bos>` first).
        answer_ids: each prompt's greedy answer ids (a stopping token included).

    Example:
    >>> steps = GreedySteps([[2, 7, 8], [2, 9]], [[5, 1], [6]])
    >>> steps.ids.tolist(), steps.rows.tolist(), steps.positions.tolist(), steps.tokens.tolist()
    ([[2, 7, 8, 5, 1], [2, 9, 6, 0, 0]], [0, 0, 1], [2, 3, 1], [5, 1, 6])
    """

    def __init__(self, prompt_ids: Sequence[Sequence[int]], answer_ids: Sequence[Sequence[int]]):
        self.sequences = [list(p) + list(a) for p, a in zip(prompt_ids, answer_ids)]
        lengths = np.array([len(sequence) for sequence in self.sequences])
        self.ids = np.zeros((len(self.sequences), lengths.max()), dtype=np.int32)
        for row, sequence in enumerate(self.sequences):
            self.ids[row, :len(sequence)] = sequence
        self.mask = np.arange(self.ids.shape[1])[None] < lengths[:, None]
        self.rows = np.concatenate([[row] * len(a) for row, a in enumerate(answer_ids)])
        self.positions = np.concatenate([np.arange(len(p) - 1, len(p) - 1 + len(a))
                                         for p, a in zip(prompt_ids, answer_ids)])
        self.tokens = np.concatenate(answer_ids)

    def keras_logits(self, model: keras_hub.models.CausalLM) -> np.ndarray:
        """The Keras model's logits at the steps: its backbone, then its own output head.

        Example:
        >>> from gemma_lora.testing import tiny_causal_lm
        >>> GreedySteps([[2, 7, 8]], [[5, 1]]).keras_logits(tiny_causal_lm()).shape
        (2, 512)
        """
        hidden = np.asarray(model.backbone({"token_ids": self.ids, "padding_mask": self.mask}))
        return np.asarray(model.backbone.token_embedding(
            hidden[self.rows, self.positions][None], reverse=True))[0]

    def torch_log_probs(self, torch: ModuleType, hf: object) -> np.ndarray:
        """A transformers causal LM's log-probs at the steps: its decoder, then its `lm_head`.

        Example::

            steps.torch_log_probs(torch, transformers.AutoModelForCausalLM.from_pretrained(folder))
        """
        with torch.no_grad():
            hidden = hf.model(input_ids=torch.as_tensor(self.ids, dtype=torch.long),
                              attention_mask=torch.as_tensor(self.mask, dtype=torch.long)
                              ).last_hidden_state
            logits = hf.lm_head(hidden[torch.as_tensor(self.rows), torch.as_tensor(self.positions)])
        return log_softmax(logits.double().numpy())


class LlamaBatch:
    """llama.cpp decoding many sequences in one batch (llama-cpp-python's low-level API).

    The model (and a GGUF LoRA adapter) is loaded by llama.cpp, which also
    tokenizes and detokenizes; the context holds one sequence per prompt.

    Args:
        llama_cpp: the `llama_cpp` module.
        model_path: a GGUF model file.
        sequences: how many sequences at once (up to 256 tokens each).
        lora_path: a GGUF LoRA adapter to apply, or `None`.
        threads: llama.cpp's threads.

    Example::

        runner = LlamaBatch(llama_cpp, "model.gguf", sequences=2)
        logits = runner.logits([(0, 0, 2, False), (0, 1, 7, True), (1, 0, 2, True)])  # 2 rows
        runner.close()
    """

    def __init__(self, llama_cpp: ModuleType, model_path: str | os.PathLike, sequences: int,
                 lora_path: str | os.PathLike | None = None, threads: int = 1):
        self.llama_cpp = llama_cpp
        self.llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=16, n_threads=threads,
                                   verbose=False)
        model, self.vocab = self.llm._model.model, self.llm._model.vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = sequences * 256  # 256 a sequence
        params.n_seq_max = sequences
        params.n_threads = params.n_threads_batch = threads
        self.context = llama_cpp.llama_init_from_model(model, params)
        self.adapter = None
        if lora_path is not None:
            self.adapter = llama_cpp.llama_adapter_lora_init(model, os.fspath(lora_path).encode())
            if not self.adapter or llama_cpp.llama_set_adapters_lora(
                    self.context, (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self.adapter), 1,
                    (ctypes.c_float * 1)(1.0)):
                raise RuntimeError(f"llama.cpp did not apply the adapter {os.fspath(lora_path)!r}")
        self.batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)

    def logits(self, entries: Sequence[tuple[int, int, int, bool]]) -> np.ndarray:
        """Decode `[(sequence, position, token, wants logits)]`; the wanted entries' logits, in order."""
        batch = self.batch
        batch.n_tokens = len(entries)
        for index, (sequence, position, token, wanted) in enumerate(entries):
            batch.token[index], batch.pos[index], batch.n_seq_id[index] = token, position, 1
            batch.seq_id[index][0], batch.logits[index] = sequence, wanted
        if self.llama_cpp.llama_decode(self.context, batch):
            raise RuntimeError("llama_decode failed")
        return np.stack([np.ctypeslib.as_array(self.llama_cpp.llama_get_logits_ith(
            self.context, index), shape=(self.n_vocab,)).copy()
            for index, entry in enumerate(entries) if entry[3]])

    def is_end(self, token: int) -> bool:
        """Whether llama.cpp ends a generation at `token` (its end-of-generation tokens)."""
        return bool(self.llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        """Free the batch, the context, the adapter and the model."""
        self.llama_cpp.llama_batch_free(self.batch)
        self.llama_cpp.llama_free(self.context)
        if self.adapter is not None:
            self.llama_cpp.llama_adapter_lora_free(self.adapter)
        self.llm.close()


def llama_greedy(llama_cpp: ModuleType, model_path: str | os.PathLike, prompts: Sequence[str],
                 max_new_tokens: int, lora_path: str | os.PathLike | None = None,
                 threads: int = 1) -> tuple[list[list[int]], list[list[int]], list[str]]:
    """llama.cpp's greedy answers to all prompts, decoded together (the argmax, as its greedy sampler's).

    Args:
        llama_cpp: the `llama_cpp` module.
        model_path: a GGUF model file.
        prompts: formatted prompts (llama.cpp adds `<bos>`).
        max_new_tokens: most tokens generated per prompt.
        lora_path: a GGUF LoRA adapter to apply, or `None`.
        threads: llama.cpp's threads.

    Returns:
        llama.cpp's prompt token ids, each answer's ids (its stopping token
        included) and texts (stopping token left out).

    Example::

        prompt_ids, answer_ids, texts = llama_greedy(llama_cpp, "model.gguf", prompts, 16)
    """
    runner = LlamaBatch(llama_cpp, model_path, len(prompts), lora_path, threads)
    try:
        prompt_ids = [runner.llm.tokenize(prompt.encode(), add_bos=True, special=True)
                      for prompt in prompts]
        choices = runner.logits([(row, position, token, position == len(ids) - 1)
                                 for row, ids in enumerate(prompt_ids)
                                 for position, token in enumerate(ids)]).argmax(-1)
        answers: list[list[int]] = [[] for _ in prompts]
        active = list(range(len(prompts)))
        for step in range(max_new_tokens):
            for row, token in zip(active, choices):
                answers[row].append(int(token))
            active = [row for row in active if not runner.is_end(answers[row][-1])]
            if not active or step == max_new_tokens - 1:
                break
            choices = runner.logits([(row, len(prompt_ids[row]) + step, answers[row][-1], True)
                                     for row in active]).argmax(-1)
        texts = [runner.llm.detokenize([token for token in ids if not runner.is_end(token)])
                 .decode(errors="replace") for ids in answers]
    finally:
        runner.close()
    return prompt_ids, answers, texts


def llama_step_log_probs(llama_cpp: ModuleType, model_path: str | os.PathLike,
                         steps: GreedySteps, lora_path: str | os.PathLike | None = None,
                         threads: int = 1) -> np.ndarray:
    """llama.cpp's log-probs at each of the steps (every prompt and its answer in one batch).

    Args:
        llama_cpp: the `llama_cpp` module.
        model_path: a GGUF model file.
        steps: the prompts, answers and steps to read.
        lora_path: a GGUF LoRA adapter to apply, or `None`.
        threads: llama.cpp's threads.

    Returns:
        `[steps, vocabulary]` log-probabilities, in the steps' order.

    Example::

        log_probs = llama_step_log_probs(llama_cpp, "model.gguf", GreedySteps(prompt_ids, answer_ids))
    """
    runner = LlamaBatch(llama_cpp, model_path, len(steps.sequences), lora_path, threads)
    wanted = set(zip(steps.rows.tolist(), steps.positions.tolist()))
    try:  # the batch runs row by row, position by position: the steps' order
        logits = runner.logits([(row, position, token, (row, position) in wanted)
                                for row, sequence in enumerate(steps.sequences)
                                for position, token in enumerate(sequence)])
    finally:
        runner.close()
    return log_softmax(logits)
