"""The `documents` domain (unseen; never learned): a scanned page, unlike every learned domain and the general one.

Near-grey paper with faint fibres and a scanner's uneven lighting, rows of dark glyph strokes in ruled lines,
and one inked rubber stamp (a red, blue or violet ring with text strokes inside, partly faded). Nothing in it is
a smooth coloured object on a textured ground, a dark field or skin. *Convention: the whole stamp* (ring and
everything inside it). It exists to measure the open-set answer: a selector should send it to the base model,
since no learned module was trained for anything like it. It was written before any selector was tuned.
"""

from __future__ import annotations

import numpy as np

from .draw import Scene, _blob, _gaussian_blur, _grain, _grid, _hsv, _mix, _noise


def _glyph_rows(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """H x W ink coverage in [0, 1]: lines of short dark strokes (words), with gaps between words and lines."""
    ink = np.zeros((h, w), np.float32)
    pitch = rng.uniform(7, 11)
    margin = int(rng.uniform(0.06, 0.12) * w)
    y = rng.uniform(4, 10)
    while y < h - 4:
        x = margin + rng.uniform(0, 6)
        end = w - margin - rng.uniform(0, 0.3) * w
        height = max(int(pitch * rng.uniform(0.35, 0.5)), 2)
        while x < end:
            word = rng.uniform(6, 22)
            stop = int(min(x + word, end))
            cols = np.arange(int(x), stop)
            if len(cols):
                heights = (rng.random(len(cols)) < 0.55) * rng.uniform(0.6, 1.0, len(cols))
                y0 = int(y)
                for j, col in enumerate(cols):
                    if heights[j] > 0:
                        ink[y0:min(y0 + int(height * heights[j]) + 1, h), col] = 1.0
            x = stop + rng.uniform(3, 6)
        y += pitch
    return _gaussian_blur(ink, 0.5)


def _documents(rng: np.random.Generator, h: int, w: int) -> Scene:
    xs, ys = _grid(h, w)
    paper = rng.uniform(200, 235)
    light = 0.88 + 0.12 * _noise(rng, h, w, 80) + 0.04 * _noise(rng, h, w, 3)
    image = np.repeat((paper * light)[..., None], 3, axis=2).astype(np.float32)
    image = _mix(image, np.float32(rng.uniform(20, 50)), _glyph_rows(rng, h, w) * rng.uniform(0.75, 0.95))
    radius = rng.uniform(0.2, 0.3) * min(h, w)
    center = (rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h)
    angle = rng.uniform(0, np.pi)
    stamp = _blob(rng, xs, ys, center, radius, rng.uniform(0.0, 0.05), 2, aspect=rng.uniform(1.0, 1.3), angle=angle)
    inner = _blob(rng, xs, ys, center, radius * rng.uniform(0.78, 0.86), 0.0, 0, aspect=1.0, angle=angle)
    ring = stamp & ~inner
    letters = (_noise(rng, h, w, 2.0) > 0.62) & _blob(rng, xs, ys, center, radius * 0.6, 0.0, 0)
    color = _hsv(rng.choice([0.98, 0.62, 0.75]) + rng.uniform(-0.02, 0.02), rng.uniform(0.55, 0.85),
                 rng.uniform(0.45, 0.7))
    fade = np.clip(0.55 + 0.6 * _noise(rng, h, w, 6), 0, 1)  # uneven ink: part of the stamp is faint
    alpha = _gaussian_blur((ring | letters).astype(np.float32), 0.6) * fade * rng.uniform(0.75, 0.95)
    image = image * (1 - alpha[..., None]) + color * image / 255.0 * alpha[..., None]
    return image + _grain(rng, image.shape, 3.0), stamp
