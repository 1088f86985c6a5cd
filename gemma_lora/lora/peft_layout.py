"""How Gemma 3's Keras kernels and LoRA factors map onto Hugging Face's weights.

The layer names and kernel layouts on both sides, the exact conversions
between them, and the SVD that re-factors an update into Keras' LoRA shape.
See `gemma_lora.lora.peft` for the whole story.
"""

from __future__ import annotations

import keras
import keras_hub
import numpy as np

from gemma_lora.errors import ModelError


# Keras layer name -> (Hugging Face submodule, PEFT module name, layout).
# "heads": kernel (heads, d_in, head_dim), HF weight (heads * head_dim, d_in).
# "flat": HF weight = kernel.reshape(-1, last).T.
KERAS_TO_PEFT = {
    "query": ("self_attn", "q_proj", "heads"),
    "key": ("self_attn", "k_proj", "heads"),
    "value": ("self_attn", "v_proj", "heads"),
    "attention_output": ("self_attn", "o_proj", "flat"),
    "ffw_gating": ("mlp", "gate_proj", "flat"),
    "ffw_gating_2": ("mlp", "up_proj", "flat"),
    "ffw_linear": ("mlp", "down_proj", "flat"),
}
PEFT_TO_KERAS = {peft_name: keras_name for keras_name, (_, peft_name, _) in KERAS_TO_PEFT.items()}
# Singular values below this fraction of the largest are float rounding.
RANK_TOLERANCE = 1e-6


def keras_lora_factors(
    lora_a: np.ndarray, lora_b: np.ndarray, kernel_shape: tuple[int, ...], layout: str
) -> tuple[np.ndarray, np.ndarray]:
    """Factor a PEFT update `lora_b @ lora_a` in Keras' LoRA layout, exactly.

    Keras' update of a kernel `(..., last)` is `A @ B`, i.e. a factorization
    `A_flat @ B` of the update flattened to `(prod(leading axes), last)`. In
    that layout the PEFT update is `blockdiag(X, ..., X) @ Y`: for `"flat"`
    layers one block, `X = lora_a.T`, `Y = lora_b.T`; for `"heads"` layers
    one block per head, `X = lora_a.T` `(d, r)` and `Y` stacking each head's
    rows of `lora_b`, transposed (`(heads * r, head_dim)`). With `X = Q R`,
    the SVD of the small `blockdiag(R) @ Y` gives an exact SVD of the
    update without ever forming it; singular values below `1e-6` of the
    largest are dropped as float rounding.

    Args:
        lora_a: PEFT `lora_A` `[r, in]`.
        lora_b: PEFT `lora_B` `[out, r]`, with the PEFT scale folded in.
        kernel_shape: the Keras kernel's shape.
        layout: `"heads"` or `"flat"` (`KERAS_TO_PEFT[name][2]`).

    Returns:
        `A_flat` `(prod(kernel_shape[:-1]), k)` and `B` `(k, last)`, `k` the
        update's rank: `A_flat.reshape(kernel_shape[:-1] + (k,)) @ B` is the
        update as a Keras kernel.
    """
    lora_a = lora_a.astype(np.float64)
    lora_b = lora_b.astype(np.float64)
    rank = lora_a.shape[0]
    if layout == "heads":
        heads, _, head_dim = kernel_shape
        y = lora_b.reshape(heads, head_dim, rank).transpose(0, 2, 1)  # (heads, r, head_dim)
    else:
        heads = 1
        y = lora_b.T[None]  # (1, r, last)
    q, r = np.linalg.qr(lora_a.T)  # lora_a.T = q @ r, q (p, k') orthonormal
    core = np.concatenate([r @ y_head for y_head in y])  # (heads * k', last)
    u, s, vt = np.linalg.svd(core, full_matrices=False)
    kept = int(np.sum(s > s[0] * RANK_TOLERANCE)) if s.size and s[0] > 0 else 0
    root = np.sqrt(s[:kept])
    u = (u[:, :kept] * root).reshape(heads, q.shape[1], kept)
    a_flat = np.concatenate([q @ u_head for u_head in u])  # (heads * p, kept)
    return a_flat, root[:, None] * vt[:kept]


def peft_factors(layer: keras.layers.Layer, layout: str) -> tuple[np.ndarray, np.ndarray, int, float]:
    """PEFT's `lora_A`, `lora_B`, rank and alpha for one Keras LoRA layer, exactly.

    `"flat"` layers keep rank `r`; `"heads"` layers become rank `heads * r`
    with a block-diagonal `lora_B` and alpha `heads * alpha` (the same scale).

    Args:
        layer: a Keras `EinsumDense` with LoRA enabled.
        layout: `"heads"` or `"flat"` (`KERAS_TO_PEFT[name][2]`).

    Returns:
        `lora_A` `[rank, in]`, `lora_B` `[out, rank]` (float32), PEFT's rank and alpha.
    """
    a = np.asarray(keras.ops.convert_to_numpy(layer.lora_kernel_a), dtype=np.float32)
    b = np.asarray(keras.ops.convert_to_numpy(layer.lora_kernel_b), dtype=np.float32)
    rank, alpha = int(layer.lora_rank), float(layer.lora_alpha)
    if layout == "flat":
        return np.ascontiguousarray(a.reshape(-1, rank).T), np.ascontiguousarray(b.T), rank, alpha
    heads, width, _ = a.shape
    head_dim = b.shape[1]
    # lora_A[n_i * r + k, :] = A[n_i, :, k]; lora_B's block (n_i, n_i) = B^T.
    lora_a = a.transpose(0, 2, 1).reshape(heads * rank, width)
    lora_b = np.zeros((heads * head_dim, heads * rank), dtype=np.float32)
    for head in range(heads):
        lora_b[head * head_dim:(head + 1) * head_dim, head * rank:(head + 1) * rank] = b.T
    return np.ascontiguousarray(lora_a), lora_b, heads * rank, alpha * heads


def keras_to_hf_kernel(kernel: np.ndarray, layout: str) -> np.ndarray:
    """A Keras Gemma 3 kernel in Hugging Face's `[out, in]` layout.

    Args:
        kernel: the Keras kernel (e.g. `query` `(n, d, h)`).
        layout: `"heads"` for query/key/value, `"flat"` for the others
            (`KERAS_TO_PEFT[name][2]`).

    Returns:
        The `torch.nn.Linear` weight KerasHub's exporter writes for it.
    """
    if layout == "heads":
        heads, width, head_dim = kernel.shape
        return kernel.transpose(0, 2, 1).reshape(heads * head_dim, width)
    return kernel.reshape(-1, kernel.shape[-1]).T


def hf_to_keras_kernel(weight: np.ndarray, kernel_shape: tuple[int, ...], layout: str) -> np.ndarray:
    """The inverse of `keras_to_hf_kernel`: an `[out, in]` weight as a Keras kernel."""
    if layout == "heads":
        heads, width, head_dim = kernel_shape
        return weight.reshape(heads, head_dim, width).transpose(0, 2, 1)
    return weight.T.reshape(kernel_shape)


def hf_shape(kernel_shape: tuple[int, ...], layout: str) -> tuple[int, int]:
    """`(out, in)` of the Hugging Face Linear for a Keras kernel shape."""
    if layout == "heads":
        heads, width, head_dim = kernel_shape
        return heads * head_dim, width
    return kernel_shape[-1], int(np.prod(kernel_shape[:-1]))


# === Model structure ===


def gemma3_text_backbone(model: keras.Model, action: str, allow_vision: bool = False):
    """The model's `Gemma3Backbone`; `ModelError` naming `action` for any other.

    Args:
        model: a KerasHub task or backbone.
        action: what needs a Gemma 3 (`"PEFT export"`), for the message.
        allow_vision: accept a Gemma 3 with a vision encoder too.
    """
    backbone = getattr(model, "backbone", model)
    if not isinstance(backbone, keras_hub.models.Gemma3Backbone):
        raise ModelError(
            f"{action} supports Gemma 3 models; this model's backbone is "
            f"{type(backbone).__name__}."
        )
    if not allow_vision and getattr(backbone, "vision_encoder", None) is not None:
        raise ModelError(
            f"{action} supports text-only Gemma 3 models (Gemma3ForCausalLM); this one "
            "has a vision encoder."
        )
    return backbone


def kernel_shape(layer: keras.layers.Layer) -> tuple[int, ...]:
    """The logical kernel shape (int4-quantized kernels are stored packed)."""
    if getattr(layer, "quantization_mode", None) == "int4":
        return tuple(layer.original_kernel_shape)
    return tuple(layer.kernel.shape)


def block_layers(backbone: keras.Model, index: int) -> dict[str, keras.layers.Layer]:
    """The adaptable layers of decoder block `index`, by Keras name."""
    block = backbone.get_layer(f"decoder_block_{index}")
    return {
        layer.name: layer
        for layer in block._flatten_layers(include_self=False)
        if layer.name in KERAS_TO_PEFT
    }
