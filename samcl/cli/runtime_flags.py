"""Flags of the runtimes and of `samcl export` (`samcl.runtime`), kept apart from the parser's other commands."""

from __future__ import annotations

from pathlib import Path

from ..assets import BUILTIN_TINY_SAM as BUILTIN

EXPORT_EXAMPLES = """\
examples:
  samcl export my-set my-set-onnx        # prefix/suffix/decoder.onnx, modules + selector safetensors, JSON
  samcl segment my-set photo.jpg --point 320,240 --out mask.png --runtime onnxruntime
The graphs take the module's rows as inputs (one suffix graph for every domain; base = zero rows); the decoder
has Meta's ONNX interface (segment_anything.utils.onnx.SamOnnxModel). SAM (ViT) bases only."""


def add_runtime(p) -> None:
    """--runtime for every inference command: what runs the encoder and decoder (`samcl.runtime`)."""
    from .. import runtime

    p.add_argument("--runtime", choices=runtime.CHOICES, default="auto",
                   help="what runs the image encoder and mask decoder: torch, or the store's ONNX graphs (exported "
                        "once per base and cached in $SAMCL_CACHE_DIR, else $XDG_CACHE_HOME/samcl) on onnxruntime "
                        f"(pip install 'samcl[onnx]') or openvino ('samcl[openvino]'); {runtime.describe_auto()}")


def add_export(p) -> None:
    p.add_argument("store", type=Path, help="module-set directory")
    p.add_argument("out", type=Path, help="new folder for the export (must not exist, or be empty)")
    p.add_argument("--base", help=f"base SAM: an HF directory, Meta's SAM .pth, or {BUILTIN} (default: the one "
                                  "recorded in the store)")
    p.add_argument("--json", action="store_true", help="print the export's description (samcl_export.json) as JSON")
