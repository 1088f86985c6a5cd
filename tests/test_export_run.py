"""`make export`: a finished run's base + adapter written in every deployment format.

A tiny run folder (a tiny Gemma 3 with Gemma's tokenizer normalization saved
as a local preset, and an adapter saved on it) goes through the command
line entry point. The files are read back by the `gguf` package and Ollama's
Modelfile grammar; transformers and llama.cpp, when installed, answer a
prompt from them as the Keras model does.
"""

import json

import gguf
import numpy as np
import pytest

from gemma_lora import lora
from gemma_lora.export import from_run
from gemma_lora.export import runtimes
from gemma_lora.tasks import generation
from gemma_lora.testing.serving import randomize_lora
from tests.export_helpers import gemma_proto  # noqa: F401 (a fixture)
from tests.export_helpers import ollama_parse

PROMPT = "### Instruction:\nWhich color is wanted?\n\n### Input:\nPlease send one red mug.\n\n### Response:\n"


@pytest.fixture
def tiny_run(gemma_proto, tmp_path):  # noqa: F811 (the fixture above)
    """A run folder with an adapter on a tiny local preset; returns (run folder, tuned model)."""
    from gemma_lora.testing import build_tiny_gemma3

    model = build_tiny_gemma3(gemma_proto, sequence_length=48, seed=0)
    model.save_to_preset(str(tmp_path / "preset"))
    lora.enable_lora(model, lora.LoraConfig(rank=2, alpha=4, target_layers=("query", "value")))
    randomize_lora(model, seed=1)
    run = tmp_path / "runs" / "01_finetune_gemma_lora"
    lora.save_adapter(model, run / "adapter", base_preset=str(tmp_path / "preset"))
    return run, model


def test_make_export_writes_every_format_of_a_run(tiny_run, capsys):
    run, model = tiny_run
    status = from_run.main(["--run-dir", str(run), "--formats", " ".join(from_run.FORMATS),
                            "--gguf-file-type", "f32", "--base-model", "google/gemma-3-270m"])
    printed = capsys.readouterr().out
    assert status == 0, printed
    export = run / from_run.EXPORT_FOLDER
    assert sorted(path.name for path in export.iterdir()) == [
        "gguf", "peft", "peft_rank2", "transformers"]
    assert sorted(path.name for path in (export / "gguf").iterdir()) == [
        "Modelfile", "adapter.gguf", "base-f32.gguf", "model-f32.gguf"]
    # 2 query heads x rank 2: the exact adapter needs --max-lora-rank 8, the rank-2 one 8 too.
    assert "PEFT ranks: q_proj 4, v_proj 2 (r=2); vLLM: --max-lora-rank 8" in printed
    assert "--max-lora-rank 8 (every module rank 2; relative error" in printed
    lines = {line.split()[1]: line for line in printed.splitlines() if line.split()[:1] in (
        [[name] for name in from_run.FORMATS])}
    written = [*(export / "gguf").iterdir(), *(export / name for name in (
        "transformers", "peft", "peft_rank2"))]
    assert sorted(lines) == sorted(map(str, written))  # one line a file or folder
    for path in written:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        assert f"{sum(p.stat().st_size for p in files) / 2**20:,.1f} MiB" in lines[str(path)]

    assert gguf.GGUFReader(export / "gguf" / "model-f32.gguf").get_field(
        "general.architecture").contents() == "gemma3"
    assert gguf.GGUFReader(export / "gguf" / "adapter.gguf").get_field(
        "adapter.type").contents() == "lora"
    assert ("model", "./model-f32.gguf") in ollama_parse((export / "gguf" / "Modelfile").read_text())
    assert json.loads((export / "peft_rank2" / "adapter_config.json").read_text())["r"] == 2

    # The runtimes that are installed answer: transformers as Keras does, llama.cpp alike
    # from the merged file and from base + adapter (the random tiny model's answers are
    # often byte tokens, which llama.cpp does not turn into replacement characters).
    keras_answer = generation.generate_responses(model, [PROMPT], 4, batch_size=1)[0]
    exported = [from_run.Exported(name, path, 0, "") for name, path in (
        ("transformers", export / "transformers"),
        ("gguf", export / "gguf" / "model-f32.gguf"),
        ("gguf_lora", export / "gguf" / "base-f32.gguf"),
        ("gguf_lora", export / "gguf" / "adapter.gguf"))]
    answers = runtimes.runtime_answers(exported, PROMPT, 4)
    assert [answer.files for answer in answers] == [
        "transformers", "model-f32.gguf", "base-f32.gguf + adapter.gguf"]
    for answer in answers:
        assert (answer.answer is None) == bool(answer.note), answer
    assert answers[0].answer in (keras_answer, None)
    assert answers[1].answer == answers[2].answer


def test_make_export_names_the_parameter_that_is_wrong(tiny_run, capsys, tmp_path):
    run, _ = tiny_run
    assert from_run.main(["--run-dir", str(tmp_path / "missing")]) == 2
    assert "run_dir (make export RUN=...) " in capsys.readouterr().err
    assert from_run.main(["--run-dir", ""]) == 2
    assert "run_dir (make export RUN=...) is empty" in capsys.readouterr().err
    assert from_run.main(["--run-dir", str(tmp_path)]) == 2
    assert "has no adapter/ folder" in capsys.readouterr().err
    assert from_run.main(["--run-dir", str(run), "--formats", "gguf onnx"]) == 2
    assert "formats: unknown format(s) ['onnx']" in capsys.readouterr().err
    assert from_run.main(["--run-dir", str(run), "--gguf-file-type", "q4_k"]) == 2
    assert "gguf_file_type" in capsys.readouterr().err
    # A local preset has no known Hugging Face name for the PEFT adapter to name.
    assert from_run.main(["--run-dir", str(run), "--formats", "peft"]) == 2
    assert "base_model: the run's base preset" in capsys.readouterr().err
    assert not (run / from_run.EXPORT_FOLDER).exists()
    np.testing.assert_equal(from_run.parse_formats("peft gguf"), ["gguf", "peft"])
