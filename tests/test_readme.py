"""The README's code blocks name only what the package has."""

import ast
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _gemma_lora_imports(code: str) -> list[ast.ImportFrom]:
    return [node for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gemma_lora")]


def test_the_readme_has_python_examples_that_import_gemma_lora():
    assert sum(len(_gemma_lora_imports(block)) for block in BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.splitlines()[0][:40])
def test_every_name_a_readme_example_imports_exists(block):
    for node in _gemma_lora_imports(block):
        namespace: dict = {}
        exec(compile(ast.Module([node], []), "README.md", "exec"), namespace)
        assert all(alias.asname or alias.name in namespace for alias in node.names)


def test_the_library_example_calls_the_curated_api():
    library = next(block for block in BLOCKS if "enable_lora(model, LoraConfig" in block)
    import gemma_lora

    called = set(re.findall(r"\b([a-z_]+)\(", library)) & set(dir(gemma_lora))
    assert {"load_causal_lm", "enable_lora", "load_splits", "train", "evaluate",
            "load_adapter"} <= called
