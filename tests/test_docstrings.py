"""Every docstring example in `gemma_lora` runs here, one test per module.

An example that cannot run cheaply (a download, a GPU, several devices, a
long run) is written as a plain `Example::` code block instead, never as a
skipped doctest. Examples that need a model use `gemma_lora.testing.tiny_causal_lm`.
The number of examples run is printed at the end of the session (see
`pytest_terminal_summary` in conftest.py).
"""

import doctest
import importlib
import pkgutil
import tempfile
from pathlib import Path

import pytest

import gemma_lora

REPO = Path(__file__).resolve().parents[1]
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

MODULES = ["gemma_lora", *(module.name for module in
                           pkgutil.walk_packages(gemma_lora.__path__, "gemma_lora."))]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch, record_property, tmp_path):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # examples' mkdtemp() folders
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report = []
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.append)
    record_property("docstring_examples", runner.tries)
    assert runner.failures == 0, "".join(report)


def test_the_suite_covers_every_module():
    assert "gemma_lora.testing.tiny" in MODULES and "gemma_lora.data.files" in MODULES
    assert all(name == "gemma_lora" or name.startswith("gemma_lora.") for name in MODULES)


def test_no_example_is_skipped():
    """An example that cannot run is a plain `Example::` block, not a skipped doctest."""
    package = Path(gemma_lora.__file__).parent
    skipped = [f"{path.relative_to(package.parent)}:{number}"
               for path in sorted(package.rglob("*.py"))
               for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
               if "doctest: +SKIP" in line]
    assert not skipped, f"skipped doctests (make them run, or plain code blocks): {skipped}"
