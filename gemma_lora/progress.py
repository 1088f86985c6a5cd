"""Progress you can watch: a live bar in Jupyter and terminals, plain lines in a log.

Long steps (training, the GGUF conversion) report through one `Progress`:

- **bar**: tqdm's own (`tqdm.auto`): a widget in Jupyter, Colab and
  Kaggle, a one-line bar redrawn in place in a terminal;
- **lines**: a plain line through `log` now and then (the first step, then
  every `every_seconds`, and the last), so a headless log such as
  `make run-notebooks` output or papermill's executed notebook reads as text,
  with no carriage-return frames;
- **off**: nothing but the lines given to `write`.

The mode is `GEMMA_LORA_PROGRESS` (`bar`, `lines` or `off`) when set, else
`bar` in a Jupyter kernel or on a terminal and `lines` everywhere else
(pipes, files, doctests). `make run-notebooks` and `make sweep` set `lines`:
papermill runs the notebooks in a kernel, where a widget would be invisible
in the log.

Example:
>>> lines = []
>>> with Progress(3, "train", mode="lines", log=lines.append, every_seconds=3600) as progress:
...     for step in range(3):
...         progress.update(postfix="loss 1.2345")
>>> len(lines), lines[-1].startswith("train 3/3 | loss 1.2345 |"), "ETA 0m00s" in lines[-1]
(2, True, True)
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

from gemma_lora.errors import ConfigError

MODE_VARIABLE = "GEMMA_LORA_PROGRESS"
MODES = ("bar", "lines", "off")
# Seconds between two plain progress lines (a 9-minute run gives about 50).
LINE_SECONDS = 10.0


def in_jupyter_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (a notebook, Colab, Kaggle, papermill).

    Returns:
        True under IPython's kernel (`ZMQInteractiveShell` and its kin), False
        in a plain interpreter or terminal IPython.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def progress_mode(stream=None) -> str:
    """How progress shows here: `"bar"`, `"lines"` or `"off"`.

    Args:
        stream: where a terminal bar would be drawn; defaults to standard error.

    Returns:
        `GEMMA_LORA_PROGRESS` when set; else `"bar"` in a Jupyter kernel or
        when `stream` is a terminal, `"lines"` otherwise.

    Raises:
        ConfigError: `GEMMA_LORA_PROGRESS` is set to something else.

    Example:
    >>> os.environ[MODE_VARIABLE] = "off"; progress_mode()
    'off'
    >>> del os.environ[MODE_VARIABLE]; progress_mode()  # doctests write to no terminal
    'lines'
    """
    chosen = os.environ.get(MODE_VARIABLE, "").strip().lower()
    if chosen:
        if chosen not in MODES:
            raise ConfigError(f"{MODE_VARIABLE} must be one of {list(MODES)}; got {chosen!r}.")
        return chosen
    stream = sys.stderr if stream is None else stream
    is_terminal = getattr(stream, "isatty", lambda: False)()
    return "bar" if in_jupyter_kernel() or is_terminal else "lines"


def format_duration(seconds: float) -> str:
    """`"2m05s"` for 125 seconds (minutes grow past 59: `"75m00s"`).

    Example:
    >>> format_duration(125.4), format_duration(4500)
    ('2m05s', '75m00s')
    """
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s"


class Progress:
    """Progress of `total` units of work, shown as `progress_mode()` says.

    A plain line reads `train 40/150 | <postfix> | 1.31 s/step | ETA 2m24s`;
    its rate and ETA leave out the first unit (which includes compiling).
    Use it as a context manager, or call `close()`.

    Args:
        total: units of work (steps, stages).
        description: what is being done, first on every line (`"train"`).
        unit: what one unit is called (`"step"`).
        initial: units already done (a resumed run).
        log: where plain lines (and `write`'s lines) go.
        mode: `"bar"`, `"lines"` or `"off"`; `None` asks `progress_mode()`.
        every_seconds: the least time between two plain lines; 0 writes one
            per update.
    """

    def __init__(self, total: int, description: str, *, unit: str = "step", initial: int = 0,
                 log: Callable[[str], None] = print, mode: str | None = None,
                 every_seconds: float = LINE_SECONDS):
        self.total, self.n = total, initial
        self.description, self.unit, self.log = description, unit, log
        self.mode = progress_mode() if mode is None else mode
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {list(MODES)}; got {self.mode!r}.")
        self.every_seconds = every_seconds
        self.postfix = ""
        self._first: tuple[float, int] | None = None  # (time, n) after the first update
        self._last_line = -float("inf")
        self._bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=description, unit=unit,
                             dynamic_ncols=True, smoothing=0.1)

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        """Count `n` more units done, with `postfix` (`"loss 1.23 | lr 1e-3"`) shown after them."""
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        now = time.perf_counter()
        if self._first is None:
            self._first = (now, self.n)
        if self._bar is not None:
            self._bar.set_postfix_str(self.postfix, refresh=False)
            self._bar.update(n)
        elif self.mode == "lines" and (self.n >= self.total or now - self._last_line
                                       >= self.every_seconds):
            self._last_line = now
            self.log(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The plain progress line at time `now` (a `time.perf_counter()` value; default now)."""
        parts = [f"{self.description} {self.n:>{len(str(self.total))}}/{self.total}"]
        if self.postfix:
            parts.append(self.postfix)
        seconds_per_unit = self.seconds_per_unit(now)
        if seconds_per_unit is None:
            parts.append("ETA ?")
        elif seconds_per_unit > 0:  # 0: done at the first update, no rate to show
            rate = (f"{seconds_per_unit:.2f} s/{self.unit}" if seconds_per_unit >= 1
                    else f"{1 / max(seconds_per_unit, 1e-9):.2f} {self.unit}/s")
            parts += [rate, f"ETA {format_duration(seconds_per_unit * (self.total - self.n))}"]
        return " | ".join(parts)

    def seconds_per_unit(self, now: float | None = None) -> float | None:
        """Mean seconds per unit since the first update (`None` before a second one)."""
        if self._first is None or self.n <= self._first[1]:
            return None if self.n < self.total else 0.0
        first_time, first_n = self._first
        now = time.perf_counter() if now is None else now
        return (now - first_time) / (self.n - first_n)

    def write(self, line: str) -> None:
        """Send `line` to `log` without breaking a terminal bar."""
        if self._bar is None:
            self.log(line)
            return
        with self._bar.external_write_mode():
            self.log(line)

    def close(self) -> None:
        """End the bar (a plain-lines progress has nothing left to write)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
