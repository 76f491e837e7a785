"""Backbones: the only code that knows SAM internals. `load_backbone` picks the right loader for a path."""

from __future__ import annotations

from pathlib import Path

from ..io import SamclError
from .sam import SamBackbone

#: The tiny SAM pretrained by this project on its synthetic general domain, shipped in the package.
BUILTIN_TINY_SAM = "builtin:tiny-sam"
TINY_SAM_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-sam"


def resolve_base(spec: str | Path | None) -> str:
    """The string a store records for its base: an absolute path, or the builtin tiny SAM."""
    if spec is None or str(spec) == BUILTIN_TINY_SAM:
        return BUILTIN_TINY_SAM
    return str(Path(spec).expanduser().resolve())


def load_backbone(spec: str | Path | None = None) -> SamBackbone:
    """None or "builtin:tiny-sam" -> the shipped tiny SAM; a directory -> HF format; a .pth -> Meta's checkpoint."""
    if spec is None or str(spec) == BUILTIN_TINY_SAM:
        if not (TINY_SAM_DIR / "config.json").is_file():
            raise SamclError(f"{TINY_SAM_DIR}: the builtin tiny SAM is missing from this installation")
        spec = TINY_SAM_DIR
    try:
        return SamBackbone.from_pretrained(spec)
    except ValueError as exc:
        raise SamclError(str(exc)) from None


__all__ = ["SamBackbone", "load_backbone", "resolve_base", "BUILTIN_TINY_SAM"]
