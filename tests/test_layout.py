"""The package's shape: no import cycles, no file too long to read at once."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "samcl"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str], type_checking: bool = False) -> set[str]:
    """Modules of the package that `path` imports anywhere (module level or inside functions; with
    `type_checking`, the imports made for type checkers only as well)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text())
    for block in [n for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)]:
        if not type_checking:
            block.body = []  # imports for type checkers only never run
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from .pkg import mod` imports the module mod; `from .mod import name` imports mod
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from .x import name`: the module x
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
            # importing a.b.c first runs a.b's __init__, unless a.b is a package this module lives in (it runs
            # already, being the one that got here)
            while (target := target.rpartition(".")[0]) and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def import_graph(type_checking: bool = False) -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(f) for f in files}
    return {module_name(f): imported_modules(f, known, type_checking) for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_package_has_no_import_cycle():
    """No module imports, through others, itself: imports inside functions count (a deferred import that closes
    a cycle is still a cycle), and so does the __init__ of a subpackage that an import runs first. Importing the
    root package itself counts too: submodules take what they need from the module that defines it."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_for_type_checkers_either():
    """Two modules that need each other's types are one concern split wrongly, even when the import runs only
    under TYPE_CHECKING (the package's root __init__, which names every public type for IDEs, aside)."""
    graph = {name: deps - {"samcl"} for name, deps in import_graph(type_checking=True).items() if name != "samcl"}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle (TYPE_CHECKING imports included): " + " -> ".join(cycle)


def test_type_checking_imports_are_seen(tmp_path):
    planted = tmp_path / "samcl" / "a.py"
    planted.parent.mkdir()
    planted.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n")
    (tmp_path / "samcl" / "b.py").write_text("from .a import A\n")
    known = {"samcl", "samcl.a", "samcl.b"}
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "samcl"
    try:
        assert imported_modules(planted, known, type_checking=True) == {"samcl.b"}
        assert imported_modules(planted, known) == set()
    finally:
        PACKAGE = saved


def test_cycle_detector_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_file_in_the_package_is_over_400_lines():
    long = {str(f.relative_to(PACKAGE)): n for f in PACKAGE.rglob("*.py")
            if (n := len(f.read_text().splitlines())) > 400}
    assert not long, f"files over 400 lines: {long}"
