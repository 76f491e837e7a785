"""The on-disk module set: a directory with a JSON manifest and safetensors files. No pickle anywhere.

    STORE/manifest.json               format version, base identity, domains in learning order
    STORE/modules/<k>-<name>.safetensors   one AugModule per domain (config in the header metadata too)
    STORE/selector.<gen>.safetensors  selector weights
    STORE/buffer.<gen>.safetensors    selector embedding buffer

Every file is written atomically (temporary file, fsync, rename) under a fresh name, and the manifest is
replaced last; files the new manifest no longer names are removed afterwards. A crash at any instant
leaves the previous consistent store or the new one. Every file's sha256 is in the manifest and checked
on open. One writer at a time (an exclusive lock on STORE/.lock).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from . import __version__
from .augmodule import AugModule, AugModuleConfig
from .io import SamclError, atomic_write_bytes, atomic_write_json
from .selector import EmbeddingBuffer, SelectorConfig, SelectorNet

FORMAT = "samcl-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BASE_CLASS = "base"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class DomainEntry:
    """One learned class: an AugModule ("module") or SAM without a module ("base")."""

    name: str
    kind: str  # "module" | "base"
    file: str | None = None
    bytes: int = 0
    sha256: str | None = None
    config: dict | None = None
    parameters: int = 0
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class StoreState:
    """Everything a store holds, in memory."""

    backbone: dict
    selector_config: SelectorConfig
    selector_block: int
    domains: list[DomainEntry] = field(default_factory=list)
    modules: dict[str, AugModule] = field(default_factory=dict)
    selector: SelectorNet | None = None
    buffer: EmbeddingBuffer | None = None
    aug_config: AugModuleConfig | None = None
    dtype: str = "float32"
    base_hint: str | None = None
    generation: int = 0

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.domains]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
        """Exclusive writer lock; a second writer gets a clear error instead of waiting."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SamclError(f"{self.path}: another samcl process is writing this store") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ reading
    def read_manifest(self) -> dict:
        if not self.manifest_path.is_file():
            raise SamclError(f"{self.path}: not a samcl store (no {MANIFEST})")
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SamclError(f"{self.manifest_path}: unreadable manifest ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise SamclError(f"{self.manifest_path}: not a samcl store manifest")
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise SamclError(f"{self.manifest_path}: store format version {version} was written by a newer samcl "
                             f"({manifest.get('samcl_version')}); this samcl {__version__} reads up to "
                             f"version {FORMAT_VERSION}. Upgrade samcl to open it.")
        return manifest

    def _read_verified(self, relative: str, sha256: str | None) -> dict[str, torch.Tensor]:
        path = self.path / relative
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SamclError(f"{path}: missing or unreadable ({exc.strerror})") from None
        if sha256 is not None and sha256_bytes(data) != sha256:
            raise SamclError(f"{path}: checksum mismatch (file changed or truncated since it was saved)")
        try:
            return load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise SamclError(f"{path}: not a valid safetensors file ({exc})") from None

    def load(self, identity: dict | None = None) -> StoreState:
        """Read and verify everything. `identity` (the base's) must match the one the store was built on."""
        manifest = self.read_manifest()
        if identity is not None:
            check_identity(self.path, manifest["backbone"], identity)
        state = StoreState(
            backbone=manifest["backbone"],
            selector_config=SelectorConfig(**manifest["selector"]["config"]),
            selector_block=int(manifest["selector"]["block"]),
            dtype=manifest.get("dtype", "float32"),
            base_hint=manifest.get("base_hint"),
            generation=int(manifest.get("generation", 0)),
            aug_config=AugModuleConfig.from_dict(manifest["augmodule"]) if manifest.get("augmodule") else None,
        )
        for raw in manifest["domains"]:
            entry = DomainEntry(**raw)
            state.domains.append(entry)
            if entry.kind == "module":
                tensors = self._read_verified(entry.file, entry.sha256)
                module = AugModule(AugModuleConfig.from_dict(entry.config))
                try:
                    module.load_state_tensors({k: v.float() for k, v in tensors.items()})
                except ValueError as exc:
                    raise SamclError(f"{self.path / entry.file}: {exc}") from None
                state.modules[entry.name] = module.requires_grad_(False)
        if manifest.get("selector", {}).get("file"):
            sel = manifest["selector"]
            tensors = self._read_verified(sel["file"], sel["sha256"])
            net = SelectorNet(int(sel["dim"]), len(state.domains))
            try:
                net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
            except RuntimeError as exc:
                raise SamclError(f"{self.path / sel['file']}: selector does not match the manifest ({exc})") from None
            state.selector = net.eval()
            buf = manifest["buffer"]
            tensors = self._read_verified(buf["file"], buf["sha256"])
            state.buffer = EmbeddingBuffer(int(sel["dim"]), tensors["embeddings"].float(), tensors["labels"].long())
        return state

    # ------------------------------------------------------------------ writing
    def save(self, state: StoreState, written: set[str] | None = None) -> dict:
        """Write new module files (names in `written`, default: modules without a file yet), the selector and
        buffer under a new generation, then the manifest; then remove files no longer named. Returns the manifest."""
        state.generation += 1
        gen = state.generation
        dtype = getattr(torch, state.dtype)
        for index, entry in enumerate(state.domains):
            if entry.kind != "module" or (entry.file is not None and (written is None or entry.name not in written)):
                continue
            module = state.modules[entry.name]
            tensors = {k: v.to(dtype).contiguous() for k, v in module.state_tensors().items()}
            data = save_safetensors(tensors, metadata={
                "format": FORMAT, "config": json.dumps(module.config.to_dict()), "domain": entry.name})
            entry.file = f"modules/{index:04d}-{_SAFE_NAME.sub('_', entry.name)}.g{gen}.safetensors"
            entry.bytes = sum(t.numel() * t.element_size() for t in tensors.values())
            entry.sha256 = sha256_bytes(data)
            entry.config = module.config.to_dict()
            entry.parameters = module.config.num_parameters
            atomic_write_bytes(self.path / entry.file, data)
        selector = {"config": state.selector_config.to_dict(), "block": state.selector_block}
        buffer = {}
        if state.selector is not None:
            sel_tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
                           for k, v in state.selector.state_dict().items()}
            sel_data = save_safetensors(sel_tensors, metadata={"format": FORMAT})
            buf_tensors = {"embeddings": state.buffer.embeddings.to(dtype).contiguous(),
                           "labels": state.buffer.labels.contiguous()}
            buf_data = save_safetensors(buf_tensors, metadata={"format": FORMAT})
            selector.update(file=f"selector.g{gen}.safetensors", sha256=sha256_bytes(sel_data),
                            bytes=len(sel_data), dim=state.buffer.dim, classes=state.names)
            buffer = {"file": f"buffer.g{gen}.safetensors", "sha256": sha256_bytes(buf_data),
                      "bytes": len(buf_data), "count": len(state.buffer)}
            atomic_write_bytes(self.path / selector["file"], sel_data)
            atomic_write_bytes(self.path / buffer["file"], buf_data)
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "samcl_version": __version__,
            "generation": gen, "backbone": state.backbone, "base_hint": state.base_hint, "dtype": state.dtype,
            "augmodule": state.aug_config.to_dict() if state.aug_config else None,
            "selector": selector, "buffer": buffer, "domains": [d.to_dict() for d in state.domains],
        }
        atomic_write_json(self.manifest_path, manifest)
        self._remove_unreferenced(manifest)
        return manifest

    def _remove_unreferenced(self, manifest: dict) -> None:
        keep = {d["file"] for d in manifest["domains"] if d.get("file")}
        keep |= {manifest["selector"].get("file"), manifest["buffer"].get("file")}
        for path in list(self.path.glob("*.safetensors")) + list(self.path.glob("modules/*.safetensors")):
            if str(path.relative_to(self.path)) not in keep:
                path.unlink(missing_ok=True)
        for tmp in list(self.path.glob(".*.tmp")) + list(self.path.glob("modules/.*.tmp")):
            tmp.unlink(missing_ok=True)


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
