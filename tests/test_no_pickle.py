"""No code execution from files: nothing in samcl unpickles. The store is safetensors + JSON, HF models are read
from safetensors only, and Meta's official checkpoints (plain pickles by design) go through
torch.load(weights_only=True), which refuses anything but tensors and plain containers."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest
import torch
from conftest import tiny_sam_config
from helpers import toy_samples

from samcl import SAMCL, SelectorConfig, TrainConfig
from samcl.backbone import SamBackbone
from samcl.store import ModuleStore

PACKAGE = Path(__file__).resolve().parents[1] / "samcl"
SOURCES = sorted(PACKAGE.rglob("*.py"))
#: Modules that deserialize code-carrying formats; none may be imported at all.
UNPICKLERS = {"_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "jsonpickle"}
#: The one use of the pickle module allowed: naming the exception torch.load(weights_only=True) raises.
PICKLE_NAMES_ALLOWED = {"UnpicklingError"}
#: The one unpickler: the authors' module files read through an allow-list (`find_class` answers only for the
#: globals those files use, as inert records; tests/test_reference_import.py plants a pickle that would run code).
RESTRICTED_UNPICKLER = Path("samcl/reference/unpickle.py")



def parsed():
    for path in SOURCES:
        yield path.relative_to(PACKAGE.parent), ast.parse(path.read_text(), filename=str(path))


def dotted(node: ast.AST) -> str:
    """a.b.c for an attribute chain, else ''."""
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return node.id if isinstance(node, ast.Name) else ""


def test_the_package_is_scanned():
    assert len(SOURCES) > 10 and PACKAGE / "store" / "files.py" in SOURCES


def pickle_problems(trees) -> list[str]:
    problems = []
    for name, tree in trees:
        if name == RESTRICTED_UNPICKLER:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                problems += [f"{name}:{node.lineno} import {a.name}" for a in node.names
                             if a.name.split(".")[0] in UNPICKLERS]
            elif isinstance(node, ast.ImportFrom) and node.module:
                root = node.module.split(".")[0]
                if root in UNPICKLERS or (root == "pickle" and {a.name for a in node.names} - PICKLE_NAMES_ALLOWED):
                    problems.append(f"{name}:{node.lineno} from {node.module} import ...")
            elif isinstance(node, ast.Attribute) and dotted(node.value) == "pickle" \
                    and node.attr not in PICKLE_NAMES_ALLOWED:
                problems.append(f"{name}:{node.lineno} pickle.{node.attr}")
    return problems


def load_problems(trees) -> tuple[list[str], list[str]]:
    """(torch.load call sites, problems): torch.load without weights_only=True, torch.save, np.load pickles."""
    calls, problems = [], []
    for name, tree in trees:
        torch_names = {"torch"} | {a.asname for node in ast.walk(tree) if isinstance(node, ast.Import)
                                   for a in node.names if a.name == "torch" and a.asname}
        problems += [f"{name}:{node.lineno} imports torch's {a.name} by name" for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization")
                     for a in node.names if a.name in ("load", "save")]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            head, _, attr = dotted(node.func).rpartition(".")
            if head in torch_names | {f"{t}.serialization" for t in torch_names} and attr == "load":
                calls.append(f"{name}:{node.lineno}")
                flag = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{name}:{node.lineno} torch.load without weights_only=True")
            if head in torch_names and attr == "save":
                problems.append(f"{name}:{node.lineno} torch.save (samcl writes safetensors)")
            if attr == "load" and head in ("np", "numpy"):
                flag = next((k.value for k in node.keywords if k.arg == "allow_pickle"), None)
                if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                    problems.append(f"{name}:{node.lineno} np.load with allow_pickle")
    return calls, problems


def test_the_checks_catch_what_they_look_for():
    bad = ast.parse("import pickle, dill\nfrom pickle import loads\nimport torch as t\nimport numpy as np\n"
                    "pickle.loads(b'')\nt.load('x')\nt.load('x', weights_only=False)\nt.save({}, 'x')\n"
                    "np.load('x', allow_pickle=True)\nt.load('x', weights_only=True)\n")
    assert len(pickle_problems([("bad.py", bad)])) == 3  # dill, from pickle import loads, pickle.loads
    calls, problems = load_problems([("bad.py", bad)])
    assert len(calls) == 3 and len(problems) == 4
    fine = ast.parse("import pickle\ntry:\n    pass\nexcept pickle.UnpicklingError:\n    pass\n")
    assert pickle_problems([("fine.py", fine)]) == []


def test_no_module_that_unpickles_is_imported_and_pickle_only_for_its_exception():
    assert pickle_problems(parsed()) == []


def test_the_restricted_unpickler_overrides_find_class_and_persistent_load():
    tree = ast.parse((PACKAGE.parent / RESTRICTED_UNPICKLER).read_text())
    subclasses = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                  and any(dotted(base) == "pickle.Unpickler" for base in node.bases)]
    assert len(subclasses) == 1
    methods = {f.name for f in subclasses[0].body if isinstance(f, ast.FunctionDef)}
    assert {"find_class", "persistent_load"} <= methods
    uses = [dotted(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute) and dotted(n.value) == "pickle"]
    assert set(uses) <= {"pickle.Unpickler", "pickle.UnpicklingError"}


def test_every_torch_load_passes_weights_only_true_and_nothing_is_torch_saved():
    calls, problems = load_problems(parsed())
    assert problems == []
    assert calls, "Meta's checkpoints are read somewhere with torch.load: the scan must see that call"


def test_opening_a_store_and_an_hf_base_never_unpickles(tmp_path, monkeypatch):
    base = tmp_path / "base"
    SamBackbone.from_config(tiny_sam_config(), seed=0).model.save_pretrained(base)
    store = tmp_path / "store"
    samcl = SAMCL.create(SamBackbone.from_pretrained(base), store, selector=SelectorConfig(kind="mlp", samples_per_domain=4,
                                                                                             epochs=1))
    samcl.learn("red", toy_samples(4, (200, 30, 30), 0), TrainConfig(epochs=1, progress=False))

    def refuse(*args, **kwargs):
        raise AssertionError("something unpickled")

    for module, attr in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(module, attr, refuse)
    backbone = SamBackbone.from_pretrained(base)
    state = ModuleStore(store).load(identity=backbone.identity())
    assert state.names == ["red"] and set(state.modules) == {"red"}
    for path in store.rglob("*.safetensors"):
        assert not path.read_bytes().startswith((b"\x80", b"PK")), f"{path} looks like a pickle or a zip"


@pytest.mark.parametrize("payload", ["module file", "selector file"])
def test_a_pickle_in_the_store_is_never_loaded(tmp_path, tiny_backbone, payload):
    """Even with the manifest's checksum forged to match, a pickle where safetensors belongs is refused."""
    import json

    from samcl import SamclError
    from samcl.store.files import sha256_bytes

    store = tmp_path / "store"
    samcl = SAMCL.create(tiny_backbone, store, selector=SelectorConfig(kind="mlp", samples_per_domain=4, epochs=1))
    samcl.learn("red", toy_samples(4, (200, 30, 30), 0), TrainConfig(epochs=1, progress=False))
    manifest = json.loads((store / "manifest.json").read_text())
    entry = manifest["domains"][0] if payload == "module file" else manifest["selector"]
    marker = tmp_path / "code-ran"
    torch.save({"x": _RunsCode(marker)}, store / entry["file"])
    entry["sha256"] = sha256_bytes((store / entry["file"]).read_bytes())
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SamclError, match="not a valid safetensors file"):
        ModuleStore(store).load()
    assert not marker.exists()


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)
