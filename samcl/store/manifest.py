"""A store's manifest file: reading it (a regular file, size- and depth-bounded, its format version checked and
upgraded, `upgrade`) and reading the files it names, bounded by their recorded size and checked against their
sha256. Its one schema is `samcl.store.schema.Manifest` (`samcl.store.Manifest`), which `samcl.store.check`
validates it with; `samcl.store.files` builds on both to read and write the tensors."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

from .._version import __version__
from ..errors import SamclError
from ..io import NoSuchFile, parse_json, quote, read_limited

FORMAT = "samcl-store"
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
#: The most a manifest may hold: one of 10,000 domains is about 10 MiB.
MANIFEST_LIMIT = 64 << 20
#: What a file the manifest names may hold beyond its recorded tensor bytes (the safetensors header), and the
#: bound for a file whose size is not recorded.
HEADER_ALLOWANCE = 1 << 20
UNRECORDED_LIMIT = 4 << 30


class MissingFile(SamclError):
    """A file the manifest names is gone (a concurrent writer may have just replaced that generation)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_bytes(store: Path) -> bytes:
    """STORE/manifest.json's bytes, read as a regular file of at most `MANIFEST_LIMIT` bytes: what
    `read_manifest` parses, and what the server hashes to tell generations apart."""
    return read_limited(Path(store) / MANIFEST, MANIFEST_LIMIT, "store manifest")


def read_manifest(store: Path, data: bytes | None = None) -> dict:
    """STORE/manifest.json as JSON, checked to be a samcl manifest of a format this samcl reads and upgraded to the
    current version (`ModuleStore.read_manifest` then validates it as a `Manifest`). `data`: its bytes as a caller
    read them already (`manifest_bytes`; the server hashes the very bytes it opens), None: read here."""
    path = Path(store) / MANIFEST
    if data is None and not path.exists():
        if Path(store).is_file():
            raise SamclError(f"{store}: is a file, not a samcl store folder")
        raise SamclError(f"{store}: not a samcl store (no {MANIFEST})")
    manifest = parse_json(manifest_bytes(store) if data is None else data, path, "unreadable manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SamclError(f"{path}: not a samcl store manifest")
    version = manifest.get("format_version")
    if isinstance(version, bool) or (not isinstance(version, int) and version is not None):  # (a bool is an int)
        raise SamclError(f"{path}: malformed manifest (format_version {quote(version)} is not a version number)")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SamclError(f"{path}: store format version {version} was written by a newer samcl "
                         f"({manifest.get('samcl_version')}); this samcl {__version__} reads up to "
                         f"version {FORMAT_VERSION}. Upgrade samcl to open it.")
    if version < 1:
        raise SamclError(f"{path}: store format version {version}: not a version samcl wrote")
    return upgrade(manifest)


def _version_1_to_2(raw: dict) -> dict:
    """Version 1 left keys out to mean the behaviour from before they existed; version 2 writes every one. A
    selector without a kind is the paper's MLP, a selector config without `features` reads the grid mean and one
    without `tolerance` keeps the plain fitted quantile; a module config without `heat_mode` is samcl's own."""
    selector = raw.get("selector")
    if isinstance(selector, dict) and isinstance(selector.get("config"), dict):
        config = selector["config"]
        kind = selector.get("kind", config.get("kind", "mlp"))
        selector["config"] = {"kind": kind, "features": "mean", "tolerance": 0.0, **config}
        selector.setdefault("kind", kind)
    domains = raw.get("domains") if isinstance(raw.get("domains"), list) else []
    for config in [raw.get("augmodule")] + [d.get("config") for d in domains if isinstance(d, dict)]:
        if isinstance(config, dict):
            config.setdefault("heat_mode", "samcl")
    return raw


def _version_2_to_3(raw: dict) -> dict:
    """Version 3 calls a domain learned without a module kind "no_module"; versions 1 and 2 wrote "base"."""
    for entry in raw.get("domains") if isinstance(raw.get("domains"), list) else []:
        if isinstance(entry, dict) and entry.get("kind") == "base":
            entry["kind"] = "no_module"
    return raw


#: format version -> the step that turns a manifest of that version into one of the next (one chain)
UPGRADES = {1: _version_1_to_2, 2: _version_2_to_3}


def upgrade(manifest: dict) -> dict:
    """A manifest of any version this samcl reads, as the current version (a new dict; the file is unchanged
    until the next save writes the current version)."""
    raw = copy.deepcopy(manifest)
    version = raw.get("format_version")
    while isinstance(version, int) and version < FORMAT_VERSION:
        raw = UPGRADES[version](raw)
        version += 1
        raw["format_version"] = version
    return raw


def checked_file(store: Path, relative, sha256) -> Path:
    """The path of a file the manifest names, refusing entries without a hash or pointing outside the store."""
    if not isinstance(relative, str) or not isinstance(sha256, str):
        raise SamclError(f"{Path(store) / MANIFEST}: malformed manifest (a file entry lacks its name or sha256)")
    if Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise SamclError(f"{Path(store) / MANIFEST}: malformed manifest (file {relative!r} is outside the store)")
    return Path(store) / relative


def size_limit(recorded) -> int:
    """The most bytes a file the manifest names may hold: its recorded bytes and a header (when recorded)."""
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 0:
        return recorded + HEADER_ALLOWANCE
    return UNRECORDED_LIMIT


def read_checked(path: Path, sha256: str | None, missing: str = "missing", limit: int = UNRECORDED_LIMIT) -> bytes:
    """A regular file's bytes (at most `limit`), checked against `sha256` when given; every problem is one
    SamclError naming the file."""
    try:
        data = read_limited(path, limit, "store file")
    except NoSuchFile:
        raise MissingFile(f"{path}: {missing}") from None
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise SamclError(f"{path}: checksum mismatch (file changed or truncated since it was saved)")
    return data


def read_verified_bytes(store: Path, relative, sha256, recorded_bytes=None) -> bytes:
    """A file the manifest names, its bytes checked against the manifest's sha256 (and bounded by its recorded
    size, `size_limit`)."""
    return read_checked(checked_file(store, relative, sha256), sha256,
                        missing=f"missing (named in {MANIFEST} but not in the store)", limit=size_limit(recorded_bytes))

