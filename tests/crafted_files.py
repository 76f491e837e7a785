"""Hostile files, written by the tests themselves (tests/test_adversarial_files.py and
benchmarks/adversarial_files.py run them): FIFOs, device links, torch zip files whose tensors, members or pickle
are built to exhaust memory or the stack, deeply nested JSON, and tampered store manifests."""

from __future__ import annotations

import collections
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from reference_files import fake_authors_package, module_object

TINY_BLOCKS, TINY_DIM, TINY_NECK = (4, 5), 128, 64  # the builtin tiny SAM's site


def fifo(path: Path) -> Path:
    """A named pipe with no writer: a plain open() of it blocks for ever."""
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


class StorageRef:
    """A storage of a torch zip file, for `torch_zip`: key, dtype name (torch.FloatStorage...), element count."""

    def __init__(self, key: str, numel: int):
        self.key, self.numel = key, numel


class TensorRef:
    """A tensor as torch.save writes one: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, storage: StorageRef, size, stride, offset: int = 0):
        self.storage, self.size, self.stride, self.offset = storage, tuple(size), tuple(stride), offset


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None

    def reducer_override(self, obj):
        if isinstance(obj, TensorRef):
            return torch._utils._rebuild_tensor_v2, (obj.storage, obj.offset, obj.size, obj.stride, False,
                                                     collections.OrderedDict())
        return NotImplemented


def torch_zip(path: Path, obj=None, storages: dict[str, int] | None = None, pickled: bytes | None = None,
              deflate: bool = False) -> Path:
    """A torch zip file: `pickled` (or `obj` pickled as torch.save would), and storages of zero bytes (key ->
    bytes), written deflated if asked (streamed: a 1 GiB member costs no 1 GiB here)."""
    if pickled is None:
        import io

        buffer = io.BytesIO()
        _TorchPickler(buffer, protocol=2).dump(obj)
        pickled = buffer.getvalue()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method, compresslevel=1 if deflate else None) as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", b"little")
        for key, size in (storages or {}).items():
            with archive.open(f"archive/data/{key}", "w", force_zip64=True) as member:
                chunk = bytes(min(size, 1 << 24))
                for start in range(0, size, len(chunk)):
                    member.write(chunk[: min(len(chunk), size - start)])
    return path


def stride0_pth(path: Path, side: int = 20000) -> Path:
    """A side x side tensor of stride 0 on a one-element storage (630 bytes; 1.6 GB once copied out)."""
    storage = StorageRef("0", 1)
    return torch_zip(path, {"A": TensorRef(storage, (side, side), (0, 0))}, {"0": 4})


def zip_bomb_pth(path: Path, inflated: int = 1 << 30) -> Path:
    """One storage member of `inflated` zero bytes, deflated to about 1/1000 of it, that the pickle asks for."""
    storage = StorageRef("0", inflated // 4)
    return torch_zip(path, {"A": TensorRef(storage, (inflated // 4,), (1,))}, {"0": inflated}, deflate=True)


def deep_list_pickle(depth: int) -> bytes:
    """{'lora_layer': [[[...]]]} nested `depth` deep, in protocol-2 opcodes (EMPTY_LIST x depth, APPEND x depth-1)."""
    key = b"lora_layer"
    return (b"\x80\x02}X" + len(key).to_bytes(4, "little") + key + b"]" * depth + b"a" * (depth - 1) + b"s.")


def deep_tuple_key_pickle(depth: int = 300_000) -> bytes:
    """{((...(None,)...),): None}: hashing that key recurses in C once per level (300,000 crash CPython)."""
    return b"\x80\x02}N" + b"\x85" * depth + b"Ns."


def shared_list_pth(path: Path, levels: int = 24) -> Path:
    """'lora_layer' a list whose halves are one shared list, `levels` deep: small pickled, 2^levels printed."""
    value: list = [0.5]
    for _ in range(levels):
        value = [value, value]
    return torch_zip(path, {"lora_layer": value})


def module_file(path: Path, change=None) -> Path:
    """An authors' module file for the builtin tiny SAM, `change(obj)` applied before it is saved."""
    with fake_authors_package("module.SAMCL") as package:
        obj = module_object(package.Extra, TINY_DIM, TINY_BLOCKS, neck=TINY_NECK)
        if change is not None:
            change(obj)
        torch.save(obj, path)
    return path


def nan_module(obj) -> None:
    with torch.no_grad():
        obj["A"].weight.fill_(float("nan"))


def eps_as_list(obj) -> None:
    obj["norm1_000"].eps = [1e-5]


def edit_manifest(store: Path, change) -> dict:
    """Apply `change(manifest)` to STORE/manifest.json (written back as JSON text, as an editor would)."""
    manifest = json.loads((store / "manifest.json").read_text())
    change(manifest)
    (store / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def duplicate_domain(manifest: dict) -> None:
    manifest["domains"][1]["name"] = manifest["domains"][0]["name"]


def module_path(store: Path, index: int = 0) -> Path:
    return store / json.loads((store / "manifest.json").read_text())["domains"][index]["file"]



#: `python -m samcl.cli` that, on its way out, writes its own peak RSS (VmHWM of /proc/self/status: the memory of
#: this program since its exec) to the file named by SAMCL_TEST_HWM. The rusage of the child is no measure on Linux:
#: exec starts its ru_maxrss at the forking process's high-water mark, which is pytest's after many tests.
_REPORTING_CLI = """
import atexit, os, runpy, sys
def _report():
    with open("/proc/self/status") as status, open(os.environ["SAMCL_TEST_HWM"], "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(_report)
sys.argv = ["samcl", *sys.argv[1:]]
runpy.run_module("samcl.cli", run_name="__main__", alter_sys=True)
"""


def run_cli(args, timeout: float = 10.0, env: dict | None = None) -> dict:
    """`python -m samcl.cli ARGS` as a child: exit code (None if killed at `timeout`), stderr, wall seconds and
    the child's own peak RSS in bytes (VmHWM, which the child reports as it exits; where it was killed first, its
    rusage from os.wait4, which may also count the forking process's peak)."""
    start = time.perf_counter()
    with tempfile.NamedTemporaryFile("r", suffix=".hwm") as hwm:
        proc = subprocess.Popen([sys.executable, "-c", _REPORTING_CLI, *map(str, args)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env={**os.environ, **(env or {}), "SAMCL_TEST_HWM": hwm.name})
        result = _waited(proc, start, timeout)
        reported = Path(hwm.name).read_text().strip()
    if reported:
        result["peak_rss"] = int(reported) * 1024
    return result


def _waited(proc, start: float, timeout: float) -> dict:
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - start > timeout:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            timed_out = True
            break
        time.sleep(0.01)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = proc.stderr.read().decode(errors="replace").strip().splitlines()
    proc.stderr.close()
    return {"code": None if timed_out else proc.returncode, "lines": lines, "seconds": seconds,
            "peak_rss": usage.ru_maxrss * 1024}
