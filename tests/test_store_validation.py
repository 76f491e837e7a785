"""One validator of a store's structure (`samcl.store.check`): `samcl info` refuses exactly what open (segment,
learn, forget, merge) refuses, with one line naming the manifest; no way in (merge, import, a hand-edited
manifest) yields a reserved or path-like name, a name listed twice or NaN weights; a killed writer's leftovers
are removed by the next writer, while a store that lost its manifest is still refused and kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from crafted_files import duplicate_domain, edit_manifest, nested_json
from helpers import cli_error, write_domain

from samcl.cli import main

FAST = ["--epochs", "1", "--json"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Two stores on the builtin tiny SAM learned apart: 'a' (red, blue) and 'b' (cells)."""
    root = tmp_path_factory.mktemp("validate")
    for name, colour, seed in (("red", (200, 30, 30), 0), ("blue", (30, 30, 200), 1), ("cells", (30, 190, 40), 2)):
        write_domain(root / name, colour, seed=seed, n_train=4, n_test=1)
    for store, domain in (("a", "red"), ("a", "blue"), ("b", "cells")):
        assert main([str(a) for a in ["learn", root / store, "--domain", domain, "--data", root / domain, *FAST]]) == 0
    return root


@pytest.fixture
def store(ws, tmp_path):
    return Path(shutil.copytree(ws / "a", tmp_path / "a"))


def bigger_rank(manifest):
    manifest["domains"][1]["config"]["rank"] += 2


TAMPERED = {
    "duplicate-name": (duplicate_domain, "listed twice"),
    "extra-key": (lambda m: m["domains"][0].update(colour="red"), "unexpected key 'colour'"),
    "top-extra-key": (lambda m: m.update(note="mine"), "unexpected key 'note'"),
    "rank-mismatch": (bigger_rank, "has rank 12, the store's modules 10"),
    "selector-dim-text": (lambda m: m["selector"].update(dim="x"), "selector dim 'x'"),
    "unknown-selector-kind": (lambda m: m["selector"].update(kind="knn"), "selector kind 'knn'"),
    "no-backbone": (lambda m: m.pop("backbone"), "lacks 'backbone'"),
    "no-domains": (lambda m: m.pop("domains"), "lacks 'domains'"),
    "name-base": (lambda m: m["domains"][1].update(name="base"), "reserved"),
    "name-path": (lambda m: m["domains"][1].update(name="../../x"), "'../../x'"),
    "dtype-list": (lambda m: m.update(dtype=["float32"]), "dtype"),
    "bytes-text": (lambda m: m["domains"][0].update(bytes="x"), "domain 'red' bytes 'x': expected an integer)"),
    "generation-negative": (lambda m: m.update(generation=-1), "generation -1: expected >= 0)"),
}


@pytest.mark.parametrize("name", list(TAMPERED))
def test_info_refuses_what_segment_refuses(ws, store, tmp_path, capsys, name):
    change, problem = TAMPERED[name]
    edit_manifest(store, change)
    before = snapshot(store)
    image = ws / "red" / "test" / "images" / "img000.png"
    for argv in (["info", store], ["segment", store, image, "--point", "5,5", "--out", tmp_path / "m.png"],
                 ["learn", store, "--domain", "green", "--data", ws / "cells", *FAST], ["forget", store, "red"]):
        cli_error(capsys, *argv, names=[store / "manifest.json", "malformed manifest", problem])
    assert snapshot(store) == before and not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("problem, where", [("manifest", "manifest.json"), ("points", "points.json")])
def test_deeply_nested_json_is_one_line(ws, store, tmp_path, capsys, problem, where):
    if problem == "manifest":
        edit_manifest(store, lambda m: m["domains"][0]["info"].update(deep=json.loads(nested_json(50))))
        text = (store / "manifest.json").read_text().replace(nested_json(50), nested_json(100_000))
        (store / "manifest.json").write_text(text)
        cli_error(capsys, "info", store, names=[store / where, "nested 100,00"])
        return
    data = Path(shutil.copytree(ws / "cells" / "train", tmp_path / "data"))
    (data / "masks" / where).write_text('{"img000.jpg": ' + nested_json(100_000) + "}")
    cli_error(capsys, "learn", store, "--domain", "green", "--data", data, *FAST,
               names=[data / "masks" / where, "nested 100,00"])


def test_nan_weights_in_a_store_are_refused(ws, store, capsys):
    from safetensors.torch import load_file, save_file

    from samcl.store.manifest import sha256_bytes

    manifest = json.loads((store / "manifest.json").read_text())
    victim = store / manifest["domains"][0]["file"]
    tensors = load_file(victim)
    tensors["a.weight"][0, 0] = float("nan")
    save_file(tensors, victim)
    edit_manifest(store, lambda m: m["domains"][0].update(sha256=sha256_bytes(victim.read_bytes())))
    cli_error(capsys, "info", store, names=[victim, "NaN or infinite"])


@pytest.mark.parametrize("new", ["base", "../../x", "cells/x", "a b"])
def test_merge_rename_to_a_reserved_or_path_name_is_refused(ws, tmp_path, capsys, new):
    out = tmp_path / "merged"
    cli_error(capsys, "merge", out, ws / "a", ws / "b", "--rename", f"cells={new}", names=[f"cells={new}"])
    assert not out.exists() and not (tmp_path / "x").exists()


def test_lock_only_folder_is_a_new_store(ws, tmp_path, capsys):
    """A merge or learn killed at its start leaves the lock and perhaps temporaries: the next writer removes them."""
    out = tmp_path / "merged"
    (out / "modules").mkdir(parents=True)
    (out / ".lock").touch()
    (out / ".manifest.json.a1b2c3.tmp").write_text("{")
    (out / "modules" / ".0000-red.g1.safetensors.x9y8.tmp").write_bytes(b"half")
    assert main([str(a) for a in ["merge", out, ws / "a", ws / "b", "--json"]]) == 0
    capsys.readouterr()
    assert not list(out.rglob("*.tmp"))
    assert main(["info", str(out), "--json"]) == 0
    assert [d["name"] for d in json.loads(capsys.readouterr().out)["domains"]] == ["red", "blue", "cells"]


def test_store_that_lost_its_manifest_is_still_refused_and_kept(ws, store, capsys):
    (store / "manifest.json").unlink()
    (store / ".selector.g9.safetensors.k2.tmp").write_bytes(b"half")
    before = {k: v for k, v in snapshot(store).items() if not k.endswith(".tmp")}
    cli_error(capsys, "learn", store, "--domain", "green", "--data", ws / "cells", *FAST,
               names=[store, "lost its manifest"])
    assert {k: v for k, v in snapshot(store).items() if not k.endswith(".tmp")} == before
