"""Classification: metrics, label scoring on a tiny Gemma, and the text-classifier path."""

import numpy as np
import pytest

from gemma_lora.tasks import classification as classify
from gemma_lora import data
from gemma_lora import lora
from gemma_lora.tasks import text_classifier
from gemma_lora.config import RunConfig
from gemma_lora.errors import DataError
from gemma_lora.errors import ModelError
from gemma_lora.data import LabelledText

from tests import tiny_presets


def color_records(examples, count=None):
    """The conftest color task as classification records (label = the color)."""
    items = []
    for i, (prompt, color) in enumerate(zip(examples["prompts"], examples["responses"])):
        message = prompt.split("### Input:\n")[1].split("\n")[0]
        items.append(LabelledText(message, color, f"colors:{i + 1}"))
    return data.to_records(items[:count], "Which color is wanted?")


# === Metrics ===


def test_confusion_matrix_rows_are_true_labels():
    matrix = classify.confusion_matrix(["a", "a", "b", "c"], ["a", "b", "b", "a"], ["a", "b", "c"])
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_metrics_match_a_hand_computation():
    result = classify.classification_metrics(
        ["a", "a", "a", "b", "b", "c"], ["a", "a", "b", "b", "c", "c"], ["a", "b", "c"])
    assert result.accuracy == pytest.approx(4 / 6)
    # F1: a = 2*2/(4+0+1) = 0.8, b = 2*1/(2+1+1) = 0.5, c = 2*1/(2+1+0) = 2/3
    assert result.per_class_f1 == pytest.approx({"a": 0.8, "b": 0.5, "c": 2 / 3})
    assert result.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert result.scores()["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_macro_f1_leaves_out_labels_absent_from_test_and_predictions():
    result = classify.classification_metrics(["a", "b"], ["a", "b"], ["a", "b", "c"])
    assert result.macro_f1 == 1.0 and result.per_class_f1["c"] == 0.0


def test_unknown_labels_are_refused():
    with pytest.raises(DataError, match=r"\['z'\] are not in the label set"):
        classify.confusion_matrix(["a"], ["z"], ["a", "b"])


# === Scoring labels with a causal LM ===


def brute_force_log_likelihood(model, prompt, label):
    """Sum of log p(label tokens + end token | prompt) from the model's full logits."""
    model.preprocessor.sequence_length = 256
    x, y, weights = model.preprocessor({"prompts": [prompt], "responses": [label]})
    logits = np.asarray(model(x), dtype="float64")[0]
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    picked = log_probs[np.arange(len(logits)), np.asarray(y)[0]]
    return float((picked * np.asarray(weights)[0]).sum())


def test_label_scores_equal_the_full_logits_computation(tiny_causal_lm, color_examples):
    prompts = color_examples["test"]["prompts"][:3]
    labels = ["red", "blue", "green", "yellow"]
    scores, tokens = classify.label_log_likelihoods(tiny_causal_lm, prompts, labels, batch_size=5)
    expected = [[brute_force_log_likelihood(tiny_causal_lm, p, label) for label in labels]
                for p in prompts]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    tokenizer = tiny_causal_lm.preprocessor.tokenizer
    assert tokens[0].tolist() == [len(tokenizer(label)) + 1 for label in labels]


def test_scores_do_not_depend_on_order_or_batch_size(tiny_causal_lm, color_examples):
    prompts = color_examples["test"]["prompts"][:6]
    labels = ["red", "white"]
    forward, _ = classify.label_log_likelihoods(tiny_causal_lm, prompts, labels, batch_size=4)
    backward, _ = classify.label_log_likelihoods(tiny_causal_lm, prompts[::-1], labels, batch_size=3)
    np.testing.assert_allclose(forward, backward[::-1], rtol=1e-5, atol=1e-5)


def test_evaluate_a_causal_lm_predicts_only_labels(tiny_causal_lm, color_examples):
    records = color_records(color_examples["test"], 8)
    labels = sorted({record.output for record in records} | {"red"})
    result = classify.evaluate_classifier(tiny_causal_lm, records, labels, batch_size=8)
    assert set(result.predictions) <= set(labels) and result.num_examples == 8
    assert result.confusion.sum() == 8 and np.isfinite(result.loss) and result.loss > 0


def test_training_on_the_label_raises_accuracy(tiny_causal_lm, color_examples, tmp_path):
    splits = data.Splits(color_records(color_examples["train"]),
                         color_records(color_examples["validation"]),
                         color_records(color_examples["test"]))
    labels = data.check_labels(splits)
    lora.enable_lora(tiny_causal_lm, lora.LoraConfig(rank=4, alpha=8))
    # Gemma's chat template keeps the tiny tokenizer's prompts short.
    config = RunConfig(run_dir=str(tmp_path), max_steps=40, eval_every=20, batch_size=8,
                       learning_rate=3e-2, warmup_steps=2, sequence_length=48,
                       template="gemma_chat")
    before = classify.evaluate_classifier(tiny_causal_lm, splits.test, labels, "gemma_chat")
    result = classify.train_classifier(tiny_causal_lm, config, splits, labels, log=lambda _: None)
    after = classify.evaluate_classifier(tiny_causal_lm, splits.test, labels, "gemma_chat")
    assert result.best_val_loss < result.history[0]["val_loss"]
    assert after.loss < before.loss and after.accuracy > before.accuracy


def test_an_untuned_reference_loads_from_a_saved_preset(tmp_path, color_examples):
    folder = tiny_presets.save_tiny_gemma_preset(tmp_path / "reference", seed=3)
    assert not text_classifier.is_text_classifier_preset(str(folder))
    model = classify.load_model(str(folder), ["blue", "red"], sequence_length=64)
    assert model.preprocessor.sequence_length == 64
    records = data.to_records([LabelledText("One red mug.", "red", "x:1")], "Which color?")
    assert classify.evaluate_classifier(model, records, ["blue", "red"]).num_examples == 1


# === KerasHub TextClassifier (tiny DistilBERT) ===


def test_text_classifier_presets_are_recognised(tmp_path):
    assert text_classifier.is_text_classifier_preset("distil_bert_base_en_uncased")
    assert text_classifier.is_text_classifier_preset("bert_tiny_en_uncased")
    assert not text_classifier.is_text_classifier_preset("gemma3_270m")
    classifier = tiny_presets.tiny_distilbert_classifier()
    classifier.save_to_preset(str(tmp_path / "clf"))
    assert text_classifier.is_text_classifier_preset(str(tmp_path / "clf"))
    loaded = classify.load_model(str(tmp_path / "clf"), ["negative", "positive"], sequence_length=12)
    assert loaded.preprocessor.sequence_length == 12 and loaded.num_classes == 2


def test_lora_goes_on_the_encoder_attention_and_the_head_stays_trainable():
    classifier = tiny_presets.tiny_distilbert_classifier()
    summary = lora.enable_lora(classifier, lora.LoraConfig(rank=4, target_layers=("query", "value")))
    assert sorted({path.split("/")[-1] for path in summary.lora_layers}) == ["query", "value"]
    head = text_classifier.head_weights(classifier)
    assert head and all(not path.startswith("distil_bert_backbone") for path in head)
    lora_count = sum(int(np.prod(w.shape)) for w in lora.lora_weights(classifier).values())
    assert summary.trainable == lora_count + sum(int(np.prod(w.shape)) for w in head.values())


def polar_word_splits():
    """A task a tiny random encoder can learn in a few steps: the label is in one word."""
    words = {"positive": ["superb", "wonderful", "great", "lovely"],
             "negative": ["awful", "terrible", "dreadful", "bland"]}
    subjects = ["the film", "the food", "the hotel", "the book", "the game", "the staff"]
    texts = [(f"{subject} was {word}", label)
             for label in words for word in words[label] for subject in subjects]
    items = [LabelledText(text, label, f"toy:{i}") for i, (text, label) in enumerate(texts, 1)]
    records = data.to_records(items, "unused by a text classifier")
    return data.make_splits(records, validation_fraction=0.15, test_fraction=0.25, seed=0)


def test_text_classifier_trains_saves_and_reloads_its_adapter(tmp_path):
    splits = polar_word_splits()
    labels = data.check_labels(splits)
    classifier = tiny_presets.tiny_distilbert_classifier()
    lora.enable_lora(classifier, lora.LoraConfig(rank=4))
    config = RunConfig(run_dir=str(tmp_path), max_steps=30, eval_every=15, batch_size=8,
                       learning_rate=5e-2, warmup_steps=2, eval_batch_size=32)
    before = classify.evaluate_classifier(classifier, splits.test, labels)
    result = classify.train_classifier(classifier, config, splits, labels, log=lambda _: None)
    after = classify.evaluate_classifier(classifier, splits.test, labels)
    assert [row["step"] for row in result.history] == list(range(31))
    assert result.best_val_loss < result.history[0]["val_loss"]
    assert after.accuracy > before.accuracy, (before.accuracy, after.accuracy)
    assert (tmp_path / "history.csv").is_file()
    assert {p.name for p in result.adapter_dir.iterdir()} >= {"adapter.safetensors",
                                                              text_classifier.HEAD_WEIGHTS}
    fresh = tiny_presets.tiny_distilbert_classifier()  # the same base weights, a fresh head
    lora.load_adapter(fresh, result.adapter_dir)
    text_classifier.load_head(fresh, result.adapter_dir)
    texts = [record.input for record in splits.test[:8]]
    np.testing.assert_allclose(fresh.predict(texts, verbose=0), classifier.predict(texts, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_a_classifier_with_the_wrong_number_of_classes_is_refused():
    classifier = tiny_presets.tiny_distilbert_classifier(num_classes=3)
    with pytest.raises(ModelError, match=r"3 classes but there are 2 labels"):
        text_classifier.predict_labels(classifier, ["x"], ["negative", "positive"])
