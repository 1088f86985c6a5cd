"""docs/tests.md, the index of claims and their tests, names only what exists and quotes the docs.

Every row of its claims table quotes a sentence of README.md or
docs/performance.md word for word (up to line breaks) and names tests as
`tests/FILE.py::FUNCTION`; each such function must be defined at the top
level of that file. Every row of its figures table names a script that
exists. So a test renamed or a claim reworded without the index fails here.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INDEX = ROOT / "docs" / "tests.md"
TEST_NAME = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
SCRIPT_NAME = re.compile(r"(benchmarks/\w+\.py|notebooks/[\w.]+\.ipynb)")
SOURCES = ("README.md", "docs/performance.md")
CELL_BORDER = re.compile(r"(?<!\\)\|")


def table_rows(heading: str) -> list[list[str]]:
    """The cells of each body row of the first table after `## heading`."""
    text = INDEX.read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert len(lines) > 2, f"no table under '## {heading}'"
    # Cells are split at unescaped pipes: a backslash-escaped pipe stays inside its cell.
    return [[cell.strip().replace("\\|", "|") for cell in CELL_BORDER.split(line.strip()[1:-1])]
            for line in lines[2:]]


def normalized(text: str) -> str:
    return " ".join(text.split())


def defined_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


CLAIMS = table_rows("Claims and their tests")
FIGURES = table_rows("Figures and the commands that print them")


@pytest.mark.parametrize("row", CLAIMS, ids=[row[0][:40] for row in CLAIMS])
def test_each_claim_is_quoted_from_its_document_and_names_existing_tests(row):
    claim, source, tests, tolerance, reference = row
    assert source.strip("`") in SOURCES, source
    assert claim.count('"') >= 2, f"the claim must be quoted: {claim}"
    quote = normalized(claim[claim.index('"') + 1:claim.rindex('"')])
    document = normalized((ROOT / source.strip("`")).read_text(encoding="utf-8"))
    assert quote in document, f"{source} does not say: {quote}"
    named = TEST_NAME.findall(tests)
    assert named, f"no test named for: {quote}"
    for file, function in named:
        assert (ROOT / file).is_file(), file
        assert function in defined_functions(ROOT / file), f"{file} defines no {function}"
    assert tolerance and reference


@pytest.mark.parametrize("row", FIGURES, ids=[row[0][:40] for row in FIGURES])
def test_each_figure_names_the_command_that_prints_it(row):
    figure, source, command, check = row
    document = normalized((ROOT / source.strip("`")).read_text(encoding="utf-8"))
    quote = normalized(figure[figure.index('"') + 1:figure.rindex('"')])
    assert quote in document, f"{source} does not say: {quote}"
    scripts = SCRIPT_NAME.findall(command)
    assert scripts and all((ROOT / script).is_file() for script in scripts), command
    for file, function in TEST_NAME.findall(check):
        assert function in defined_functions(ROOT / file), f"{file} defines no {function}"

