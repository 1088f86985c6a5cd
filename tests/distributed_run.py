"""Tiny LoRA runs on simulated CPU devices, started by tests/test_distribution.py.

JAX fixes its device count when it starts, so the test runs this script in a
subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=N`.

Usage (from the repository root):
    python -m tests.distributed_run meshes PRESET WORK_DIR OUT_JSON
        (8 devices) a single-device reference run, then the meshes 8×1, 2×4
        and 1×8, each loading PRESET under `parallel.apply` and training
        a few steps into WORK_DIR/<mesh>/.
    python -m tests.distributed_run host PRESET RUN_DIR OUT_JSON PORT PROCESS_ID
        (4 devices per process) one of two processes of a 2×4 multi-host
        run on 127.0.0.1:PORT, training into RUN_DIR (only process 0 writes).

Every run starts from the same random adapter (A and B drawn from a fixed
seed, so B != 0 and the first steps exercise the LoRA path, not only the
base) and trains `STEPS` steps; its last checkpoint holds the final adapter.

OUT_JSON gets, per run: the training losses, the sharding of selected
weights, optimizer slots and a batch, the files of the run folder, and how
far the saved adapter is from the model's LoRA weights.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from gemma_lora import parallel  # noqa: E402
from gemma_lora import lora  # noqa: E402
from gemma_lora import models  # noqa: E402
from gemma_lora import training
from gemma_lora.training import loop  # noqa: E402
from gemma_lora.config import RunConfig  # noqa: E402
from tests.conftest import _color_examples  # noqa: E402

# Weights whose layout the test checks (block 0; block 1 is laid out alike).
WATCHED = (
    "token_embedding/embeddings",
    "decoder_block_0/attention/query/kernel",
    "decoder_block_0/attention/key/kernel",
    "decoder_block_0/attention/attention_output/kernel",
    "decoder_block_0/ffw_gating/kernel",
    "decoder_block_0/ffw_linear/kernel",
    "decoder_block_0/pre_ffw_norm/scale",
    "decoder_block_0/attention/query/lora_kernel_a",
    "decoder_block_0/attention/query/lora_kernel_b",
    "decoder_block_0/ffw_gating/lora_kernel_b",
    "decoder_block_0/ffw_linear/lora_kernel_a",
)
# Training steps of every run; the one evaluation and checkpoint come at the end.
STEPS = 4
# The optimizer slots (AdamW momentum) of two LoRA matrices.
WATCHED_SLOTS = (
    "decoder_block_0_attention_query_lora_kernel_a_momentum",
    "decoder_block_0_ffw_gating_lora_kernel_b_momentum",
)


def spec(array) -> list:
    """The mesh axis of each dimension (None: whole), from the array's sharding."""
    axes = list(getattr(getattr(array, "sharding", None), "spec", ()))
    return axes + [None] * (array.ndim - len(axes))


def random_adapter(shapes: dict[str, tuple], seed: int = 0, stddev: float = 0.1) -> dict:
    """The same random LoRA matrices in every run: `{path: array}` for `{path: shape}`."""
    rng = np.random.default_rng(seed)
    return {path: rng.normal(0.0, stddev, shape).astype("float32")
            for path, shape in sorted(shapes.items())}


def tiny_run(preset: str, run_dir: str, mesh: tuple | None, **multi_host) -> dict:
    examples = {"train": _color_examples(64, seed=1), "validation": _color_examples(8, seed=2)}
    config = RunConfig(preset=preset, rank=4, alpha=8, target_layers="all-linear", batch_size=8,
                       sequence_length=48, max_steps=STEPS, eval_every=STEPS, eval_batch_size=8,
                       warmup_steps=1, learning_rate=1e-3, run_dir=run_dir, data_path=__file__,
                       data_parallel=mesh[0] if mesh else "auto",
                       model_parallel=mesh[1] if mesh else "auto", **multi_host)
    if mesh:
        parallel.apply(config)
    else:
        keras.distribution.set_distribution(None)
    model = models.load_causal_lm(config.preset)
    lora.enable_lora(model, lora.LoraConfig.from_run(config))
    # The LoRA matrices are the only trainable weights.
    lora.assign_lora_weights(model, random_adapter(
        {v.path: v.shape for v in model.backbone.trainable_variables}), "random adapter")
    optimizers = []
    make_optimizer = loop.make_optimizer  # the loop's own reference, to keep the optimizer
    loop.make_optimizer = lambda *args: optimizers.append(make_optimizer(*args)) or optimizers[0]
    try:
        result = training.train(model, config, examples["train"], examples["validation"])
    finally:
        loop.make_optimizer = make_optimizer
    slots = {v.path.split("/")[-1]: spec(v.value) for v in optimizers[0].variables
             if v.path.split("/")[-1] in WATCHED_SLOTS}
    weights = {v.path: v for v in model.backbone.weights}
    batch = parallel.shard_batch({"token_ids": np.zeros((8, 16), "int32")})["token_ids"]
    folder = Path(run_dir)
    # TensorBoard's event files are named after the time and host: one name stands for them.
    files = sorted({"tensorboard/<events>" if p.parent.name == "tensorboard" else
                    str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()})
    adapter_error = None
    if (folder / "adapter" / lora.ADAPTER_WEIGHTS).is_file():
        saved = load_file(str(folder / "adapter" / lora.ADAPTER_WEIGHTS))
        adapter_error = max(float(np.max(np.abs(saved[path] - value)))
                            for path, value in lora.lora_weights(model).items())
    return {
        "losses": [row["loss"] for row in result.history[1:]],
        "specs": {path: spec(weights[path].value) for path in WATCHED},
        "slots": slots,
        "batch_spec": spec(batch),
        "batch_shard_shape": list(jax.numpy.asarray(batch).addressable_shards[0].data.shape),
        "files": files,
        "adapter_error": adapter_error,
        "is_writer": parallel.is_writer(),
        "process_count": jax.process_count(),
    }


def main() -> None:
    mode, preset, folder, out = sys.argv[1:5]
    if mode == "meshes":
        assert jax.device_count() == 8, jax.devices()
        results = {"1x1": tiny_run(preset, f"{folder}/1x1", None)}
        for mesh in ((8, 1), (2, 4), (1, 8)):
            results[f"{mesh[0]}x{mesh[1]}"] = tiny_run(preset, f"{folder}/{mesh[0]}x{mesh[1]}", mesh)
    else:
        port, process_id = sys.argv[5:7]
        results = tiny_run(preset, folder, (2, 4), coordinator_address=f"127.0.0.1:{port}",
                           num_processes=2, process_id=int(process_id))
    Path(out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
