"""A tiny but real training run, started by tests/test_resume.py in a subprocess.

Usage (from the repository root): python -m tests.tiny_training_run RUN_DIR [--resume] [--pause-in-checkpoint STEP]

With --pause-in-checkpoint, the run writes the checkpoint of STEP completely
under its temporary name, creates RUN_DIR/paused and sleeps before the rename,
so the test can kill it in the middle of a checkpoint write.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

from gemma_lora import io_utils  # noqa: E402
from gemma_lora import lora  # noqa: E402
from gemma_lora import models  # noqa: E402
from gemma_lora import testing
from gemma_lora import training  # noqa: E402
from gemma_lora.config import RunConfig  # noqa: E402
from tests.conftest import _color_examples  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("run_dir")
parser.add_argument("--resume", action="store_true")
parser.add_argument("--pause-in-checkpoint", type=int)
parser.add_argument("--step-delay", type=float, default=0.0)
args = parser.parse_args()

examples = {"train": _color_examples(160, seed=1), "validation": _color_examples(16, seed=2)}
texts = [p + r for split in (examples["train"], examples["validation"], _color_examples(16, seed=3))
         for p, r in zip(split["prompts"], split["responses"])]
model = testing.build_tiny_gemma3(testing.train_tiny_tokenizer(texts, 512), sequence_length=48)
config = RunConfig(rank=4, alpha=8, max_steps=30, eval_every=5, checkpoint_every=5, batch_size=8, sequence_length=48,
                   learning_rate=3e-2, warmup_steps=2, eval_batch_size=8, patience=100,
                   run_dir=args.run_dir, resume=args.resume, data_path=__file__)
lora.enable_lora(model, lora.LoraConfig.from_run(config))

if args.pause_in_checkpoint:
    real_replace = io_utils.os.replace

    def replace_then_maybe_pause(source, destination):
        if str(destination).endswith(f"step-{args.pause_in_checkpoint:06d}"):
            open(os.path.join(args.run_dir, "paused"), "w").close()
            time.sleep(600)
        real_replace(source, destination)

    io_utils.os.replace = replace_then_maybe_pause

if args.step_delay:
    real_step = training.CompiledSteps.train_step

    def slow_step(self, batch):
        time.sleep(args.step_delay)
        return real_step(self, batch)

    training.CompiledSteps.train_step = slow_step

result = training.train(model, config, examples["train"], examples["validation"],
                     log=lambda line: print(line, flush=True))
lora.save_adapter(model, os.path.join(args.run_dir, "final_adapter"), "tiny")
print("DONE", result.steps, flush=True)
