"""Backbones: the only code that knows SAM internals. `load_backbone` picks the right loader for a path."""

from __future__ import annotations

import json
from pathlib import Path

from ..io import SamclError
from .sam import SamBackbone
from .sam2 import Sam2Backbone

#: The tiny SAM pretrained by this project on its synthetic general domain, shipped in the package.
BUILTIN_TINY_SAM = "builtin:tiny-sam"
TINY_SAM_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-sam"


def resolve_base(spec: str | Path | None) -> str:
    """The string a store records for its base: an absolute path, or the builtin tiny SAM."""
    if spec is None or str(spec) == BUILTIN_TINY_SAM:
        return BUILTIN_TINY_SAM
    return str(Path(spec).expanduser().resolve())


def load_backbone(spec: str | Path | None = None) -> SamBackbone | Sam2Backbone:
    """None or "builtin:tiny-sam" -> the shipped tiny SAM; a directory -> HF format, SAM or SAM 2 by its
    config's model_type; a file -> Meta's SAM (.pth) or SAM 2 / 2.1 (.pt) checkpoint, told apart by its keys."""
    if spec is None or str(spec) == BUILTIN_TINY_SAM:
        if not (TINY_SAM_DIR / "config.json").is_file():
            raise SamclError(f"{TINY_SAM_DIR}: the builtin tiny SAM is missing from this installation")
        spec = TINY_SAM_DIR
    path = Path(spec)
    try:
        if path.is_dir():
            return _backbone_class(path).from_pretrained(path)
        if path.is_file():
            return _from_checkpoint(path)
        return SamBackbone.from_pretrained(path)  # names the missing path
    except ValueError as exc:
        raise SamclError(str(exc)) from None


def _backbone_class(directory: Path) -> type:
    """SamBackbone or Sam2Backbone by config.json's model_type (SamBackbone reports a missing or bad config)."""
    try:
        model_type = json.loads((directory / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return SamBackbone
    return Sam2Backbone if model_type == "sam2" else SamBackbone


def _from_checkpoint(path: Path) -> SamBackbone | Sam2Backbone:
    """One read of a Meta checkpoint (torch.load(weights_only=True)), then SAM's or SAM 2's key mapping."""
    from transformers import SamModel

    from .meta import _read_state_dict, convert_meta_state_dict
    from .sam2_meta import is_sam2_state_dict, sam2_model_from_state_dict

    state_dict = _read_state_dict(path)
    if is_sam2_state_dict(state_dict):
        return Sam2Backbone(sam2_model_from_state_dict(state_dict, str(path)))
    try:
        config, converted = convert_meta_state_dict(state_dict)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    model = SamModel(config)
    model.load_state_dict(converted, strict=True)
    return SamBackbone(model.eval())


__all__ = ["SamBackbone", "Sam2Backbone", "load_backbone", "resolve_base", "BUILTIN_TINY_SAM"]
