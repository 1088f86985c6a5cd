"""A batched decoder for Gemma 3 causal LMs: prefill once, then new tokens only.

KerasHub's `Gemma3CausalLM.generate` seeds its cache with a forward pass
(and a vocabulary projection) over the whole padded `max_length` window, then
decodes one position at a time from the batch's *shortest* prompt to
`max_length`, and stops only when every row has emitted an end token. This
decoder gives the same greedy tokens with less work:

- prompts are left-padded to a bucket length `P` (a multiple of 32, so a
  split compiles a handful of programs), so every row's last prompt token
  sits at index `P - 1` and every new token of a step is written at the same
  cache index; RoPE is applied at each token's true position in its prompt
  (`index - padding`), the angle KerasHub gives it, and padding keys are
  masked out;
- one prefill over the prompts keeps the per-layer key/value cache and
  projects to the vocabulary only at the last prompt position;
- then one compiled `jax.lax.while_loop` decodes new tokens only, for the
  whole batch, until every row has stopped or `max_new_tokens` is reached;
  a row stops on an end token (`<eos>`, `<end_of_turn>`) or, optionally,
  when its text reaches the prompt template's next `###` section (tracked
  per token with a small automaton over the vocabulary's texts).

Everything runs through the model's own sublayers (embedding, norms, the
query/key/value/output and feed-forward projections, so LoRA and quantized
layers behave as in the backbone, RoPE, the attention math), called
statelessly on the variables' current values inside `jax.jit`, as the
training step does. Greedy decoding picks `argmax(softmax(logits))` as
KerasHub's `GreedySampler` does; sampling (temperature, top-k, top-p) draws
from a key per prompt and step, so a prompt's sample does not depend on the
batch it is in.
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from typing import Sequence

import jax
import jax.numpy as jnp
import keras
import keras_hub
import numpy as np

from gemma_lora.progress import Progress
from gemma_lora.tasks import stopping

# Why a row stopped (`Generations.stop_reasons`).
BUDGET, END_TOKEN, STOP_STRING = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next token is picked.

    Args:
        temperature: 0 (or `None`) decodes greedily; otherwise logits are
            divided by it before sampling.
        top_k: sample among the `top_k` most likely tokens only.
        top_p: sample among the smallest set of most likely tokens whose
            probabilities sum to at least `top_p`.
        seed: root of the random keys (one per prompt and step).
    """

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0

    @property
    def greedy(self) -> bool:
        """Whether tokens are picked by argmax."""
        return not self.temperature


@dataclasses.dataclass
class Generations:
    """Decoded continuations and what it took to produce them.

    Args:
        texts: the continuations (prompt stripped, end tokens removed, cut
            before the next template section when that stop was on).
        token_ids: per prompt, the generated ids (the stopping token included).
        stop_reasons: per prompt, `BUDGET`, `END_TOKEN` or `STOP_STRING`.
        compile_seconds: time spent compiling programs in this call.
        programs: distinct compiled shapes used in this call.
    """

    texts: list[str]
    token_ids: list[list[int]]
    stop_reasons: list[int]
    compile_seconds: float
    programs: int

    @property
    def new_tokens(self) -> int:
        """Tokens generated over all prompts, stopping tokens included."""
        return sum(len(ids) for ids in self.token_ids)

    @property
    def stopped_early(self) -> int:
        """Prompts that stopped before their token budget."""
        return sum(reason != BUDGET for reason in self.stop_reasons)


def supports_fast_decoding(model: keras.Model) -> bool:
    """Whether `model` is a text-only, causal Gemma 3 with a preprocessor, on JAX.

    Args:
        model: a KerasHub `CausalLM`.

    Returns:
        True when `decode` can run it.
    """
    backbone = getattr(model, "backbone", None)
    return (
        keras.config.backend() == "jax"
        and isinstance(backbone, keras_hub.models.Gemma3Backbone)
        and backbone.text_only_model
        and not backbone.use_bidirectional_attention
        and not backbone.is_embedding_model
        and getattr(model, "preprocessor", None) is not None
    )


def bucket_length(length: int) -> int:
    """The compiled prompt length for a batch whose longest prompt is `length`.

    Multiples of 32 up to 256, then of an eighth of the next power of two,
    so nearby lengths share a program and padding stays under ~12%.

    Args:
        length: tokens in the batch's longest prompt, start token included.

    Returns:
        The bucket length, at least `length`.

    Example:
    >>> [bucket_length(n) for n in (5, 32, 33, 200, 300)]
    [32, 32, 64, 224, 320]
    """
    step = max(32, (1 << max(0, length - 1).bit_length()) // 8)
    return max(step, -(-length // step) * step)


def _block(block, x, attend):
    """`Gemma3DecoderBlock.call` at inference, with `attend(layer, x) -> (y, cache)`."""
    attention, cache = attend(block.attention, block.pre_attention_norm(x))
    if block.use_post_attention_norm:
        attention = block.post_attention_norm(attention)
    attention_x = x + attention
    normalized = block.pre_ffw_norm(attention_x)
    gate = keras.activations.gelu(block.gating_ffw(normalized), approximate=True)
    x = block.ffw_linear(gate * block.gating_ffw_2(normalized))
    if block.use_post_ffw_norm:
        x = block.post_ffw_norm(x)
    return x + attention_x, cache


def _project(layer, x, positions):
    """Queries, keys (normed, rotated at `positions`) and values, as the layer's `call`."""
    query = layer.query_dense(x)
    key = layer.key_dense(x)
    if layer.use_query_key_norm:
        query, key = layer.query_norm(query), layer.key_norm(key)
    query = layer.rope_layer(query, positions=positions)
    key = layer.rope_layer(key, positions=positions)
    return query, key, layer.value_dense(x)


def _pick(logits, sampling: Sampling, keys, step):
    """Next token per row from `[batch, vocabulary]` logits."""
    logits = logits.astype("float32")
    if sampling.greedy:
        # What KerasHub's GreedySampler does (ties resolve alike).
        return jnp.argmax(jax.nn.softmax(logits, axis=-1), axis=-1).astype("int32")
    logits = logits / sampling.temperature
    if sampling.top_k:
        kth = jax.lax.top_k(logits, sampling.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if sampling.top_p is not None and sampling.top_p < 1.0:
        probabilities = jax.nn.softmax(logits, axis=-1)
        ordered = -jnp.sort(-probabilities, axis=-1)
        # Keep a token while the mass before it is under top_p (the first always).
        kept = (jnp.cumsum(ordered, axis=-1) - ordered) < sampling.top_p
        threshold = jnp.min(jnp.where(kept, ordered, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(probabilities < threshold, -jnp.inf, logits)
    draw = lambda key, row: jax.random.categorical(jax.random.fold_in(key, step), row)
    return jax.vmap(draw)(keys, logits).astype("int32")


class Decoder:
    """Compiled prefill-and-decode programs bound to one model.

    Programs are compiled once per (batch size, prompt bucket, token budget,
    sampling) and reused; variable values are read at each call, so a model
    trained (or with an adapter loaded) since is decoded as it is now. Use
    `decoder_for(model)`, which keeps one per model.

    Attributes `end_ids` (ids that end a row) and `stop_table` (see
    `section_stop_table`) may be replaced before the first `decode`.

    Args:
        model: a text-only Gemma 3 `CausalLM` with a preprocessor.
    """

    def __init__(self, model: keras_hub.models.CausalLM):
        self.backbone = model.backbone
        self.preprocessor = model.preprocessor
        tokenizer = self.preprocessor.tokenizer
        self.variables = list(self.backbone.trainable_variables) + list(
            self.backbone.non_trainable_variables)
        self.signature = _variable_signature(self.backbone)
        self.start_id = tokenizer.start_token_id if self.preprocessor.add_start_token else None
        self.pad_id = int(tokenizer.pad_token_id)
        self.end_ids = tuple(sorted({int(tokenizer.end_token_id),
                                     int(tokenizer.token_to_id("<end_of_turn>"))}))
        # The `SECTION_HEADER` automaton over the vocabulary, built on first use.
        self.stop_table: np.ndarray | None = None
        self._programs: dict[tuple, jax.stages.Compiled] = {}

    # === The compiled program ===

    def _embed(self, token_ids):
        x = self.backbone.token_embedding(token_ids)
        return x * keras.ops.cast(keras.ops.sqrt(self.backbone.hidden_dim), x.dtype)

    def _logits(self, x):
        return self.backbone.token_embedding(self.backbone.layer_norm(x), reverse=True)

    def _program(self, values, token_ids, lengths, active, keys, stop_table, *,
                 max_new_tokens: int, sampling: Sampling, stop_at_section: bool):
        """Prefill then decode; returns `[batch, max_new_tokens]` ids, counts and reasons."""
        batch, prompt_length = token_ids.shape
        total = prompt_length + max_new_tokens
        with keras.StatelessScope(state_mapping=list(zip(self.variables, values))):
            pads = prompt_length - lengths
            index = jnp.arange(prompt_length)
            positions = jnp.maximum(index[None, :] - pads[:, None], 0)
            real = index[None, :] >= pads[:, None]
            # Causal over real keys; padding queries see only themselves (never read).
            mask = (index[:, None] >= index[None, :])[None] & real[:, None, :]
            mask = mask | jnp.eye(prompt_length, dtype=bool)[None]

            def prefill(layer, x):
                query, key, value = _project(layer, x, positions)
                attended = layer._compute_attention(query, key, value, mask)
                pad = ((0, 0), (0, max_new_tokens), (0, 0), (0, 0))
                return layer.output_dense(attended), (jnp.pad(key, pad), jnp.pad(value, pad))

            x = self._embed(token_ids)
            caches = []
            for block in self.backbone.transformer_layers:
                x, cache = _block(block, x, prefill)
                caches.append(cache)
            first = _pick(self._logits(x[:, -1:])[:, 0], sampling, keys, 0)

            end_ids = jnp.asarray(self.end_ids, dtype="int32")
            key_index = jnp.arange(total)
            key_real = key_index[None, :] >= pads[:, None]

            def record(step, token, out, done, state, reasons):
                token = jnp.where(done, self.pad_id, token)
                out = out.at[:, step].set(token)
                ended = ~done & jnp.isin(token, end_ids)
                if stop_at_section:
                    state = stop_table[token, state]
                    hit = ~done & ~ended & (state == stopping.MATCHED)
                else:
                    hit = jnp.zeros_like(done)
                reasons = jnp.where(ended, END_TOKEN, jnp.where(hit, STOP_STRING, reasons))
                counts_add = (~done).astype("int32")
                return out, done | ended | hit, state, reasons, counts_add

            out = jnp.full((batch, max_new_tokens), self.pad_id, dtype="int32")
            zeros = jnp.zeros((batch,), dtype="int32")
            out, done, state, reasons, counts = record(0, first, out, ~active, zeros, zeros)

            def cond(carry):
                step, _, _, done, _, _, _ = carry
                return (step < max_new_tokens) & ~jnp.all(done)

            def body(carry):
                step, caches, out, done, state, reasons, counts = carry
                write = prompt_length + step - 1
                step_positions = (lengths + step - 1)[:, None]
                step_mask = (key_real & (key_index[None, :] <= write))[:, None, :]

                def decode(layer, x, cache):
                    query, key, value = _project(layer, x, step_positions)
                    start = (0, write, 0, 0)
                    key_cache = jax.lax.dynamic_update_slice(cache[0], key.astype(cache[0].dtype), start)
                    value_cache = jax.lax.dynamic_update_slice(cache[1], value.astype(cache[1].dtype), start)
                    attended = layer._compute_attention(query, key_cache, value_cache, step_mask,
                                                        cache_update_index=write)
                    return layer.output_dense(attended), (key_cache, value_cache)

                x = self._embed(jax.lax.dynamic_slice_in_dim(out, step - 1, 1, axis=1))
                new_caches = []
                for block, cache in zip(self.backbone.transformer_layers, caches):
                    x, cache = _block(block, x, lambda layer, h, cache=cache: decode(layer, h, cache))
                    new_caches.append(cache)
                token = _pick(self._logits(x)[:, 0], sampling, keys, step)
                out, done, state, reasons, added = record(step, token, out, done, state, reasons)
                return step + 1, tuple(new_caches), out, done, state, reasons, counts + added

            carry = (jnp.int32(1), tuple(caches), out, done, state, reasons, counts)
            _, _, out, _, _, reasons, counts = jax.lax.while_loop(cond, body, carry)
        return out, counts, reasons

    # === Host side ===

    def _compiled(self, shapes: tuple, static: dict, arguments: tuple) -> tuple[jax.stages.Compiled, float]:
        key = shapes + tuple(sorted(static.items()))
        if key in self._programs:
            return self._programs[key], 0.0
        start = time.perf_counter()
        program = jax.jit(lambda *args: self._program(*args, **static)).lower(*arguments).compile()
        self._programs[key] = program
        return program, time.perf_counter() - start

    def token_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Prompt ids as `generate` sees them (start token first, no end token)."""
        ids = self.preprocessor.tokenizer(list(prompts))
        if hasattr(ids, "to_list"):  # a tf.RaggedTensor under TensorFlow.
            ids = ids.to_list()
        ids = [[int(i) for i in row] for row in ids]
        return [[self.start_id] + row if self.start_id is not None else row for row in ids]

    def _batches(self, prompts: Sequence[str], max_new_tokens: int, batch_size: int,
                 sampling: Sampling, stop_at_section: bool):
        """Per batch: its prompt indices, program key, static options and arguments."""
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be at least 1.")
        prompt_ids = self.token_ids(prompts)
        # Batch prompts of similar length together; the order is restored.
        order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]))
        values = [variable.value for variable in self.variables]
        if stop_at_section and self.stop_table is None:
            texts = stopping.token_texts(self.preprocessor.tokenizer)
            self.stop_table = stopping.section_stop_table(texts)
        stop_table = jnp.asarray(self.stop_table if stop_at_section else np.zeros((1, 1), np.int32))
        root = jax.random.key(sampling.seed)
        static = {"max_new_tokens": max_new_tokens, "sampling": sampling,
                  "stop_at_section": stop_at_section}
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            length = bucket_length(max(len(prompt_ids[i]) for i in chunk))
            token_ids = np.full((batch_size, length), self.pad_id, dtype=np.int32)
            lengths = np.ones((batch_size,), dtype=np.int32)
            active = np.zeros((batch_size,), dtype=bool)
            for row, i in enumerate(chunk):
                token_ids[row, length - len(prompt_ids[i]):] = prompt_ids[i]
                lengths[row], active[row] = len(prompt_ids[i]), True
            # A prompt's random keys follow its index in the call, not its batch.
            rows = np.array(chunk + [0] * (batch_size - len(chunk)))
            keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(rows)
            arguments = (values, token_ids, lengths, active, keys, stop_table)
            yield chunk, (batch_size, length), static, arguments

    def compile(self, prompts: Sequence[str], max_new_tokens: int, batch_size: int,
                sampling: Sampling = Sampling(), stop_at_section: bool = False) -> float:
        """Compile, without running, every program `decode` would use on these arguments.

        Args:
            prompts, max_new_tokens, batch_size, sampling, stop_at_section:
                as for `decode`.

        Returns:
            Seconds spent compiling (0 when every program was compiled before).
        """
        return sum(self._compiled(shape, static, arguments)[1] for _, shape, static, arguments
                   in self._batches(prompts, max_new_tokens, batch_size, sampling, stop_at_section))

    def decode(self, prompts: Sequence[str], max_new_tokens: int, batch_size: int,
               sampling: Sampling = Sampling(), stop_at_section: bool = False,
               progress: Progress | None = None) -> Generations:
        """Continuations of `prompts`, `batch_size` rows per compiled batch.

        Args:
            prompts: formatted prompts.
            max_new_tokens: most tokens generated per prompt.
            batch_size: rows per batch (a last, partial batch is padded with
                rows that are stopped from the start).
            sampling: greedy by default.
            stop_at_section: also stop a row when its text reaches the
                template's next `###` section, and cut the text there.
            progress: counts each batch's prompts as done, with the new
                tokens per second so far.

        Returns:
            `Generations`, in prompt order.
        """
        start, new_tokens = time.perf_counter(), 0
        ids: list[list[int]] = [[] for _ in prompts]
        reasons = [BUDGET] * len(prompts)
        compile_seconds, shapes_used = 0.0, set()
        for chunk, shape, static, arguments in self._batches(
                prompts, max_new_tokens, batch_size, sampling, stop_at_section):
            program, seconds = self._compiled(shape, static, arguments)
            compile_seconds += seconds
            shapes_used.add(shape)
            out, counts, why = (np.asarray(a) for a in program(*arguments))
            for row, i in enumerate(chunk):
                ids[i] = out[row, :counts[row]].tolist()
                reasons[i] = int(why[row])
            if progress is not None:
                new_tokens += int(counts[:len(chunk)].sum())
                rate = new_tokens / max(time.perf_counter() - start, 1e-9)
                progress.update(len(chunk), postfix=f"{rate:.1f} new tokens/s")
        # The end token is not part of the text (as in `generate`'s output mask).
        texts = self.texts([row[:-1] if reason == END_TOKEN else row
                            for row, reason in zip(ids, reasons)])
        if stop_at_section:
            texts = [stopping.SECTION_HEADER.split(text, maxsplit=1)[0] for text in texts]
        return Generations(texts, ids, reasons, compile_seconds, len(shapes_used))

    def texts(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Detokenize generated ids as `generate` does (special tokens stripped)."""
        if not ids:
            return []
        width = max(1, max(len(row) for row in ids))
        token_ids = np.full((len(ids), width), self.pad_id, dtype=np.int32)
        padding_mask = np.zeros((len(ids), width), dtype=bool)
        for row, values in enumerate(ids):
            token_ids[row, :len(values)] = values
            padding_mask[row, :len(values)] = True
        texts = self.preprocessor.generate_postprocess(
            {"token_ids": token_ids, "padding_mask": padding_mask})
        return [texts] if isinstance(texts, str) else list(texts)


def _variable_signature(backbone: keras.Model) -> tuple:
    return tuple((v.path, tuple(v.shape), str(v.dtype), v.trainable) for v in backbone.variables)


_DECODERS: "weakref.WeakKeyDictionary[keras.Model, Decoder]" = weakref.WeakKeyDictionary()


def decoder_for(model: keras_hub.models.CausalLM) -> Decoder:
    """The model's `Decoder`, built on first use and rebuilt if its variables changed.

    Args:
        model: a text-only Gemma 3 `CausalLM` (see `supports_fast_decoding`).

    Returns:
        A `Decoder` whose compiled programs are kept for the next call.

    Example:
    >>> from gemma_lora.testing import build_tiny_gemma3, tiny_tokenizer_proto
    >>> model = build_tiny_gemma3(tiny_tokenizer_proto(), sequence_length=32)
    >>> decoder_for(model) is decoder_for(model)
    True
    """
    decoder = _DECODERS.get(model)
    if decoder is None or decoder.signature != _variable_signature(model.backbone):
        decoder = _DECODERS[model] = Decoder(model)
    return decoder


def decode(model: keras_hub.models.CausalLM, prompts: Sequence[str], max_new_tokens: int,
           batch_size: int, sampling: Sampling = Sampling(),
           stop_at_section: bool = False, progress: Progress | None = None) -> Generations:
    """Continuations of `prompts` with the model's cached `Decoder` (see `Decoder.decode`).

    Args:
        model: a text-only Gemma 3 `CausalLM` with a preprocessor.
        prompts: formatted prompts.
        max_new_tokens: most tokens generated per prompt.
        batch_size: rows per compiled batch.
        sampling: greedy by default.
        stop_at_section: also stop at the template's next `###` section.
        progress: counts the prompts done (see `Decoder.decode`).

    Returns:
        `Generations`, in prompt order.

    Example:
    >>> from gemma_lora.testing import build_tiny_gemma3, tiny_tokenizer_proto
    >>> model = build_tiny_gemma3(tiny_tokenizer_proto(), sequence_length=32)
    >>> result = decode(model, ["### Instruction:\\nWhich color?"], 4, batch_size=2)
    >>> len(result.token_ids[0]) <= 4
    True
    """
    return decoder_for(model).decode(prompts, max_new_tokens, batch_size, sampling,
                                     stop_at_section, progress)
