"""The package's shape: short modules, private names kept private, a cheap `import gemma_lora`.

The layers contract itself (imports point down the pipeline only) is
checked by `lint-imports` in `make test`, from `[tool.importlinter]` in
pyproject.toml.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gemma_lora"
MAX_MODULE_LINES = 500


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_module_is_longer_than_the_limit(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines"


def _private_uses(path: Path) -> list[str]:
    """`_name`s of gemma_lora modules that `path` imports or reads as attributes."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = _module_name(path) if path.is_relative_to(PACKAGE) else None
    aliases = {}  # local name -> gemma_lora module it stands for
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gemma_lora"):
            for alias in node.names:
                if (alias.name.startswith("_") and not alias.name.startswith("__")
                        and node.module != own):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("gemma_lora"):
                    aliases[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize(
    "path", _modules() + sorted((ROOT / "tests").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py")),
    ids=lambda path: str(path.relative_to(ROOT)))
def test_no_private_name_is_used_outside_its_module(path):
    assert _private_uses(path) == []


def test_the_private_name_check_finds_a_private_use(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from gemma_lora.models import gguf\nfrom gemma_lora.data import _x\n"
                      "gguf._read_gguf('m')\n", encoding="utf-8")
    assert _private_uses(sample) == ["line 2: from gemma_lora.data import _x",
                                     "line 3: gguf._read_gguf"]


def test_import_gemma_lora_does_not_import_keras():
    code = ("import sys, gemma_lora; "
            "assert 'keras' not in sys.modules and 'jax' not in sys.modules, 'eager import'; "
            "print(sorted(gemma_lora.__all__)[:3])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert "ConfigError" in result.stdout
