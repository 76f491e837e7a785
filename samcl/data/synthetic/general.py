"""The synthetic *general* domain (the source, COCO-like): flat shapes with varied fills on varied backgrounds,
occluding each other; the tiny SAM is pretrained on it (`general_scene` gives every visible mask)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .draw import Scene, _blob, _filter_mask, _grid, _hsv, _noise


def _fill(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, color: np.ndarray, busy: float) -> np.ndarray:
    """A region fill around `color`: solid, gradient, stripes or checker; `busy` scales the contrast."""
    h, w = xs.shape
    kind = rng.choice(["solid", "gradient", "stripes", "checker"], p=[0.4, 0.25, 0.2, 0.15])
    second = np.clip(color + rng.normal(0, 45 * busy, 3), 0, 255).astype(np.float32)
    if kind == "solid":
        t = np.zeros((h, w), np.float32)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        proj = xs * np.cos(angle) + ys * np.sin(angle)
        t = (proj - proj.min()) / max(np.ptp(proj), 1.0)
    elif kind == "stripes":
        angle, period = rng.uniform(0, np.pi), rng.uniform(5, 14)
        t = (np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period) > 0).astype(np.float32)
    else:
        cell = rng.uniform(5, 12)
        t = ((np.floor(xs / cell) + np.floor(ys / cell)) % 2).astype(np.float32)
    return color * (1 - t[..., None]) + second * t[..., None]


def _general_shape(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    h, w = xs.shape
    radius = rng.uniform(0.1, 0.28) * min(h, w)
    cx, cy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
    kind = rng.choice(["ellipse", "polygon", "star", "blob", "rectangle"])
    angle = rng.uniform(0, 2 * np.pi)
    if kind == "ellipse":
        return _blob(rng, xs, ys, (cx, cy), radius, 0.0, 0, aspect=rng.uniform(1.0, 2.0), angle=angle)
    if kind == "blob":
        return _blob(rng, xs, ys, (cx, cy), radius, rng.uniform(0.1, 0.3), 4, aspect=rng.uniform(1.0, 1.6), angle=angle)
    if kind == "rectangle":
        a, b = radius * rng.uniform(0.6, 1.3), radius * rng.uniform(0.4, 1.0)
        corners = [(-a, -b), (a, -b), (a, b), (-a, b)]
    elif kind == "polygon":
        n = int(rng.integers(3, 7))
        corners = [(radius * np.cos(angle + 2 * np.pi * i / n), radius * np.sin(angle + 2 * np.pi * i / n)) for i in range(n)]
        angle = 0.0
    else:
        n = int(rng.integers(4, 7))
        inner = rng.uniform(0.4, 0.6)
        corners = [
            (radius * (1 if i % 2 == 0 else inner) * np.cos(angle + np.pi * i / n),
             radius * (1 if i % 2 == 0 else inner) * np.sin(angle + np.pi * i / n))
            for i in range(2 * n)
        ]
        angle = 0.0
    cos, sin = np.cos(angle), np.sin(angle)
    polygon = [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in corners]
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).polygon(polygon, fill=255)
    return np.asarray(canvas) > 127


def _general_background(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    h, w = xs.shape
    color = _hsv(rng.random(), rng.uniform(0.0, 0.6), rng.uniform(0.2, 0.95))
    if rng.random() < 0.35:
        t = _noise(rng, h, w, rng.uniform(20, 60), octaves=2)[..., None]
        other = np.clip(color + rng.normal(0, 40, 3), 0, 255)
        return color * (1 - t) + other * t
    return _fill(rng, xs, ys, color, busy=0.5)


def general_scene(rng: np.random.Generator, h: int, w: int, min_area: int = 80) -> tuple[np.ndarray, list[np.ndarray]]:
    """One general-domain image (H x W x 3 float) and the visible masks of all its objects (occluders on top)."""
    xs, ys = _grid(h, w)
    image = _general_background(rng, xs, ys)
    background_mean = image.reshape(-1, 3).mean(0)
    visible: list[np.ndarray] = []
    for _ in range(int(rng.integers(2, 6))):
        shape = _general_shape(rng, xs, ys)
        for _attempt in range(8):
            color = _hsv(rng.random(), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
            if np.linalg.norm(color - background_mean) > 90:
                break
        rows, cols = np.nonzero(shape)
        if len(rows) == 0:
            continue
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        fill = _fill(rng, xs[box], ys[box], color, busy=0.6)
        if rng.random() < 0.3:  # a darker outline, as drawn objects often have
            outline = shape[box] & ~_filter_mask(shape[box], 3, grow=False)
            fill = np.where(outline[..., None], fill * 0.5, fill)
        image[box] = np.where(shape[box][..., None], fill, image[box])
        visible = [v & ~shape for v in visible] + [shape]
    masks = [v for v in visible if v.sum() >= min_area]
    if not masks:  # practically never: fall back to the largest visible part
        masks = [max(visible, key=lambda v: v.sum())]
    image = image + rng.normal(0, 3.0, image.shape).astype(np.float32)
    return image, masks


def _general(rng: np.random.Generator, h: int, w: int) -> Scene:
    image, masks = general_scene(rng, h, w)
    return image, masks[int(rng.integers(len(masks)))]
