"""A store's manifest, without any model code: reading and checking it, and verifying the files it names by
their sha256 (what `samcl info` does, in a fraction of a second, since it needs neither torch nor safetensors).
`samcl.store` builds on it to read and write the tensors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ._version import __version__
from .io import SamclError

FORMAT = "samcl-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class MissingFile(SamclError):
    """A file the manifest names is gone (a concurrent writer may have just replaced that generation)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(store: Path) -> dict:
    """STORE/manifest.json, checked to be a samcl manifest of a format this samcl reads."""
    path = Path(store) / MANIFEST
    if not path.is_file():
        if Path(store).is_file():
            raise SamclError(f"{store}: is a file, not a samcl store folder")
        raise SamclError(f"{store}: not a samcl store (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SamclError(f"{path}: unreadable manifest ({exc})") from None
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


def read_checked(path: Path, sha256: str | None, missing: str = "missing") -> bytes:
    """A file's bytes, checked against `sha256` when given; every problem is one SamclError naming the file."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise MissingFile(f"{path}: {missing}") from None
    except OSError as exc:
        raise SamclError(f"{path}: unreadable ({exc.strerror})") from None
    if sha256 is not None and sha256_bytes(data) != sha256:
        raise SamclError(f"{path}: checksum mismatch (file changed or truncated since it was saved)")
    return data


def read_verified_bytes(store: Path, relative, sha256) -> bytes:
    """A file the manifest names, its bytes checked against the manifest's sha256."""
    return read_checked(checked_file(store, relative, sha256), sha256,
                        missing=f"missing (named in {MANIFEST} but not in the store)")


def named_files(manifest: dict) -> list[tuple[str, str]]:
    """(file, sha256) of every file the manifest names: modules, selector, buffer."""
    try:
        files = [(d.get("file"), d.get("sha256")) for d in manifest["domains"] if d.get("kind") == "module"]
        files += [((manifest.get(k) or {}).get("file"), (manifest.get(k) or {}).get("sha256"))
                  for k in ("selector", "buffer") if (manifest.get(k) or {}).get("file")]
    except (KeyError, TypeError, AttributeError) as exc:
        raise SamclError(f"malformed manifest ({type(exc).__name__}: {exc})") from None
    return files


def verify(store: Path, manifest: dict) -> None:
    """Every file the manifest names is there with its recorded sha256 and is a valid safetensors file
    (SamclError naming the first that is not). Read with numpy: no torch needed."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    for relative, sha256 in named_files(manifest):
        data = read_verified_bytes(store, relative, sha256)
        try:
            load(data)
        except (SafetensorError, ValueError, TypeError) as exc:
            raise SamclError(f"{Path(store) / relative}: not a valid safetensors file ({exc})") from None
