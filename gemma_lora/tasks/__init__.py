"""Tasks: use a (tuned) model — generate, evaluate, answer requests, classify texts.

- `generation`: continuations of many prompts (greedy or sampled);
- `decoding`: the batched prefill-and-decode loop behind it (Gemma 3);
- `stopping`: the stop at the template's next `###` section, per token;
- `evaluation`: `evaluate` (loss, exact match, ROUGE-L) on held-out examples;
- `inference`: requests in, timed batched answers, `predictions.jsonl` out;
- `classification`: label scoring with a causal LM, accuracy, macro-F1;
- `text_classifier`: LoRA on a KerasHub `TextClassifier`.
"""

from gemma_lora.tasks import classification
from gemma_lora.tasks import decoding
from gemma_lora.tasks import inference
from gemma_lora.tasks import stopping
from gemma_lora.tasks import text_classifier
from gemma_lora.tasks.evaluation import Evaluation
from gemma_lora.tasks.evaluation import answers_match
from gemma_lora.tasks.evaluation import evaluate
from gemma_lora.tasks.evaluation import extract_answer
from gemma_lora.tasks.evaluation import loss_steps
from gemma_lora.tasks.evaluation import normalize_answer
from gemma_lora.tasks.evaluation import response_token_loss
from gemma_lora.tasks.evaluation import rouge_l
from gemma_lora.tasks.generation import generate_responses
from gemma_lora.tasks.generation import generate_with_keras_hub
from gemma_lora.tasks.generation import use_greedy_sampling

__all__ = [
    "Evaluation",
    "answers_match",
    "classification",
    "decoding",
    "evaluate",
    "extract_answer",
    "generate_responses",
    "generate_with_keras_hub",
    "inference",
    "loss_steps",
    "normalize_answer",
    "response_token_loss",
    "rouge_l",
    "stopping",
    "text_classifier",
    "use_greedy_sampling",
]
