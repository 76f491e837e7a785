"""`samcl segment --overlay FILE`: the mask and the prompt drawn over the image, to see a result at a glance.

    picture = draw_overlay(image, mask, prompt)     # H x W x 3 uint8; written like a mask (`output.write`)

The mask is tinted and outlined in SAM's demo blue; positive points are green dots, negative ones red, each with
a white rim; a box is a green rectangle.
"""

from __future__ import annotations

import numpy as np

from .. import Prompt, SamclError
from . import output

MASK_COLOUR = (30, 144, 255)
POSITIVE, NEGATIVE, RIM = (0, 200, 80), (230, 40, 40), (255, 255, 255)
ALPHA = 0.5


def draw_overlay(image: np.ndarray, mask: np.ndarray, prompt: Prompt) -> np.ndarray:
    """`image` (H x W x 3 uint8 RGB) with `mask` (H x W bool) tinted and outlined and `prompt` drawn on top.

    Returns:
      (np.ndarray): H x W x 3 uint8 RGB, the image's size.
    """
    from PIL import Image, ImageDraw

    mask = np.asarray(mask, bool)
    out = image.astype(np.float32)
    out[mask] = (1 - ALPHA) * out[mask] + ALPHA * np.float32(MASK_COLOUR)
    inner = np.pad(mask, 1)  # a mask pixel with a 4-neighbour outside the mask is on the outline
    interior = inner[:-2, 1:-1] & inner[2:, 1:-1] & inner[1:-1, :-2] & inner[1:-1, 2:]
    out[mask & ~interior] = MASK_COLOUR
    picture = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    height, width = mask.shape
    radius = max(3, round(min(height, width) / 60))
    if prompt.box is not None:
        draw.rectangle([float(v) for v in prompt.box], outline=POSITIVE, width=max(1, radius // 2))
    if prompt.points is not None:
        for (x, y), label in zip(prompt.points.tolist(), prompt.labels.tolist()):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=POSITIVE if label else NEGATIVE,
                         outline=RIM)
    return np.asarray(picture)


def plan_overlays(args, targets: list) -> list:
    """--overlay's targets (none without it), planned like --out's, never the same file or stream as a mask."""
    if args.overlay is None:
        return []
    if args.overlay == "-" and args.out == "-":
        raise SamclError("--overlay -: --out - already writes the mask to stdout; give the overlay a file")
    overlays = output.plan(args.overlay, args.images, args.json or args.out == "-", flag="--overlay")
    masks = {(t.kind, t.path) for t in targets}
    clash = next((o for o in overlays if (o.kind, o.path) in masks), None)
    if clash is not None:
        raise SamclError(f"--overlay {args.overlay}: {clash.shown} is also where --out writes a mask; give another "
                         "file")
    return overlays
