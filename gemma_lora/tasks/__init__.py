"""Tasks: use a (tuned) model — generate, evaluate, answer requests, classify texts.

- `generation`: greedy continuations of many prompts;
- `evaluation`: `evaluate` (loss, exact match, ROUGE-L) on held-out examples;
- `inference`: requests in, timed batched answers, `predictions.jsonl` out;
- `classification`: label scoring with a causal LM, accuracy, macro-F1;
- `text_classifier`: LoRA on a KerasHub `TextClassifier`.
"""

from gemma_lora.tasks import classification
from gemma_lora.tasks import inference
from gemma_lora.tasks import text_classifier
from gemma_lora.tasks.evaluation import Evaluation
from gemma_lora.tasks.evaluation import answers_match
from gemma_lora.tasks.evaluation import evaluate
from gemma_lora.tasks.evaluation import extract_answer
from gemma_lora.tasks.evaluation import normalize_answer
from gemma_lora.tasks.evaluation import response_token_loss
from gemma_lora.tasks.evaluation import rouge_l
from gemma_lora.tasks.generation import generate_responses
from gemma_lora.tasks.generation import use_greedy_sampling

__all__ = [
    "Evaluation",
    "answers_match",
    "classification",
    "evaluate",
    "extract_answer",
    "generate_responses",
    "inference",
    "normalize_answer",
    "response_token_loss",
    "rouge_l",
    "text_classifier",
    "use_greedy_sampling",
]
