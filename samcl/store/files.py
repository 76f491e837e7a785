"""The on-disk module set: a directory with a JSON manifest and safetensors files. No pickle anywhere.

    STORE/manifest.json                          format version, base identity, domains in learning order
    STORE/modules/<k>-<name>.g<gen>.safetensors  one AugModule per domain (config in the header metadata too)
    STORE/selector.g<gen>.safetensors            selector state: the MLP's weights, or a statistics selector's
                                                 per-domain statistics (its kind in the manifest; none = mlp)
    STORE/buffer.g<gen>.safetensors              the mlp selector's feature buffer
    STORE/.lock                                  the writer lock

Every file is written atomically (temporary file, fsync, rename) under a fresh name, and the manifest is
replaced last (the commit point); files the new manifest no longer names are removed afterwards. A crash at
any instant leaves the previous consistent store or the new one; readers only follow the manifest, so a
crashed writer's leftovers are never read, and the next writer removes them. Every file's sha256 is in the
manifest and checked on open. One writer at a time (an exclusive, non-blocking lock on STORE/.lock); a new
store only goes into an empty folder, since the store removes stale files of its own name patterns.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import re
from contextlib import contextmanager, suppress
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..errors import SamclError
from ..io import atomic_write_bytes, atomic_write_json, check_regular, fault_point
from ..method.augmodule import AugModule
from ..method.sizes import tensor_bytes
from ..selector import FeatureBuffer, selector_from_tensors
from .check import check_manifest, check_tensors
from .manifest import (FORMAT, MANIFEST, MissingFile, checked_file, read_checked, read_manifest, read_verified_bytes,
                       sha256_bytes, size_limit)
from .moduleset import ModuleSet
from .schema import BufferRecord, Manifest

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def tensors_to_bytes(tensors: dict[str, torch.Tensor], **metadata: str) -> bytes:
    """Named tensors as safetensors bytes, tagged with the store's format (and `metadata`)."""
    return save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                            metadata={"format": FORMAT, **metadata})


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], **metadata: str) -> tuple[str, int]:
    """Write named tensors to `path` as safetensors, atomically. Returns (sha256, bytes) of the file."""
    data = tensors_to_bytes(tensors, **metadata)
    atomic_write_bytes(path, data)
    return sha256_bytes(data), len(data)


def read_tensors(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Named tensors from a safetensors file (checked against `sha256` if given); errors name the file."""
    data = read_checked(path, sha256)
    try:
        return load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise SamclError(f"{path}: not a valid safetensors file ({exc})") from None


class ModuleStore:
    """A store directory. `load()` reads and verifies it; `save(state)` writes it crash-safely."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    @contextmanager
    def lock(self):
        """Exclusive writer lock; a second writer gets a clear error instead of waiting. A new store's folder
        must be empty (or hold only a killed writer's leftovers): the store owns every file it writes there."""
        if self.path.is_symlink() and not self.path.exists():
            raise SamclError(f"{self.path}: is a symbolic link to {os.readlink(self.path)}, which does not exist")
        created = not self.path.exists()
        if not created:
            self.check_location()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / LOCK, "a+")
        except OSError as exc:
            doing = "create the store" if created else "write to the store"
            raise SamclError(f"{exc.filename or self.path}: cannot {doing} ({exc.strerror})") from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SamclError(f"{self.path}: another samcl process is writing this store") from None
            try:
                if not self.exists():  # a writer killed before its first commit: its temporaries go now
                    self._remove_unreferenced(None)
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                if created and not self.exists():  # nothing was saved: leave no empty store folder behind
                    (self.path / LOCK).unlink(missing_ok=True)
                    with suppress(OSError):
                        self.path.rmdir()

    def check_location(self) -> None:
        """Refuse to write a new store into a folder holding anything but store files."""
        if not self.path.is_dir():
            raise SamclError(f"{self.path}: exists and is not a folder")
        if self.exists():
            return
        data = []  # committed store files without a manifest: a store was here (only temporaries may be removed)
        for path in sorted(self.path.iterdir()):
            if path.name == LOCK or _is_store_file(path.name, top=True):
                data += [path.name] if path.name != LOCK and not _TEMP.fullmatch(path.name) else []
                continue
            if path.name == MODULES and path.is_dir() and all(_is_store_file(p.name, top=False)
                                                                for p in path.iterdir()):
                data += [f"{MODULES}/{p.name}" for p in sorted(path.iterdir()) if not _TEMP.fullmatch(p.name)]
                continue
            raise SamclError(f"{self.path}: folder is not empty and is not a samcl store (it holds {path.name}); "
                             "choose a new folder for the store")
        if data:
            raise SamclError(f"{self.path}: holds samcl store files ({', '.join(data[:3])}"
                             f"{', ...' if len(data) > 3 else ''}) but no {MANIFEST}: a store that lost its manifest "
                             "(or a first learn killed before it committed). Nothing was changed; restore "
                             f"{MANIFEST} from a copy, or remove the folder to start a new store there")

    # ------------------------------------------------------------------ reading
    def check_files(self, manifest: Manifest) -> None:
        """Every file `manifest` names is a regular file within its recorded size: a quick look (no read) that a
        command makes before loading its base model, so a FIFO or a device in a store is named at once."""
        entries = [d for d in manifest.domains if d.kind == "module"]
        entries += [part for part in (manifest.selector, manifest.buffer) if part is not None and part.file]
        for entry in entries:
            path = checked_file(self.path, entry.file, entry.sha256)
            if os.path.lexists(path):  # (a missing one is reported by `load`, which may find a newer generation)
                check_regular(path, "store file")
                size, limit = os.stat(path).st_size, size_limit(entry.bytes)
                if size > limit:
                    raise SamclError(f"{path}: {size:,} bytes, more than its manifest entry allows ({limit:,})")

    def read_manifest(self, data: bytes | None = None) -> Manifest:
        """The manifest, read and its structure checked (`samcl.store.check`): what a command reads once and passes
        on (`load(manifest=...)`, `SAMCL.open(..., manifest=...)`). `data`: the manifest's bytes, read already."""
        return check_manifest(read_manifest(self.path, data), self.path)

    def _read_verified(self, relative, sha256, recorded_bytes=None) -> dict[str, torch.Tensor]:
        data = read_verified_bytes(self.path, relative, sha256, recorded_bytes)
        try:
            tensors = load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise SamclError(f"{self.path / relative}: not a valid safetensors file ({exc})") from None
        check_tensors(tensors, self.path / relative)
        return tensors

    def load(self, identity: dict | None = None, lazy_buffer: bool = False,
             manifest: Manifest | None = None) -> ModuleSet:
        """Read and verify everything. `identity` (the base's) must match the one the store was built on.
        `lazy_buffer`: read (and verify) the selector's feature buffer only when it is first used, which is
        only for learning; inference opens a store of 1,000 domains without reading its largest file.
        `manifest`: the manifest as `read_manifest` returned it (read and checked: not read or checked again).

        A writer removes the previous generation's files right after replacing the manifest; a reader that read
        the old manifest just before then finds a file gone, and simply reads the new generation instead."""
        for attempt in range(_LOAD_ATTEMPTS):
            if manifest is None or attempt:  # a manifest the caller has just read is not read again
                manifest = self.read_manifest()
            try:
                return self._load(manifest, identity, lazy_buffer)
            except MissingFile:
                try:
                    replaced = self.read_manifest().generation != manifest.generation
                except SamclError:
                    replaced = False
                if not replaced:
                    raise
        raise SamclError(f"{self.path}: the store kept changing while it was read; try again")

    def _load(self, manifest: Manifest, identity: dict | None, lazy_buffer: bool = False) -> ModuleSet:
        if identity is not None:
            check_identity(self.path, manifest.backbone.model_dump(), identity)
        selector, buffer = manifest.selector, manifest.buffer
        state = ModuleSet(backbone=manifest.backbone.model_dump(), selector_config=selector.config,
                          selector_block=selector.block, dtype=manifest.dtype, base_hint=manifest.base_hint,
                          base_source=manifest.base_source, generation=manifest.generation,
                          aug_config=manifest.augmodule, domains=copy.deepcopy(manifest.domains))
        for entry in state.domains:
            if entry.kind == "module":
                tensors = self._read_verified(entry.file, entry.sha256, entry.bytes)
                try:
                    module = AugModule.from_tensors(entry.config, {k: v.float() for k, v in tensors.items()})
                except (ValueError, TypeError, KeyError) as exc:
                    raise SamclError(f"{self.path / entry.file}: does not match its manifest entry ({exc})") from None
                state.modules[entry.name] = module.requires_grad_(False)
        if selector.file:
            tensors = self._read_verified(selector.file, selector.sha256, selector.bytes)
            config, dim = state.selector_config, selector.dim
            loaded = None
            if config.kind == "mlp":
                width = config.width(dim)
                read = lambda: self._read_buffer(buffer, width)  # noqa: E731
                loaded = (FeatureBuffer.deferred(width, buffer.count, read)
                          if lazy_buffer and buffer is not None else FeatureBuffer(width, *read()))
            try:
                state.selector = selector_from_tensors(config, dim, len(state.domains), tensors, loaded)
            except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
                raise SamclError(f"{self.path / selector.file}: selector does not match the manifest "
                                 f"({' '.join(str(exc).split())[:200]})") from None
        return state

    def _read_buffer(self, buffer: BufferRecord | None, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        if buffer is None:  # an mlp selector with no buffer entry: refused as an entry without its file
            checked_file(self.path, None, None)
        tensors = self._read_verified(buffer.file, buffer.sha256, buffer.bytes)
        try:
            features, labels = tensors["embeddings"].float(), tensors["labels"].long()  # the file's key (kept)
            FeatureBuffer(dim, features, labels)  # checks the shapes
        except (KeyError, ValueError) as exc:
            raise SamclError(f"{self.path / buffer.file}: not a selector buffer ({exc})") from None
        if len(labels) != buffer.count:
            raise SamclError(f"{self.path / buffer.file}: holds {len(labels)} feature rows, the manifest says "
                             f"{buffer.count}")
        return features, labels

    # ------------------------------------------------------------------ writing
    def save(self, state: ModuleSet, written: set[str] | None = None) -> Manifest:
        """Write new module files (names in `written`, default: modules without a file yet), the selector and
        buffer under a new generation, then the manifest; then remove files no longer named. Returns the manifest.

        Call it holding `lock()`. A crash at any point leaves the old manifest with all of its files intact;
        leftovers of a crashed write are never named by a manifest, and the next save removes them. A write
        that fails with an error (disk full...) removes its own files and leaves `state` as it was."""
        fault_point("save: start")
        self._remove_unreferenced(self.read_manifest() if self.exists() else None)
        saved = (state.generation, [dict(entry.__dict__) for entry in state.domains])
        try:
            return self._write(state, written)
        except BaseException:
            state.generation = saved[0]
            for entry, fields in zip(state.domains, saved[1]):
                entry.__dict__.update(fields)
            with suppress(Exception):
                self._remove_unreferenced(self.read_manifest() if self.exists() else None)
            raise

    def _write(self, state: ModuleSet, written: set[str] | None) -> Manifest:
        state.generation += 1
        gen = state.generation
        dtype = getattr(torch, state.dtype)
        for index, entry in enumerate(state.domains):
            if entry.kind != "module" or (entry.file is not None and (written is None or entry.name not in written)):
                continue
            module = state.modules[entry.name]
            tensors = {k: v.to(dtype) for k, v in module.state_tensors().items()}
            check_tensors(tensors, f"domain {entry.name!r}")  # (an imported NaN, or one of float16's overflows)
            entry.file = f"{MODULES}/{index:04d}-{_SAFE_NAME.sub('_', entry.name)}.g{gen}.safetensors"
            entry.bytes = tensor_bytes(tensors)
            entry.sha256, _ = write_tensors(self.path / entry.file, tensors, domain=entry.name,
                                            config=json.dumps(module.config.to_dict()))
            entry.config = module.config
            entry.parameters = module.config.num_parameters
            fault_point(f"save: wrote {entry.file}")
        selector = {"kind": state.selector_config.kind, "config": state.selector_config.to_dict(),
                    "block": state.selector_block}
        buffer = {}
        if state.selector is not None:
            # the MLP's weights in the storage dtype (as always); statistics stay exact (float32, counts float64)
            cast = dtype if state.selector_config.kind == "mlp" else None
            sel_tensors = {k: (v.to(cast) if cast is not None and v.is_floating_point() else v)
                           for k, v in state.selector.to_tensors().items()}
            check_tensors(sel_tensors, "the selector")
            selector["file"] = f"selector.g{gen}.safetensors"
            sha, size = write_tensors(self.path / selector["file"], sel_tensors)
            selector.update(sha256=sha, bytes=size, dim=state.selector.dim, classes=state.names)  # manifest key kept
            fault_point(f"save: wrote {selector['file']}")
        if state.buffer is not None:
            buf_tensors = {"embeddings": state.buffer.features.to(dtype), "labels": state.buffer.labels}
            buffer = {"file": f"buffer.g{gen}.safetensors"}
            sha, size = write_tensors(self.path / buffer["file"], buf_tensors)
            buffer.update(sha256=sha, bytes=size, count=len(state.buffer))
            fault_point(f"save: wrote {buffer['file']}")
        # validated by the one schema open reads with, so what open would refuse is never committed (a name, a
        # duplicate...), and what is written is that validated manifest's `to_dict`
        manifest = check_manifest({"generation": gen, "backbone": state.backbone, "base_hint": state.base_hint,
                                   "base_source": state.base_source, "dtype": state.dtype,
                                   "augmodule": state.aug_config.to_dict() if state.aug_config else None,
                                   "selector": selector, "buffer": buffer,
                                   "domains": [d.to_dict() for d in state.domains]}, self.path)
        atomic_write_json(self.manifest_path, manifest.to_dict())  # the commit point
        fault_point(f"save: wrote {MANIFEST}")
        self._remove_unreferenced(manifest)
        fault_point("save: done")
        return manifest

    def _remove_unreferenced(self, manifest: Manifest | None) -> None:
        """Remove store files (by their name pattern) that `manifest` does not name, and stale temporaries; with no
        manifest, only temporaries. Files that are not the store's own are never touched."""
        keep = set()
        if manifest is not None:
            keep = {d.file for d in manifest.domains}
            keep |= {part.file for part in (manifest.selector, manifest.buffer) if part is not None}
        candidates = [(p, True) for p in self.path.glob("*")] + [(p, False) for p in self.path.glob(f"{MODULES}/*")]
        for path, top in candidates:
            if manifest is None and not _TEMP.fullmatch(path.name):
                continue  # without a manifest nothing says a data file is garbage (`check_location` refused them)
            if _is_store_file(path.name, top) and path.relative_to(self.path).as_posix() not in keep \
                    and path.is_file():
                path.unlink(missing_ok=True)


LOCK = ".lock"
MODULES = "modules"
_LOAD_ATTEMPTS = 5
#: Names the store writes: generation-numbered data files, and atomic_write_bytes' temporaries of them
#: (".<name>.<random>.tmp"). Only such names are ever removed from a store folder.
_TOP_FILE = re.compile(r"(selector|buffer)\.g\d+\.safetensors")
_MODULE_FILE = re.compile(r"\d{4}-[A-Za-z0-9_.-]+\.g\d+\.safetensors")
_TEMP = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp")


def _is_store_file(name: str, top: bool) -> bool:
    """`name` is a data file or temporary the store writes (`top`: in the store folder, else in modules/)."""
    temp = _TEMP.fullmatch(name)
    target = temp.group("name") if temp else name
    if top:
        return bool(_TOP_FILE.fullmatch(target) or (temp and target == MANIFEST))
    return bool(_MODULE_FILE.fullmatch(target))


def check_identity(path: Path, recorded: dict, identity: dict) -> None:
    """A store only opens on the exact base model it was built on."""
    if recorded.get("family") != identity.get("family"):
        raise SamclError(f"{path}: store was built on a {recorded.get('family')!r} backbone, "
                         f"the given base is {identity.get('family')!r}")
    for key in ("architecture", "config_sha256", "weights_sha256"):
        if recorded.get(key) != identity.get(key):
            raise SamclError(f"{path}: store was built on a different base model ({key} "
                             f"{str(recorded.get(key))[:12]} != {str(identity.get(key))[:12]}); "
                             "pass the base it was created with")
