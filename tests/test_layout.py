"""The package's shape: no import cycles, no file too long to read at once."""

from __future__ import annotations

import ast
import importlib
import re
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


# ------------------------------------------------------------------------------------- the rooms' public names
#: The rooms that are front ends or tools over the library: they import other rooms only through public names.
FRONT_ENDS = ("samcl.cli", "samcl.serve", "samcl.bench")
#: Top-level modules that are the vocabulary every room shares (their `__all__` is public, like a package's).
VOCABULARY = {"samcl.errors", "samcl.types", "samcl.options", "samcl.metrics"}
#: Machinery of the packages' own `__init__` files and of renamed names' old spellings, not API.
MACHINERY = {"samcl._lazy", "samcl._renamed"}


def is_package(module: str) -> bool:
    return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").is_file()


def public_of(module: str) -> set[str]:
    return set(getattr(importlib.import_module(module), "__all__", ()))


def non_public_imports(source: str, module: str, room: str) -> list[str]:
    """Imports in `source` (the code of `module`, in `room`) of another room's names that are not public: a name is
    public when it is in the `__all__` of `samcl`, of a package, or of a vocabulary module, and is imported from
    there (not from the internal module that defines it)."""
    package = module if module.endswith(".__init__") else module.rpartition(".")[0]
    package = package.removesuffix(".__init__")
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [(alias.name, None) for alias in node.names if alias.name.startswith("samcl")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                base = ".".join(anchor[: len(anchor) - (node.level - 1)] + ([base] if base else []))
            targets = [(base, alias.name) for alias in node.names] if base.startswith("samcl") else []
        else:
            continue
        for target, name in targets:
            if target == room or target.startswith(room + ".") or target in MACHINERY:
                continue
            if target != "samcl" and not is_package(target) and target not in VOCABULARY:
                found.append(f"{module}:{node.lineno} imports the internal module {target}")
            elif name is not None and name not in public_of(target) and not is_package(f"{target}.{name}"):
                found.append(f"{module}:{node.lineno} imports {target}.{name}, which {target} does not export")
    return found


def test_front_ends_use_only_public_names():
    """The CLI, the server and the benchmark (with the baselines) take every other room's names from its public
    surface: what they need, a user can import the same way."""
    found = []
    for room in FRONT_ENDS:
        for path in sorted((PACKAGE.parent / room.replace(".", "/")).rglob("*.py")):
            found += non_public_imports(path.read_text(), module_name(path) + (".__init__" if path.name == "__init__.py"
                                                                               else ""), room)
    assert not found, "\n".join(found)


def test_non_public_imports_are_found():
    planted = ("from ..store.files import ModuleStore\nfrom ..store import ModuleStore, not_exported\n"
               "from .. import SAMCL, runtime\nfrom ..io import read_image\nfrom .output import x\n"
               "def f():\n    from ..learning.trainer import TrainConfig\n    import samcl.engine\n")
    assert non_public_imports(planted, "samcl.cli.fake", "samcl.cli") == [
        "samcl.cli.fake:1 imports the internal module samcl.store.files",
        "samcl.cli.fake:2 imports samcl.store.not_exported, which samcl.store does not export",
        "samcl.cli.fake:7 imports the internal module samcl.learning.trainer",
        "samcl.cli.fake:8 imports the internal module samcl.engine",
    ]


def test_every_public_name_resolves():
    """Each name a package (or vocabulary module) exports can be imported from it: the packages load their names
    on first use, so a wrong entry would surface only when a user reached for it."""
    modules = ["samcl", *VOCABULARY] + [module_name(init) for init in sorted(PACKAGE.rglob("__init__.py"))]
    missing = [f"{module}.{name}" for module in modules for name in public_of(module)
               if not hasattr(importlib.import_module(module), name)]
    assert not missing, f"exported but not importable: {missing}"


def test_readme_layout_names_every_room_and_only_real_files():
    """The README's "How the code is laid out" table lists each subpackage and top-level module, and every file
    path in that section (the data path of one `segment` call included) exists."""
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme[readme.index("## How the code is laid out"):]
    section = section[: section.index("\n## ", 1)]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `samcl/")]
    named = set()
    for cell in rows:  # "`samcl/__init__.py`, `types.py`" -> samcl/__init__.py, samcl/types.py
        named |= {("samcl/" + p.removeprefix("samcl/")).rstrip("/") for p in re.findall(r"`([^`]+)`", cell)}
    rooms = {f"samcl/{p.name}" for p in PACKAGE.iterdir()
             if (p.is_dir() and (p / "__init__.py").is_file()) or (p.suffix == ".py" and not p.name.startswith("_"))}
    assert rooms - named == set(), f"rooms missing from the README's layout: {sorted(rooms - named)}"
    paths = {p for p in re.findall(r"`((?:samcl/)?[a-z_]+/[a-z_/]+\.py)", section)}
    missing = [p for p in named | paths  # a path in the package, or from the repository's root (tests/...)
               if not (PACKAGE / p.removeprefix("samcl/")).exists() and not (PACKAGE.parent / p).exists()]
    assert not missing, f"the README's layout names files that do not exist: {missing}"


# ------------------------------------------------------------------------------- the library speaks its own terms
#: The command lines: the only modules that may name a flag (`samcl.cli.errors.FLAGS` maps the library's fields).
COMMAND_LINES = ("cli/", "bench/cli.py")
FLAG = re.compile(r"(?<![\w-])--[a-z]")


def message_strings(call: ast.Call) -> list[ast.Constant]:
    """The string pieces (f-strings' literal parts included) of `call`'s arguments."""
    return [n for arg in [*call.args, *(k.value for k in call.keywords)] for n in ast.walk(arg)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def flag_mentions(source: str) -> list[str]:
    """`cli=` keywords anywhere, and flag-like strings (`--name`) in the messages of errors (calls to a name ending
    in Error, Exception or Loss, or to `super().__init__`, and whatever a `raise` builds) and of warnings."""
    found = []
    for node in ast.walk(ast.parse(source)):
        calls = [n for n in ast.walk(node.exc) if isinstance(n, ast.Call)] if isinstance(node, ast.Raise) and \
            node.exc is not None else [node] if isinstance(node, ast.Call) else []
        for call in calls:
            found += [f"{call.lineno}: cli=" for k in call.keywords if k.arg == "cli"]
            name = ast.unparse(call.func)
            if isinstance(node, ast.Raise) or name.endswith(("Error", "Exception", "Loss", "warn", "warning")) or \
                    name == "super().__init__":
                found += [f"{s.lineno}: {s.value.strip()[:60]!r}" for s in message_strings(call) if FLAG.search(s.value)]
    return sorted(set(found))


def test_no_library_module_names_a_flag():
    """Errors carry `code` and `field`; the command line turns fields into flags (`samcl.cli.errors.FLAGS`), so no
    module outside the command lines writes a command-line version of a message or a flag in one."""
    found = [f"{path.relative_to(PACKAGE)}:{hit}" for path in sorted(PACKAGE.rglob("*.py"))
             if not str(path.relative_to(PACKAGE)).startswith(COMMAND_LINES)
             for hit in flag_mentions(path.read_text())]
    assert not found, "\n".join(found)


def test_flag_mentions_are_found():
    planted = ("import warnings\nfrom .errors import SamclError\n"
               "def f(x):\n"
               "    raise SamclError(f'lr {x}: too large', cli=f'--lr {x}: too large')\n"
               "def g(x):\n"
               "    raise SamclError(f'{x}: try a smaller --lr')\n"
               "def h(x):\n"
               "    warnings.warn('read with --points-frame pixels')\n"
               "    raise ValueError(f'{x} (give --base)')\n"
               "def ok(x):\n"
               "    print('--lr is fine outside an error'); raise SamclError(f'x-y {x} -- a dash', field='lr')\n")
    assert flag_mentions(planted) == ["4: '--lr'", "4: cli=", "6: ': try a smaller --lr'",
                                      "8: 'read with --points-frame pixels'", "9: '(give --base)'"]


# ----------------------------------------------------------------------- front ends go through SAMCL's methods
def samcl_assignments(source: str) -> list[str]:
    """Assignments (plain, augmented, deleted, or to an item) to an attribute of a SAMCL object, which the front
    ends name `samcl` (or `self.samcl`): `samcl.store = None`, `self.samcl.module_set.modules[k] = m`. Binding
    the object itself (`self.samcl = SAMCL.open(...)`) is not one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            chain, inner = [], target
            while isinstance(inner, (ast.Attribute, ast.Subscript)):
                inner = inner.value
                chain.append(inner)
            if any(isinstance(n, ast.Name) and n.id == "samcl" or isinstance(n, ast.Attribute) and n.attr == "samcl"
                   for n in chain):
                found.append(f"{node.lineno}: {ast.unparse(target)}")
    return found


def test_front_ends_never_assign_to_a_samcl_attribute():
    """The CLI, the server and the benchmark change a set only through `SAMCL`'s methods (`set_runtime`,
    `cache_prefixes`, `configure_modules`, `put_module`, `keep_in_memory`, `learn`...), never by reaching into
    its engine or module set."""
    found = [f"{path.relative_to(PACKAGE)}:{hit}" for room in FRONT_ENDS
             for path in sorted((PACKAGE.parent / room.replace(".", "/")).rglob("*.py"))
             for hit in samcl_assignments(path.read_text())]
    assert not found, "\n".join(found)


def test_samcl_assignments_are_found():
    planted = ("def f(samcl, self, m):\n"
               "    self.samcl = open_it()\n"
               "    samcl = open_it()\n"
               "    samcl.store = None\n"
               "    self.samcl.module_set.aug_config = m\n"
               "    self.samcl.module_set.modules['x'] = m\n"
               "    samcl.engine.cache.budget += 1\n"
               "    del samcl.module_set.domains[0]\n"
               "    other.store = None\n")
    assert samcl_assignments(planted) == ["4: samcl.store", "5: self.samcl.module_set.aug_config",
                                          "6: self.samcl.module_set.modules['x']", "7: samcl.engine.cache.budget",
                                          "8: samcl.module_set.domains[0]"]
