"""Every test function checks something: a test that only runs code proves nothing.

A test checks when its body (or a helper of its module that it calls, at any
depth) holds an `assert`, a `raise`, `pytest.raises`/`pytest.warns`/
`pytest.fail`, a `numpy.testing` call or a call of an `assert...` function.
"""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
_CHECKING_CALLS = ("raises", "warns", "deprecated_call", "fail")


def _checks(node: ast.AST, checking_helpers: set[str]) -> bool:
    for child in ast.walk(node):
        if isinstance(child, (ast.Assert, ast.Raise)):
            return True
        if isinstance(child, ast.Call):
            name = getattr(child.func, "attr", getattr(child.func, "id", ""))
            if (name in _CHECKING_CALLS or name in checking_helpers
                    or name.lstrip("_").startswith("assert")
                    or "testing." in ast.unparse(child.func)):
                return True
    return False


def unchecked_tests(path: Path) -> list[str]:
    """`line: name` of each `test_` function in `path` that checks nothing."""
    functions = [node for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    helpers: set[str] = set()
    while True:  # helpers that check, directly or through other helpers
        found = {f.name for f in functions
                 if not f.name.startswith("test_") and _checks(f, helpers)}
        if found <= helpers:
            break
        helpers |= found
    return [f"{f.lineno}: {f.name}" for f in functions
            if f.name.startswith("test_") and not _checks(f, helpers)]


def test_every_test_function_checks_something():
    missing = {path.name: found for path in sorted(TESTS.glob("test_*.py"))
               if (found := unchecked_tests(path))}
    assert missing == {}


def test_the_scan_finds_a_test_that_checks_nothing(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text("def _expect(x):\n    assert x\n\n"
                      "def test_runs():\n    print(1)\n\n"
                      "def test_helper():\n    _expect(1)\n\n"
                      "def test_raises():\n    with pytest.raises(ValueError):\n        int('x')\n",
                      encoding="utf-8")
    assert unchecked_tests(sample) == ["4: test_runs"]
