"""Benchmark: the PyPI Gemma 3 270M GGUF converted into KerasHub presets.

Converts into fresh temporary cache folders and prints how long each
conversion takes and its peak memory, the size of the float32 and bfloat16
presets, and how long each preset takes to load. Every step runs in its own
Python process, so its peak RSS is its own; "after imports" is the RSS once
Keras, KerasHub and TensorFlow are imported, before the step starts.

Run from the repository root, after `make setup` (which installs gemma_lora into .venv):

    KERAS_BACKEND=jax .venv/bin/python benchmarks/gguf_conversion.py
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

GIB = 1024**3


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="gguf-bench-") as root:
        cache, fresh_cache = Path(root) / "cache", Path(root) / "fresh-cache"
        steps = [
            ("float32 preset from the GGUF", "convert", "float32", cache),
            ("second call (cached)", "convert", "float32", cache),
            ("bfloat16 preset from the float32 one", "convert", "bfloat16", cache),
            ("bfloat16 preset from the GGUF", "convert", "bfloat16", fresh_cache),
            ("load the float32 preset", "load", "float32", cache),
            ("load the bfloat16 preset", "load", "bfloat16", cache),
        ]
        print(f"Gemma 3 270M, PyPI GGUF -> KerasHub preset; cache: {cache}")
        print(f"{'step':<40}{'time':>9}{'peak RSS':>12}{'after imports':>16}")
        for label, action, dtype, cache_dir in steps:
            result = _run_step(action, dtype, cache_dir)
            print(
                f"{label:<40}{result['seconds']:>7.1f} s"
                f"{result['peak_rss'] / GIB:>8.2f} GiB"
                f"{result['baseline_rss'] / GIB:>12.2f} GiB"
            )
        for dtype in ("float32", "bfloat16"):
            preset = cache / f"gemma3_270m_pypi-{dtype}"
            print(f"{dtype} preset size: {_folder_size(preset) / GIB:.2f} GiB ({preset.name})")


def _run_step(action: str, dtype: str, cache_dir: Path) -> dict:
    """Run one step in a fresh Python process and return its measurements."""
    command = [sys.executable, __file__, action, dtype, str(cache_dir)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def _measure_step(action: str, dtype: str, cache_dir: str) -> dict:
    """Convert (or load) one preset in this process; time it and its memory."""
    import keras_hub
    import psutil

    from gemma_lora.models import gguf

    baseline_rss = psutil.Process().memory_info().rss
    start = time.perf_counter()
    preset = gguf.gemma3_270m_preset(dtype=dtype, cache_dir=cache_dir)
    if action == "load":
        start = time.perf_counter()
        keras_hub.models.Gemma3CausalLM.from_preset(str(preset), dtype=dtype)
    seconds = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux.
    return {"seconds": seconds, "peak_rss": peak_rss, "baseline_rss": baseline_rss}


def _folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


if __name__ == "__main__":
    if len(sys.argv) == 4:
        print(json.dumps(_measure_step(*sys.argv[1:])))
    else:
        main()
