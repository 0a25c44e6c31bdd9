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


# The layers (../shared/architecture.json's parts, in this layout) and the imports that must never
# be: (importer, imported, why).
PARTS = {
    "Entry": [p.stem for p in ENTRY_POINTS],
    "Data": ["data"],
    "Models": ["models"],
    "Losses": ["losses"],
    "Systems": ["systems"],
    "Runs": ["runs"],
    "Checkpoints": ["checkpoints"],
    "Config": ["config", "errors", "files", "inputs"],
    "Eval": ["eval"],
    "Study": ["study"],
}
NEVER = [
    ("Data", "Models", "data knows no network"),
    ("Data", "Systems", "data knows no training"),
    ("Models", "Systems", "networks are plain nn.Modules"),
    ("Losses", "Systems", "losses are plain functions/modules"),
    *[
        (lib, "Entry", "the library never imports an entry point")
        for lib in PARTS
        if lib != "Entry"
    ],
    ("Checkpoints", "Models", "a checkpoint reader hands state dicts to builders"),
    ("Config", "Checkpoints", "config knows no checkpoint files"),
    ("Runs", "Systems", "run bookkeeping knows no training"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def own_imports(source: str, package: str) -> set[str]:
    """The deblur modules a module imports (``from x import name``: x.name where that is one)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:  # relative: resolved in ``package``
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            mods = [f"{base}.{node.module}" if node.module else base]
        elif isinstance(node, ast.ImportFrom):
            mods = [node.module or ""]
        else:
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for mod in mods:
            if mod.startswith("deblur"):
                subs = [f"{mod}.{a.name}" for a in getattr(node, "names", [])]
                found |= {s for s in subs if s in GRAPH_NODES} or {mod}
    return found


GRAPH_NODES = {module_name(p) for p in MODULES}


def import_graph(sources: dict[str, tuple[str, str]]) -> dict[str, set[str]]:
    """{module: the deblur modules it imports}, from {module: (source, its package)}."""
    return {m: own_imports(src, pkg) - {m} for m, (src, pkg) in sources.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected part with more than one module (Tarjan's order)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while (w := stack.pop()) != v:
                on.discard(w)
                part.append(w)
            on.discard(v)
            if part:
                out.append(sorted([v, *part]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def part_of(module: str) -> str | None:
    top = module.split(".")[1] if "." in module else ""
    return next((part for part, tops in PARTS.items() if top in tops), None)


def broken_nevers(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{m} -> {t} ({a} -> {b}: {why})"
        for m, targets in graph.items()
        for t in sorted(targets)
        for a, b, why in NEVER
        if part_of(m) == a and part_of(t) == b
    ]


def _sources() -> dict[str, tuple[str, str]]:
    out = {}
    for p in MODULES:
        name = module_name(p)
        out[name] = (p.read_text(), name if p.name == "__init__.py" else name.rsplit(".", 1)[0])
    return out


def test_no_import_cycle_and_no_never_import():
    graph = import_graph(_sources())
    assert not cycles(graph), f"import cycles: {cycles(graph)}"
    assert not broken_nevers(graph), broken_nevers(graph)


def test_the_layer_checks_see_a_cycle_and_a_never():
    """Mutations: checkpoints importing runs closes a cycle; data importing models breaks a never."""
    sources = _sources()
    graph = import_graph(sources)
    ck_src, ck_pkg = sources["deblur.checkpoints"]
    sources["deblur.checkpoints"] = ("from deblur.runs.identity import identify\n" + ck_src, ck_pkg)
    assert any("deblur.checkpoints" in c for c in cycles(import_graph(sources)))
    assert "deblur.runs.identity" in graph and "deblur.checkpoints" in graph["deblur.runs.identity"]
    graph["deblur.data.io"] = graph["deblur.data.io"] | {"deblur.models.layers"}
    assert broken_nevers(graph) == [
        "deblur.data.io -> deblur.models.layers (Data -> Models: data knows no network)"
    ]
