import pytest

from gemma_lora.tasks import inference
from gemma_lora.errors import DataError


def test_reads_requests_with_and_without_input(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text('{"instruction": "Say hi."}\n\n{"instruction": "Echo.", "input": "x"}\n')
    requests = inference.read_requests(path)
    assert [(r.instruction, r.input, r.output) for r in requests] == [("Say hi.", "", ""), ("Echo.", "x", "")]
    assert requests[1].source == f"{path}:3"


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"instruction": "ok"}\n{"instruction": \n', ":2: not valid JSON"),
        ('{"input": "no instruction"}\n', ":1: field 'instruction' must be a non-empty string"),
        ('{"instruction": "ok", "input": 3}\n', ":1: field 'input' must be a string"),
        ("\n \n", ": no requests found"),
    ],
)
def test_bad_requests_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "requests.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=f"^{path}{message}"):
        inference.read_requests(path)


def test_predictions_are_written_as_jsonl(tmp_path):
    requests = inference.read_requests("data/order_requests.jsonl")
    inference.write_predictions(tmp_path / "p.jsonl", requests[:2], ["a", "b"])
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    assert len(lines) == 2 and lines[1].endswith('"prediction": "b"}')
