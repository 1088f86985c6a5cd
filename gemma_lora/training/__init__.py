"""Training: tokenized batches, the compiled JAX step, the training loop, checkpoints.

- `batching`: tokenize once, length buckets, loss positions, packing;
- `packed_forward`: Gemma 3's forward pass over packed rows;
- `steps`: `CompiledSteps`, the jitted train / loss steps (logits only at
  response positions, chunked cross-entropy);
- `loop`: `train` (AdamW, warm-up and decay, clipping, validation, early
  stopping, resume) and its schedule;
- `checkpoint`: atomic checkpoints keyed by a fingerprint of the run;
- `tracking`: where the numbers go (`report_to`: TensorBoard, wandb, none).
"""

from gemma_lora.training import batching
from gemma_lora.training import checkpoint
from gemma_lora.training import packed_forward
from gemma_lora.training import tracking
from gemma_lora.training.loop import ADAPTER_DIR
from gemma_lora.training.loop import HISTORY_FIELDS
from gemma_lora.training.loop import HISTORY_FILE
from gemma_lora.training.loop import TrainResult
from gemma_lora.training.loop import WarmupDecay
from gemma_lora.training.loop import make_optimizer
from gemma_lora.training.loop import train
from gemma_lora.training.loop import write_history
from gemma_lora.training.steps import CompiledSteps

__all__ = [
    "ADAPTER_DIR",
    "HISTORY_FIELDS",
    "HISTORY_FILE",
    "CompiledSteps",
    "TrainResult",
    "WarmupDecay",
    "batching",
    "checkpoint",
    "make_optimizer",
    "packed_forward",
    "tracking",
    "train",
    "write_history",
]
