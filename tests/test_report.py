import json

from gemma_lora.runs import report
from gemma_lora.config import RunConfig
from gemma_lora.tasks import Evaluation


def _evaluation(exact_match):
    return Evaluation(loss=0.5, perplexity=1.65, exact_match=exact_match, rouge_l=0.75,
                      predictions=["a"], num_examples=200, generation_seconds=1.0)


def test_metrics_hold_every_config_field_and_the_results(tmp_path):
    config = RunConfig(rank=4, run_dir=str(tmp_path))
    path = report.write_metrics(config, {"tuned": {"exact_match": 0.9}})
    metrics = json.loads(path.read_text())
    assert {k: v for k, v in metrics.items() if k != "results"} == config.to_dict()
    assert metrics["results"] == {"tuned": {"exact_match": 0.9}}


def test_comparison_table():
    table = report.comparison_table({"base": _evaluation(0.0), "tuned": _evaluation(0.925)})
    lines = table.splitlines()
    assert lines[0] == "| metric | base | tuned |"
    assert lines[2] == "| exact match | 0.0% | 92.5% |"
    assert "| test examples | 200 | 200 |" in lines


def test_samples_table_keeps_json_readable_and_escapes_pipes():
    table = report.samples_table(["ship 2 | urgent"], ['{"quantity":2}'],
                                 {"tuned": ['{"quantity":2}']}, count=5)
    row = table.splitlines()[2]
    assert row == '| ship 2 \\| urgent | `{"quantity":2}` | `{"quantity":2}` |'


def test_loss_plot_is_written(tmp_path):
    history = [{"step": 0, "loss": None, "learning_rate": 0.0, "val_loss": 2.0}] + [
        {"step": s, "loss": 2.0 / s, "learning_rate": 1e-3, "val_loss": 1.0 / s if s % 5 == 0 else None}
        for s in range(1, 21)]
    report.plot_history(history, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_size_labels_name_an_int4_base_by_its_parameters_and_its_bytes():
    import numpy as np

    from gemma_lora.lora import LoraConfig, enable_lora
    from gemma_lora.models import quantize_base
    from gemma_lora.testing import tiny_causal_lm

    model = tiny_causal_lm()
    parameters = model.count_params()  # Keras' count, before quantizing
    float_bytes = sum(np.asarray(w.value).nbytes for w in model.weights)
    assert report.size_label("base model", model, "float32") == (
        f"base model (float32, {parameters // 1000}K params, {float_bytes / 1024:.3g} KiB)")
    quantize_base(model, "int4")
    enable_lora(model, LoraConfig(rank=8))
    stored = {w.path: np.asarray(w.value).nbytes for w in model.weights}  # the arrays themselves
    base = sum(size for path, size in stored.items() if "lora_kernel" not in path)
    assert base < float_bytes / 4  # int4 values, with their scales
    assert report.size_label("base model", model, "int4", parameters) == (
        f"base model (int4, {parameters // 1000}K params, {base / 1024:.3g} KiB)")
    lora = sum(int(np.prod(w.shape)) for w in model.weights if "lora_kernel" in w.path)
    assert report.size_label("LoRA-tuned", model, "int4", parameters, with_lora=True) == (
        f"LoRA-tuned (int4 base + LoRA, {(parameters + lora) // 1000}K params, "
        f"{sum(stored.values()) / 1024:.3g} KiB)")
