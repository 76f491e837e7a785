"""The graph cache is checked like a store: each graph's sha256 is recorded in graphs.json when it is built and
checked before it is used (a truncated, emptied, altered or swapped graph is rebuilt, never run), FIFOs and
devices are refused before any read, a cache that others can write to is refused in one line, a missing
graphs.json is rebuilt in place and killed builds' leftovers are removed."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from helpers import toy_samples

from samcl import SAMCL, SamclError, TrainConfig, load_backbone
from samcl.io import atomic_write_png
from samcl.method.augmodule import config_for
from samcl.runtime import export as export_module
from samcl.runtime.export import cached_graphs

pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parent.parent


def tiny_config(backbone):
    return config_for(backbone.site, rank=4, adapted_blocks=(2, 3))


@pytest.fixture(scope="module")
def template(tiny_backbone, tmp_path_factory):
    """A cache holding one good entry, built once for the module's tests."""
    root = tmp_path_factory.mktemp("template") / "cache"
    cached_graphs(tiny_backbone, tiny_config(tiny_backbone), 1, root=root)
    return root


@pytest.fixture
def build(tiny_backbone, template, tmp_path, monkeypatch):
    """cached_graphs on the tiny backbone in a private cache holding a copy of the template's good entry;
    returns (call, builds counted)."""
    config = tiny_config(tiny_backbone)
    builds = []
    original = export_module.export_graphs
    monkeypatch.setattr(export_module, "export_graphs", lambda *a: builds.append(1) or original(*a))
    root = Path(shutil.copytree(template, tmp_path / "cache"))

    def call():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            folder = cached_graphs(tiny_backbone, config, 1, root=root)
        return folder, [str(w.message) for w in caught]
    return call, builds


def test_graph_digests_are_recorded_when_built_and_a_good_entry_is_reused(build, tmp_path):
    call, builds = build
    shutil.rmtree(tmp_path / "cache")  # an empty cache: this call builds
    folder, _ = call()
    recorded = json.loads((folder / "graphs.json").read_text())["sha256"]
    assert set(recorded) == {"prefix.onnx", "suffix.onnx", "decoder.onnx", "decoder_low.onnx"}
    assert call() == (folder, []) and len(builds) == 1


@pytest.mark.parametrize("damage", ["truncated", "empty", "altered", "dev_zero", "fifo", "graphs_json_deleted",
                                    "graphs_json_garbage"])
def test_a_damaged_graph_entry_is_rebuilt_before_any_graph_runs(build, damage):
    call, builds = build
    folder, _ = call()
    graph = folder / "decoder_low.onnx"
    if damage == "truncated":
        graph.write_bytes(graph.read_bytes()[:1000])
    elif damage == "empty":
        graph.write_bytes(b"")
    elif damage == "altered":  # a valid graph, another one's
        graph.write_bytes((folder / "decoder.onnx").read_bytes())
    elif damage == "dev_zero":
        graph.unlink()
        graph.symlink_to("/dev/zero")
    elif damage == "fifo":
        graph.unlink()
        os.mkfifo(graph)
    elif damage == "graphs_json_deleted":
        (folder / "graphs.json").unlink()
    else:
        (folder / "graphs.json").write_text("[" * 100)
    started = time.monotonic()
    again, said = call()
    assert again == folder and len(builds) == 1 and time.monotonic() - started < 60  # a rebuild, no hang
    assert len(said) == 1 and said[0].startswith(f"graph cache {folder}: ") and said[0].endswith("; rebuilding it")
    assert graph.is_file() and not graph.is_symlink()
    assert call() == (folder, []) and len(builds) == 1  # the rebuilt entry checks out
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # nothing left beside it


def test_a_killed_builds_leftover_folder_is_removed(build, tmp_path):
    call, _ = build
    folder, _ = call()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = folder.parent / f".build-{dead.stdout.strip()}-abc123"
    (leftover / "x").mkdir(parents=True)
    alive = folder.parent / f".build-{os.getpid()}-def456"  # a build in progress (this process) stays
    alive.mkdir()
    assert call() == (folder, [])  # the next run, even one that builds nothing, cleans up
    alive.rmdir()
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


@pytest.mark.parametrize("which", ["root", "graphs"])
def test_a_cache_others_can_write_to_is_refused_naming_why(build, tmp_path, which):
    call, builds = build
    folder, _ = call()
    target = folder.parent if which == "graphs" else folder.parent.parent
    target.chmod(0o777)
    with pytest.raises(SamclError, match=rf"^graph cache {target}: writable by others \(mode 0777\), so its "
                                         r"graphs cannot be trusted; make it private"):
        call()
    assert builds == []


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache-store")
    samcl = SAMCL.create(load_backbone("builtin:tiny-sam"), root / "set", device="cpu")
    samcl.learn("red", toy_samples(4, (200, 30, 30), 0), TrainConfig(epochs=1, batch_size=2, progress=False))
    atomic_write_png(root / "a.png", toy_samples(1, (200, 30, 30), 5)[0].image)
    return root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli(args, cache: Path, timeout: float = 60):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SAMCL_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "samcl.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_segment_on_a_fifo_graph_rebuilds_instead_of_hanging(small_store, tmp_path):
    cache = tmp_path / "cache"
    segment = ["segment", str(small_store / "set"), str(small_store / "a.png"), "--point", "30,30",
               "--out", str(tmp_path / "out.png"), "--runtime", "onnxruntime"]
    assert cli(segment, cache).returncode == 0
    (entry,) = (cache / "graphs").iterdir()
    (entry / "prefix.onnx").unlink()
    os.mkfifo(entry / "prefix.onnx")
    done = cli(segment, cache, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "samcl: warning: graph cache" in done.stderr and "is a fifo" in done.stderr


@pytest.mark.parametrize("command", ["segment", "serve"])
def test_a_world_writable_cache_ends_in_one_line_and_exit_2(small_store, tmp_path, command):
    cache = tmp_path / "cache"
    (cache / "graphs").mkdir(parents=True)
    (cache / "graphs").chmod(0o777)
    args = (["segment", str(small_store / "set"), str(small_store / "a.png"), "--point", "30,30", "--out",
             str(tmp_path / "out.png")] if command == "segment" else
            ["serve", str(small_store / "set"), "--port", str(free_port())])
    started = time.monotonic()
    done = cli([*args, "--runtime", "onnxruntime"], cache, timeout=30)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"samcl: error: graph cache {cache / 'graphs'}: writable by others (mode 0777)")
    assert time.monotonic() - started < 30 and not (tmp_path / "out.png").exists()
