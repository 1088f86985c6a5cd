"""TensorFlow starts without its no-GPU notices, and real errors still reach stderr."""

import subprocess
import sys

from gemma_lora import startup


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          timeout=300)


def test_filtered_stderr_drops_only_the_listed_lines_written_by_native_code():
    result = _run("import os\nfrom gemma_lora import startup\n"
                  "with startup.filtered_stderr(['notice']):\n"
                  "    os.write(2, b'a notice\\nan error\\n')\n"
                  "os.write(2, b'after\\n')\n")
    assert result.returncode == 0
    assert result.stderr == "an error\nafter\n"


def test_filtered_stderr_restores_stderr_after_an_exception():
    result = _run("import os\nfrom gemma_lora import startup\n"
                  "try:\n    with startup.filtered_stderr([]):\n        raise KeyError('x')\n"
                  "except KeyError:\n    pass\nos.write(2, b'still here\\n')\n")
    assert result.stderr == "still here\n"


def test_tensorflow_starts_without_its_no_gpu_notices():
    code = ("import os\nfrom gemma_lora import startup\nassert startup.start_quietly()\n"
            "import tensorflow as tf\ntf.constant(1) + 1\nos.write(2, b'a real error\\n')\n")
    result = _run(code)
    assert result.returncode == 0, result.stderr
    if not startup.has_nvidia_device():
        for notice in startup.NO_GPU_LINES:
            assert notice not in result.stderr
    for notice in startup.HARMLESS_LINES:
        assert notice not in result.stderr
    assert result.stderr.endswith("a real error\n")
