"""An Ollama `Modelfile` beside a GGUF: `ollama create NAME -f Modelfile` makes the tuned Gemma a local model.

`write_modelfile` writes a `Modelfile` (Ollama's instructions `FROM`,
`ADAPTER`, `TEMPLATE`, `SYSTEM`, `PARAMETER`) into the folder that holds the
GGUF file(s) of `export.gguf`, naming them by relative path (`FROM
./model.gguf`), so the folder can be moved or copied as a whole. Ollama
renders a chat with `TEMPLATE`, a Go `text/template` over `.Messages` (each
with `.Role` and `.Content`) and `.System` (all system messages, joined by a
blank line); `GEMMA_OLLAMA_TEMPLATE` renders Gemma's turn format as
`export.transformers.GEMMA_CHAT_TEMPLATE` and `data.conversation_segments`
do: the system text and a blank line open the first user turn, every turn is
`<start_of_turn>{user|model}\\n{text}<end_of_turn>\\n`, and the prompt ends
with `<start_of_turn>model\\n` (Go templates cannot trim, so turn texts are
used as sent). Generation stops at `<end_of_turn>` and `<eos>`.

A model tuned with the `alpaca` template answers best to its Alpaca prompt:
send it through Ollama's raw mode (`"raw": true` in `/api/generate`), which
skips the template.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from gemma_lora.data.conversations import END_OF_TURN
from gemma_lora.data.conversations import START_OF_TURN
from gemma_lora.errors import ConfigError
from gemma_lora.errors import ModelError
from gemma_lora.io_utils import write_text_atomic

MODELFILE = "Modelfile"
"""The file name `ollama create -f` is usually given."""

GEMMA_OLLAMA_TEMPLATE = (
    "{{- $first := true }}\n"
    "{{- range .Messages }}\n"
    f'{{{{- if eq .Role "user" }}}}{START_OF_TURN}user\n'
    "{{ if and $first $.System }}{{ $.System }}\n\n{{ end }}"
    f"{{{{ $first = false }}}}{{{{ .Content }}}}{END_OF_TURN}\n"
    f'{{{{ else if eq .Role "assistant" }}}}{START_OF_TURN}model\n'
    f"{{{{ .Content }}}}{END_OF_TURN}\n"
    "{{ end }}\n"
    f"{{{{- end }}}}{START_OF_TURN}model\n"
)
"""Gemma's chat turn format as an Ollama (Go `text/template`) `TEMPLATE`."""

STOP_SEQUENCES = (END_OF_TURN, "<eos>")
"""`PARAMETER stop` values: Gemma's end of turn and end of text."""

_GGUF_MAGIC = b"GGUF"
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_]+")


def write_modelfile(
    folder: str | os.PathLike,
    gguf_name: str = "model.gguf",
    adapter_name: str | None = None,
    system: str | None = None,
    parameters: Mapping[str, str | int | float | Sequence[str | int | float]] | None = None,
) -> Path:
    """Write an Ollama `Modelfile` for the GGUF file(s) in `folder`.

    Args:
        folder: the folder that holds the GGUF file(s); the `Modelfile` is
            written there (replacing one that is there).
        gguf_name: the model's GGUF file, relative to `folder` (`FROM`):
            the merged model of `export.export_gguf`, or the base model when
            `adapter_name` is given.
        adapter_name: a GGUF LoRA adapter (`export.export_gguf_lora`)
            relative to `folder` (`ADAPTER`), or `None`.
        system: a default system prompt (`SYSTEM`), or `None`.
        parameters: further `PARAMETER`s, e.g. `{"temperature": 0,
            "num_ctx": 4096}`; a sequence value repeats the parameter.
            `stop` at `STOP_SEQUENCES` is always written.

    Returns:
        The `Modelfile`'s path.

    Raises:
        ModelError: a named file is missing or is not a GGUF file (Ollama
            would take a missing `FROM` path for a model name to pull).
        ConfigError: a name, the system prompt or a parameter cannot be
            written in a Modelfile (a line break, a `\"\"\"`, a quote; a
            parameter name that is not a word).

    Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "model.gguf").write_bytes(b"GGUF...")
    >>> path = write_modelfile(folder, parameters={"temperature": 0})
    >>> print(path.read_text().split("TEMPLATE")[0], end="")
    # Ollama Modelfile written by gemma_lora: ollama create NAME -f Modelfile
    FROM ./model.gguf
    >>> print("\\n".join(path.read_text().splitlines()[-3:]))
    PARAMETER stop "<end_of_turn>"
    PARAMETER stop "<eos>"
    PARAMETER temperature 0
    """
    folder = Path(folder)
    lines = [f"# Ollama Modelfile written by gemma_lora: ollama create NAME -f {MODELFILE}",
             f"FROM {_gguf_reference(folder, 'gguf_name', gguf_name)}"]
    if adapter_name is not None:
        lines.append(f"ADAPTER {_gguf_reference(folder, 'adapter_name', adapter_name)}")
    lines.append(f'TEMPLATE """{GEMMA_OLLAMA_TEMPLATE}"""')
    if system is not None:
        if '"""' in system:
            raise ConfigError(f'system must not contain """ (it ends a Modelfile value); got {system!r}.')
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{stop}"' for stop in STOP_SEQUENCES]
    for name, values in (parameters or {}).items():
        if not isinstance(name, str) or not _PARAMETER_NAME.fullmatch(name):
            raise ConfigError(f"parameters: {name!r} is not an Ollama parameter name "
                              "(letters, digits and '_').")
        for value in ([values] if isinstance(values, (str, int, float)) else values):
            lines.append(f"PARAMETER {name} {_parameter_value(name, value)}")
    path = folder / MODELFILE
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _gguf_reference(folder: Path, parameter: str, name: str) -> str:
    """`./name` for a GGUF file in `folder`, once checked."""
    if not isinstance(name, str) or not name.strip() or name != name.strip() \
            or any(char in name for char in '"\n\r') or os.path.isabs(name):
        raise ConfigError(f"{parameter} must be a file name relative to the folder, without "
                          f"quotes, line breaks or surrounding spaces; got {name!r}.")
    path = folder / name
    try:
        with open(path, "rb") as file:
            magic = file.read(len(_GGUF_MAGIC))
    except OSError as error:
        raise ModelError(f"{parameter}: cannot read {str(path)!r} ({error.strerror}); write the "
                         "GGUF file with export.export_gguf / export_gguf_lora first.") from None
    if magic != _GGUF_MAGIC:
        raise ModelError(f"{parameter}: {str(path)!r} is not a GGUF file (it starts with {magic!r}).")
    return name if name.startswith(("./", "../")) else f"./{name}"


def _parameter_value(name: str, value: str | int | float) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"parameters[{name!r}] must be a string or a number; got {value!r}.")
    if isinstance(value, (int, float)):
        return str(value)
    if any(char in value for char in '"\n\r'):
        raise ConfigError(f"parameters[{name!r}] cannot hold quotes or line breaks; got {value!r}.")
    return f'"{value}"'
