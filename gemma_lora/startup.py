"""A quiet start: TensorFlow's native start-up lines kept out of notebooks and logs.

KerasHub's tokenizers run on TensorFlow, and TensorFlow's C++ code writes to
the process's standard error before any Python logging applies: on a machine
without an NVIDIA driver, every import says `Could not find cuda drivers on
your machine, GPU will not be used.` and the first TensorFlow operation
`failed call to cuInit: ... UNKNOWN ERROR (303)`, each with an absl
`All log messages before absl::InitializeLog() is called ...` banner. A
newcomer reads them as failures. `start_quietly()` imports TensorFlow and
lists its devices with file descriptor 2 captured, then writes back every
line except those start-up notices — and the CUDA ones only where there is
no NVIDIA device, since on a GPU machine they would be real errors.
`TF_CPP_MIN_LOG_LEVEL` cannot do this: at a level that hides the cuInit line
it hides every other TensorFlow error too.

Example:
>>> start_quietly() in (True, False)   # True where TensorFlow is installed
True
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

# Start-up notices that say nothing is wrong, on any machine.
HARMLESS_LINES = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
)
# The same, only where no NVIDIA device exists (there, they are expected).
NO_GPU_LINES = (
    "Could not find cuda drivers on your machine, GPU will not be used",
    "failed call to cuInit",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "TF-TRT Warning: Could not find TensorRT",
)
# SentencePiece's C++ notice, printed each time a Gemma tokenizer is built from its proto.
TOKENIZER_LINES = ("precompiled_charsmap is empty. use identity normalization.",)


def has_nvidia_device() -> bool:
    """Whether this machine has an NVIDIA driver's device files.

    Returns:
        True when `/dev/nvidiactl` or `/dev/nvidia0` exists.
    """
    return any(Path(name).exists() for name in ("/dev/nvidiactl", "/dev/nvidia0"))


@contextlib.contextmanager
def filtered_stderr(dropped: Sequence[str]) -> Iterator[None]:
    """Capture file descriptor 2 (native code's stderr too), then write back all but `dropped`.

    Args:
        dropped: substrings; a captured line containing one of them is not
            written back.

    Yields:
        Nothing; standard error is restored when the block ends, even on an
        exception, and the kept lines are written to it.

    Example:
    >>> with filtered_stderr(["noise"]):
    ...     _ = os.write(2, b"noise from C++\\n")
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(True)
                    if not any(pattern in line for pattern in dropped)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def start_quietly() -> bool:
    """Import TensorFlow and let it look for GPUs, without its start-up notices.

    Sets `TF_CPP_MIN_LOG_LEVEL=2` and `TF_ENABLE_ONEDNN_OPTS=0` unless they
    are set already (TensorFlow's info lines and oneDNN notice; its warnings
    and errors still show). Call it once, first thing in a notebook: later
    imports of Keras and KerasHub then find TensorFlow started.

    Returns:
        Whether TensorFlow is installed (without it there is nothing to quiet).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    dropped = HARMLESS_LINES + (() if has_nvidia_device() else NO_GPU_LINES)
    with filtered_stderr(dropped):
        try:
            import tensorflow as tf  # the import is what prints; it is why this module exists
        except ImportError:
            return False
        tf.config.list_physical_devices("GPU")  # TensorFlow's cuInit, on its first device query
    return True
