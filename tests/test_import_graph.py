"""The modules under src/ (the core and the Kubeflow side) import downwards only: no import cycle,
imports inside functions included. (Importing a package's module also runs the package's
``__init__``; those implicit edges are left out, as a package's ``__init__`` may gather its modules.)"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every project module ``path`` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
            if not node.level and not target.startswith("imagenet_tfrecords"):
                continue
            if node.module:
                found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from . import formats`: a module
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("imagenet_tfrecords"))
    return found


def graph(src: Path = SRC) -> dict[str, set[str]]:
    paths = {_module_name(p, src): p for p in src.rglob("*.py")}
    return {name: {m for m in _imports(p, name) if m in paths and m != name} for name, p in paths.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_check_finds_a_cycle_through_an_import_inside_a_function(tmp_path):
    pkg = tmp_path / "imagenet_tfrecords"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("import os\n\n\ndef f():\n    from .high import g\n")
    (pkg / "high.py").write_text("from . import mid\n")
    (pkg / "mid.py").write_text("import imagenet_tfrecords.low\n")
    (pkg / "top.py").write_text("from .high import g\n")
    assert cycles(graph(tmp_path)) == [["imagenet_tfrecords.high", "imagenet_tfrecords.low", "imagenet_tfrecords.mid"]]
    (pkg / "low.py").write_text("import os\n")
    assert cycles(graph(tmp_path)) == []
