"""What ships inside the package: the tiny SAM pretrained by this project on its synthetic general domain.

Its name lives here, in a module that imports nothing, so the command line's help can show it without loading
the model code; `samcl.backbone` (which loads it) re-exports both names."""

from pathlib import Path

#: The builtin base's name wherever a base is given (`--base`, `SAMCL.create`, a store's base hint).
BUILTIN_TINY_SAM = "builtin:tiny-sam"
#: Where its HF-format files are.
TINY_SAM_DIR = Path(__file__).resolve().parent / "tiny-sam"

__all__ = ["BUILTIN_TINY_SAM", "TINY_SAM_DIR"]
