import pytest

from gemma_lora import tasks
from gemma_lora import lora
from gemma_lora import training
from gemma_lora.config import RunConfig


def test_extract_answer_cuts_at_the_next_section():
    assert tasks.extract_answer(' {"a": 1}\n\n### Instruction:\nmore') == '{"a": 1}'
    assert tasks.extract_answer("blue\n### Input") == "blue"
    assert tasks.extract_answer("  two lines\nkept  ") == "two lines\nkept"


@pytest.mark.parametrize(
    "prediction, reference, match",
    [
        ('{"item":"mug", "quantity": 2}', '{"item": "mug", "quantity": 2}', True),
        ('{"item": "mug", "quantity": "2"}', '{"item": "mug", "quantity": 2}', False),
        ("  Positive. ", "positive", True),
        ("The  answer\nis 4", "the answer is 4", True),
        ("negative", "positive", False),
    ],
)
def test_answers_match(prediction, reference, match):
    assert tasks.answers_match(prediction, reference) is match


def test_rouge_l():
    assert tasks.rouge_l(["the cat sat"], ["the cat sat"]) == pytest.approx(1.0)
    assert tasks.rouge_l(["a b c d"], ["a x c y"]) == pytest.approx(0.5)
    assert tasks.rouge_l([], []) == 0.0


def test_generation_keeps_order_and_count_with_a_partial_batch(tiny_causal_lm, color_examples):
    prompts = color_examples["test"]["prompts"][:5]
    together = tasks.generate_responses(tiny_causal_lm, prompts, max_new_tokens=4, batch_size=4)
    alone = [tasks.generate_responses(tiny_causal_lm, [p], 4, batch_size=1)[0] for p in prompts[3:5]]
    assert len(together) == 5
    assert together[3:5] == alone


def test_tuned_model_beats_the_base_model(tiny_causal_lm, color_examples, tmp_path):
    test = color_examples["test"]
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8))
    base = tasks.evaluate(tiny_causal_lm, test, max_new_tokens=3, batch_size=8, sequence_length=48)
    config = RunConfig(max_steps=60, eval_every=20, batch_size=8, sequence_length=48, learning_rate=2e-2,
                       warmup_steps=2, eval_batch_size=8, run_dir=str(tmp_path))
    training.train(tiny_causal_lm, config, color_examples["train"], color_examples["validation"], log=lambda _: None)
    tuned = tasks.evaluate(tiny_causal_lm, test, max_new_tokens=3, batch_size=8, sequence_length=48)
    assert tuned.num_examples == base.num_examples == 16
    assert len(tuned.predictions) == 16
    assert tuned.loss < base.loss
    assert tuned.perplexity < base.perplexity
    assert tuned.exact_match > base.exact_match
