"""Crash safety of the module store: a write interrupted at any point leaves the previous store or the new one,
readers never see a half write, leftovers are ignored and then cleaned, and one writer at a time.

Two levels: every fault point of a save, in process (the store folder is copied at each point: exactly what a
SIGKILL there would leave, since every write before it is fsynced); and real SIGKILLs of `samcl learn`
subprocesses (benchmarks/kill_learn.py, which runs 50 of them at random moments)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import toy_samples

import samcl.io.files
import samcl.store.files
from samcl import SAMCL, SamclError, SelectorConfig, TrainConfig
from samcl.cli import main
from samcl.store import ModuleStore

ROOT = Path(__file__).resolve().parents[1]
FAST = TrainConfig(epochs=1, batch_size=2, progress=False)


def _harness():
    spec = importlib.util.spec_from_file_location("kill_learn", ROOT / "benchmarks" / "kill_learn.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kill_learn"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


kill_learn = _harness()



@pytest.fixture
def small_store(tmp_path, tiny_backbone):
    """A store with one learned domain (red)."""
    path = tmp_path / "store"
    samcl = SAMCL.create(tiny_backbone, path, selector=SelectorConfig(kind="mlp", samples_per_domain=6, epochs=2))
    samcl.learn("red", toy_samples(6, (200, 30, 30), 0), FAST)
    return path


@pytest.fixture
def verifier(tiny_backbone, tmp_path):
    probe = tmp_path / "probe.png"
    from PIL import Image

    Image.fromarray(toy_samples(1, (30, 30, 200), 5)[0].image).save(probe)
    return kill_learn.Verifier(tiny_backbone, probe)


def test_every_crash_point_of_a_save_leaves_previous_or_new_store(small_store, tiny_backbone, verifier, tmp_path,
                                                                 monkeypatch):
    before = kill_learn.Snapshot.of(small_store)
    crashes: list[tuple[str, Path]] = []

    def crash_here(step: str) -> None:  # what a SIGKILL at this step leaves on disk
        target = tmp_path / "crashes" / f"{len(crashes):02d}"
        shutil.copytree(small_store, target)
        crashes.append((step, target))

    monkeypatch.setattr(samcl.io.files, "fault_point", crash_here)
    monkeypatch.setattr(samcl.store.files, "fault_point", crash_here)
    SAMCL.open(small_store, base=tiny_backbone).learn("blue", toy_samples(6, (30, 30, 200), 1), FAST)
    monkeypatch.undo()

    steps = [step for step, _ in crashes]
    assert steps[0] == "save: start" and steps[-1] == "save: done"
    assert any("temporary file for manifest.json" in s for s in steps) and "save: wrote manifest.json" in steps
    outcomes = {}
    for step, path in crashes:
        outcomes[step], leftovers = verifier.check(path, before, "blue")
        if step.startswith("temporary file for") or step.startswith("save: wrote"):
            assert leftovers > 0  # a half-done write is on disk, and the reader ignored it
    committed = steps.index("save: wrote manifest.json")
    assert all(outcomes[s] == "previous" for s in steps[:committed])
    assert all(outcomes[s] == "new" for s in steps[committed:])

    # the next writer removes what the crashed one left
    path = crashes[committed - 1][1]  # new generation written and the manifest in its temporary file
    assert kill_learn.unreferenced(path, json.loads((path / "manifest.json").read_text()))
    SAMCL.open(path, base=tiny_backbone).learn("green", toy_samples(6, (30, 170, 60), 2), FAST)
    assert kill_learn.unreferenced(path, json.loads((path / "manifest.json").read_text())) == []
    assert SAMCL.open(path, base=tiny_backbone).domains == ["red", "green"]


def test_sigkilled_learn_leaves_previous_or_new_store(tmp_path):
    """Real SIGKILLs of `samcl learn` subprocesses while training, between two file writes, and right after the
    manifest's rename (before the old files go); then the next learn cleans up. (Every other fault point is
    covered in process above; the benchmark kills 50 times at random moments.)"""
    ws = kill_learn.prepare(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["learn", str(ws.store), "--base", str(ws.base), "--domain", "red", "--data",
                     str(ws.data["red"]), *kill_learn.LEARN_ARGS, *kill_learn.NEW_STORE_ARGS, "--json"]) == 0
    from samcl import load_backbone

    verifier = kill_learn.Verifier(load_backbone(ws.base), ws.probe_image)
    plan = [(kill_learn.TRAIN_MARKER, "previous"),
            ("samcl-fault: save: wrote modules/", "previous"),
            ("samcl-fault: save: wrote manifest.json", "new")]
    for k, (marker, expected) in enumerate(plan):
        outcome = kill_learn.kill_at_marker(ws, verifier, f"d{k}", ws.data["blue"], 0.5, marker)
        assert outcome.killed, f"{marker} never came"
        assert outcome.state == expected, (marker, outcome)
    assert kill_learn.unreferenced(ws.store, json.loads((ws.store / "manifest.json").read_text()))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["learn", str(ws.store), "--domain", "final", "--data", str(ws.data["green"]),
                     *kill_learn.LEARN_ARGS, "--json"]) == 0
    manifest = json.loads((ws.store / "manifest.json").read_text())
    assert [d["name"] for d in manifest["domains"]] == ["red", "d2", "final"]
    assert kill_learn.unreferenced(ws.store, manifest) == []


def test_reader_follows_a_commit_that_removed_the_files_it_was_about_to_read(small_store, tiny_backbone,
                                                                            tmp_path, monkeypatch):
    """A reader reads manifest N; a writer commits N+1 and removes N's files; the reader then reads N+1."""
    newer = Path(shutil.copytree(small_store, tmp_path / "newer"))
    SAMCL.open(newer, base=tiny_backbone).learn("blue", toy_samples(6, (30, 30, 200), 1), FAST)
    real_read = ModuleStore._read_verified
    commits = []

    def read_after_a_commit(self, relative, sha256, *size):
        if not commits:  # the writer commits between the reader's manifest read and its first file read
            commits.append(relative)
            for source in sorted(newer.rglob("*")):
                if source.is_file() and source.name != "manifest.json":
                    (small_store / source.relative_to(newer)).parent.mkdir(exist_ok=True)
                    shutil.copy(source, small_store / source.relative_to(newer))
            samcl.io.atomic_write_bytes(small_store / "manifest.json", (newer / "manifest.json").read_bytes())
            ModuleStore(small_store)._remove_unreferenced(ModuleStore(newer).read_manifest())
        return real_read(self, relative, sha256, *size)

    old_selector = json.loads((small_store / "manifest.json").read_text())["selector"]["file"]
    monkeypatch.setattr(ModuleStore, "_read_verified", read_after_a_commit)
    state = ModuleStore(small_store).load(identity=tiny_backbone.identity())
    assert commits and not (small_store / old_selector).exists()
    assert state.names == ["red", "blue"] and set(state.modules) == {"red", "blue"}


def test_leftovers_are_ignored_by_readers_and_removed_by_the_next_writer(small_store, tiny_backbone):
    planted = [".manifest.json.k2j4h5g6.tmp", ".selector.g9.safetensors.a1b2c3d4.tmp", "selector.g9.safetensors",
               "buffer.g9.safetensors", "modules/0005-ghost.g9.safetensors",
               "modules/.0005-ghost.g9.safetensors.zz99yy88.tmp"]
    for name in planted:
        (small_store / name).write_bytes(b"{half a write")
    (small_store / "notes.txt").write_text("the user's own file")
    state = ModuleStore(small_store).load(identity=tiny_backbone.identity())
    assert state.names == ["red"]
    SAMCL.open(small_store, base=tiny_backbone).learn("blue", toy_samples(6, (30, 30, 200), 1), FAST)
    assert not any((small_store / name).exists() for name in planted)
    assert (small_store / "notes.txt").read_text() == "the user's own file"
    manifest = json.loads((small_store / "manifest.json").read_text())
    assert kill_learn.unreferenced(small_store, manifest) == ["notes.txt"]


def test_a_second_writer_is_refused_while_the_lock_is_held(small_store):
    with ModuleStore(small_store).lock():
        with pytest.raises(SamclError, match="another samcl process is writing"):
            with ModuleStore(small_store).lock():
                pass
    with ModuleStore(small_store).lock():  # released: the next writer gets it
        pass


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_learn_is_refused_while_another_process_writes(small_store, tiny_backbone):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)",
         str(small_store / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(small_store)
        with pytest.raises(SamclError, match="another samcl process is writing this store"):
            SAMCL.open(small_store, base=tiny_backbone).learn("blue", toy_samples(4, (30, 30, 200), 1), FAST)
        assert snapshot(small_store) == before
    finally:
        holder.kill()
        holder.wait()
