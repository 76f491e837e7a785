"""Checks the commands make before any model code loads (device, --amp, the store's path and manifest, an
output folder) and the dataset a command reads, each failing as one line naming the input."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from .. import SamclError


def check_device(name: str | None) -> None:
    """--device names a device this PyTorch has, or one line says why not (before any model is loaded)."""
    if name is None:
        return
    import torch

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            why = "this PyTorch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise SamclError(f"--device {name}: {why}; use --device cpu")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise SamclError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s), cuda:0 and up")
    if name == "mps" and not torch.backends.mps.is_available():
        raise SamclError("--device mps: Apple's MPS is not available here; use --device cpu")


def check_amp(amp: str, device) -> None:
    """--amp bf16 on a CPU without native bfloat16 is refused: emulated, a training step took 34x float32's CPU
    time at ViT-B size for the same losses (benchmarks/amp_cpu.py), so float32 is the right choice there."""
    if amp != "bf16":
        return
    import torch

    from ..inference import precision

    on_cpu = (str(device) == "cpu") if device is not None else not torch.cuda.is_available()
    if on_cpu and not precision.native_bf16():
        raise SamclError("--amp bf16: this CPU has no native bfloat16 (no avx512_bf16/amx_bf16 flag), where a "
                         "bf16 training step takes about 34x the float32 time; use --amp none")


def note(message: str) -> None:
    from .errors import in_flags

    print(f"samcl: {in_flags(message, None)}", file=sys.stderr)


def dataset(path: Path, split: str, seed: int, frame: str, points: int = 3, skip_unlabeled: bool = False,
            group_by: str | None = None):
    from .. import FolderDataset
    from ..data import resolve_split

    data = FolderDataset(resolve_split(path, split), seed=seed, points_per_image=points, points_frame=frame,
                         skip_unlabeled=True, group_by=group_by)  # counted here, so the error can name the flag
    if data.unlabeled and not skip_unlabeled:
        more = f" (and {len(data.unlabeled) - 1} more)" if len(data.unlabeled) > 1 else ""
        hint = "; --skip-unlabeled learns from the others" if split == "train" else ""
        raise SamclError(f"{data.unlabeled[0]}: no mask with the same name in {data.root / 'masks'}{more}{hint}")
    if data.unlabeled:
        print(f"samcl: warning: {data.root / 'images'}: left out {len(data.unlabeled)} of "
              f"{len(data) + len(data.unlabeled)} images that have no mask (first: {data.unlabeled[0].name})",
              file=sys.stderr)
    if data.points_note:
        note(data.points_note)
    return data


def check_store_path(store: Path) -> None:
    if store.is_symlink() and not store.exists():
        raise SamclError(f"{store}: a symlink to {os.readlink(store)}, which does not exist; create the folder it "
                         "points to, or remove the link")


def precheck_store(store: Path):
    """A store's manifest and the files it names, looked at before the base model (and transformers) loads: a bad
    manifest or a FIFO in the store is named in a second, not after the model is built. Returns the manifest, read
    and checked (a `samcl.store.Manifest`), for the command to pass on (`SAMCL.open(..., manifest=)`), or None
    where no store is yet."""
    from ..store import ModuleStore

    module_store = ModuleStore(store)
    if not module_store.exists():
        return None
    manifest = module_store.read_manifest()
    module_store.check_files(manifest)
    return manifest


def writable_folder(folder: Path) -> None:
    """Create `folder` and write a file in it now, so a long run cannot fail at its end for want of a place."""
    if folder.exists() and not folder.is_dir():
        raise SamclError(f"{folder}: is a file; --out names a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise SamclError(f"{folder}: cannot write there ({exc.strerror or exc})") from None
