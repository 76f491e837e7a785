"""What ships inside the package: the tiny SAM and the tiny SAM 2 (with its video memory) pretrained by this
project on its synthetic general domain.

Their names live here, in a module that imports nothing, so the command line's help can show them without loading
the model code; `samcl.backbone` (which loads them) re-exports them."""

from pathlib import Path

#: The builtin base's name wherever a base is given (`--base`, `SAMCL.create`, a store's base hint).
BUILTIN_TINY_SAM = "builtin:tiny-sam"
#: Where its HF-format files are.
TINY_SAM_DIR = Path(__file__).resolve().parent / "tiny-sam"
#: The builtin SAM 2 (an HF `sam2_video` folder: images, and videos with `load_backbone(..., video=True)`).
BUILTIN_TINY_SAM2 = "builtin:tiny-sam2"
TINY_SAM2_DIR = Path(__file__).resolve().parent / "tiny-sam2"
#: Every builtin base's name -> its folder.
BUILTINS = {BUILTIN_TINY_SAM: TINY_SAM_DIR, BUILTIN_TINY_SAM2: TINY_SAM2_DIR}

__all__ = ["BUILTINS", "BUILTIN_TINY_SAM", "BUILTIN_TINY_SAM2", "TINY_SAM_DIR", "TINY_SAM2_DIR"]
