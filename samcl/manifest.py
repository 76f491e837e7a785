"""A store's manifest, without any model code: reading it (a regular file, size- and depth-bounded) and reading
the files it names, bounded by their recorded size and checked against their sha256. `samcl.store_check` checks
its structure; `samcl.store` builds on both to read and write the tensors."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ._version import __version__
from .io import NoSuchFile, SamclError, read_json_file, read_limited

FORMAT = "samcl-store"
FORMAT_VERSION = 1
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


def read_manifest(store: Path) -> dict:
    """STORE/manifest.json, checked to be a samcl manifest of a format this samcl reads."""
    path = Path(store) / MANIFEST
    if not path.exists():
        if Path(store).is_file():
            raise SamclError(f"{store}: is a file, not a samcl store folder")
        raise SamclError(f"{store}: not a samcl store (no {MANIFEST})")
    manifest = read_json_file(path, MANIFEST_LIMIT, "store manifest", "unreadable manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SamclError(f"{path}: not a samcl store manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SamclError(f"{path}: store format version {version} was written by a newer samcl "
                         f"({manifest.get('samcl_version')}); this samcl {__version__} reads up to "
                         f"version {FORMAT_VERSION}. Upgrade samcl to open it.")
    return manifest


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
