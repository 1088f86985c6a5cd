"""Classification on the real Gemma 3 270M: the untuned model already knows some sentiment,
and a few LoRA steps on the labels make it better (short: 48 test reviews, 12 steps).

README's figures (macro-F1 0.78 untuned, 0.98 after notebook 02's 40 steps, on all 300 test
reviews) come from one notebook run; this shorter run measured macro-F1 0.77 untuned and 0.90
after 12 steps, and asserts both with a margin of about five reviews in 48.
"""

import pytest

from gemma_lora.tasks import classification as classify
from gemma_lora import data
from gemma_lora import lora
from gemma_lora.config import RunConfig

pytestmark = pytest.mark.real_model


def test_scoring_labels_then_a_few_lora_steps(gemma3_270m_preset, tmp_path):
    config = RunConfig(preset="gemma3_270m_pypi", data_path="data/sentiment_train.jsonl",
                       test_data_path="data/sentiment_test.jsonl", validation_fraction=0.02,
                       instruction="Classify the sentiment of the review as positive or negative.",
                       template="gemma_chat", sequence_length=96, max_steps=12, eval_every=6,
                       warmup_steps=2, learning_rate=5e-4, rank=8, alpha=16,
                       run_dir=str(tmp_path / "run"))
    splits = data.load_labelled_splits(config)
    labels = data.check_labels(splits)
    test = splits.test[:48]
    model = classify.load_model(config.preset, labels, config.dtype, config.sequence_length)
    lora.enable_lora(model, lora.LoraConfig.from_run(config))
    before = classify.evaluate_classifier(model, test, labels, config.template)
    assert before.macro_f1 > 0.65, before.macro_f1
    result = classify.train_classifier(model, config, splits, labels, log=lambda _: None)
    after = classify.evaluate_classifier(model, test, labels, config.template)
    assert result.best_val_loss < 0.5 * result.history[0]["val_loss"]
    assert after.loss < before.loss and after.macro_f1 > 0.8, (before.macro_f1, after.macro_f1)
