"""The shape of the library's code (issue 21): short functions, no import of our own modules
hidden inside a function (an import made there to dodge a cycle hides the cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "deblur"
MAX_LINES = 60


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def function_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from ``def`` to the function's last line, its docstring not counted."""
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def long_functions(source: str, limit: int = MAX_LINES) -> list[tuple[str, int]]:
    return [(f.name, n) for f in _functions(ast.parse(source)) if (n := function_lines(f)) > limit]


def hidden_own_imports(source: str) -> list[str]:
    found = []
    for f in _functions(ast.parse(source)):
        for node in ast.walk(f):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deblur"):
                found.append(f"{f.name}: from {node.module}")
            elif isinstance(node, ast.Import):
                found += [
                    f"{f.name}: import {a.name}" for a in node.names if a.name.startswith("deblur")
                ]
    return found


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_function_over_60_lines(path):
    too_long = long_functions(path.read_text())
    assert not too_long, f"{path}: {too_long} (split them: at most {MAX_LINES} lines each)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_own_import_inside_a_function(path):
    assert not hidden_own_imports(path.read_text()), path


def test_the_checks_see_what_they_look_for():
    """Mutations: a 61-line function and a hidden import are found, a docstring is not counted."""
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    assert long_functions(f"def f():\n{body}\n") == [("f", 61)]
    doc = '    """' + "\n" * 30 + '    """\n'
    assert long_functions(f"def f():\n{doc}{chr(10).join(body.splitlines()[:59])}\n") == []
    assert hidden_own_imports("def f():\n    from deblur.runs import managed_run\n") == [
        "f: from deblur.runs"
    ]
    assert hidden_own_imports("import deblur.runs\ndef f():\n    import json\n") == []


ENTRY_POINTS = [p for p in sorted(SRC.glob("*.py")) if '__name__ == "__main__"' in p.read_text()]


def test_entry_points_are_thin_and_import_no_other():
    """Each ``python -m deblur.<tool>`` file: <= 60 lines over the library, no other entry point."""
    names = {p.stem for p in ENTRY_POINTS}
    assert len(names) == 10, names  # train ... dashboard: the README's commands
    for path in ENTRY_POINTS:
        source = path.read_text()
        assert len(source.splitlines()) <= MAX_LINES, f"{path}: move its logic into the library"
        imported = {
            node.module.split(".")[1]
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deblur.")
        }
        assert not imported & names, f"{path} imports the entry point(s) {imported & names}"
