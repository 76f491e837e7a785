"""Drawing primitives of the synthetic suite (numpy + PIL only): blur, value noise, colours, blobs, strokes,
binary morphology, vignettes and sensor grain. Every random draw comes from the caller's generator, in the
order the caller makes the calls, so the domains stay byte-identical functions of their seeds."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

Scene = tuple[np.ndarray, np.ndarray]  # (H x W x 3 float image in [0, 255], H x W bool target mask)


def _gaussian_blur(array: np.ndarray, sigma: float) -> np.ndarray:
    """H x W (x C) float -> same, separable Gaussian blur with edge replication."""
    if sigma <= 0:
        return array.astype(np.float32)
    radius = max(1, int(3 * sigma + 0.5))
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    out = array.astype(np.float32)
    h, w = out.shape[:2]
    padded = np.pad(out, [(0, 0), (radius, radius)] + [(0, 0)] * (out.ndim - 2), mode="edge")
    out = sum(weight * padded[:, k : k + w] for k, weight in enumerate(kernel))
    padded = np.pad(out, [(radius, radius), (0, 0)] + [(0, 0)] * (out.ndim - 2), mode="edge")
    return sum(weight * padded[k : k + h] for k, weight in enumerate(kernel))


def _noise(rng: np.random.Generator, h: int, w: int, feature: float, octaves: int = 1) -> np.ndarray:
    """Smooth value noise in [0, 1], H x W float32; `feature` is the coarsest blob size in pixels."""
    out = np.zeros((h, w), np.float32)
    amplitude, total = 1.0, 0.0
    for octave in range(octaves):
        size = max(feature / 2**octave, 1.5)
        grid = rng.random((int(h / size) + 2, int(w / size) + 2), dtype=np.float32)
        layer = np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC))
        out += amplitude * layer
        total += amplitude
        amplitude *= 0.5
    out /= total
    low, high = out.min(), out.max()
    return (out - low) / max(high - low, 1e-6)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0, 1] (hue wraps) -> RGB float in [0, 255]."""
    rgb = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return np.array(rgb, np.float32) * np.float32(255.0)


def _palette(t: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """H x W values in [0, 1] -> H x W x 3 by piecewise-linear interpolation between K colours."""
    stops = np.linspace(0.0, 1.0, len(colors))
    return np.stack([np.interp(t, stops, colors[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def _blob(
    rng: np.random.Generator,
    xs: np.ndarray,
    ys: np.ndarray,
    center: tuple[float, float],
    radius: float,
    irregularity: float,
    harmonics: int = 5,
    aspect: float = 1.0,
    angle: float = 0.0,
) -> np.ndarray:
    """Irregular star-convex blob: radius(theta) = radius * (1 + sum_k a_k cos(k theta + phi_k)).

    Only the blob's bounding box is computed (blobs are the generator's hot spot).
    """
    ks = np.arange(2, harmonics + 2)
    amplitudes = irregularity / ks**0.8 * rng.uniform(0.3, 1.0, len(ks))
    phases = rng.uniform(0, 2 * np.pi, len(ks))
    reach = radius * (1 + amplitudes.sum()) * max(aspect, 1.0) + 1
    h, w = xs.shape
    x_first, y_first = xs[0, 0], ys[0, 0]
    x0, x1 = int(max(center[0] - reach - x_first, 0)), int(min(center[0] + reach - x_first + 1, w))
    y0, y1 = int(max(center[1] - reach - y_first, 0)), int(min(center[1] + reach - y_first + 1, h))
    out = np.zeros((h, w), bool)
    if x0 >= x1 or y0 >= y1:
        return out
    dx, dy = xs[y0:y1, x0:x1] - center[0], ys[y0:y1, x0:x1] - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / aspect
    v = -dx * sin + dy * cos
    r2 = u * u + v * v
    boundary = np.full(u.shape, radius, np.float32)
    if harmonics:
        # cos(k theta + phi) by the angle-addition recurrence: no arctan2, no cos per pixel and harmonic
        norm = np.sqrt(np.maximum(r2, 1e-12))
        c1, s1 = u / norm, v / norm
        ck, sk = c1 * c1 - s1 * s1, 2 * c1 * s1  # k = 2
        for k, a, phi in zip(ks, amplitudes, phases):
            boundary += np.float32(radius * a * np.cos(phi)) * ck - np.float32(radius * a * np.sin(phi)) * sk
            ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
    out[y0:y1, x0:x1] = r2 < boundary * boundary
    return out


def _stroke_mask(h: int, w: int, polylines: list[list[tuple[float, float]]], width: int) -> np.ndarray:
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for line in polylines:
        draw.line(line, fill=255, width=width, joint="curve")
    return np.asarray(canvas) > 127


def _curve(rng: np.random.Generator, h: int, w: int, start=None, length: float | None = None, bend: float = 0.3):
    """A random smooth polyline (quadratic Bezier) of about `length` pixels."""
    x0, y0 = start if start is not None else (rng.uniform(0, w), rng.uniform(0, h))
    length = length if length is not None else rng.uniform(0.4, 1.0) * max(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    x2, y2 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
    mx, my = (x0 + x2) / 2, (y0 + y2) / 2
    offset = rng.normal(0, bend) * length
    x1, y1 = mx - offset * np.sin(angle), my + offset * np.cos(angle)
    t = np.linspace(0, 1, 16)[:, None]
    points = (1 - t) ** 2 * np.array([x0, y0]) + 2 * (1 - t) * t * np.array([x1, y1]) + t**2 * np.array([x2, y2])
    return [tuple(p) for p in points.tolist()]


def _filter_mask(mask: np.ndarray, size: int, grow: bool) -> np.ndarray:
    """Binary dilation (grow) or erosion with a size x size square (size odd); outside counts as background."""
    reach = size // 2
    h, w = mask.shape
    padded = np.zeros((h + 2 * reach, w + 2 * reach), bool)
    padded[reach : reach + h, reach : reach + w] = mask
    rows = padded[:, 0:w].copy()
    for k in range(1, size):
        rows = (rows | padded[:, k : k + w]) if grow else (rows & padded[:, k : k + w])
    out = rows[0:h].copy()
    for k in range(1, size):
        out = (out | rows[k : k + h]) if grow else (out & rows[k : k + h])
    return out


def _shift(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """mask translated by (dx, dy) pixels; what leaves the frame is dropped (no wrap-around)."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


def _vignette(xs: np.ndarray, ys: np.ndarray, strength: float, center=None) -> np.ndarray:
    h, w = xs.shape
    cx, cy = center if center is not None else (w / 2, h / 2)
    r2 = ((xs - cx) / (w / 2)) ** 2 + ((ys - cy) / (h / 2)) ** 2
    return np.clip(1.0 - strength * r2 / 2, 0.0, 1.0)[..., None]


def _mix(base: np.ndarray, top: np.ndarray | float, alpha: np.ndarray) -> np.ndarray:
    alpha = alpha[..., None] if alpha.ndim == 2 else alpha
    return base * (1 - alpha) + top * alpha


def _grain(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Sensor noise with standard deviation sigma: uniform draws (several times faster than normal ones)."""
    return (rng.random(shape, dtype=np.float32) - np.float32(0.5)) * np.float32(sigma * 12**0.5)


def _mucosa(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Endoscopy mucosa (the polyp scenes' ground): a pink palette over noise, darker where vessels run.

    Returns:
      (tuple): xs, ys (the pixel grid), the base colour, the H x W x 3 float image.
    """
    xs, ys = _grid(h, w)
    base = _hsv(rng.uniform(-0.03, 0.02), rng.uniform(0.45, 0.7), rng.uniform(0.65, 0.9))
    dark = base * rng.uniform(0.55, 0.7)
    image = _palette(_noise(rng, h, w, rng.uniform(25, 50), octaves=3), np.stack([dark, base, base * 1.1]))
    vessels = _stroke_mask(h, w, [_curve(rng, h, w, bend=0.5) for _ in range(int(rng.integers(3, 8)))], 1)
    return xs, ys, base, np.where(vessels[..., None], image * 0.7, image)


def _bulge(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, base: np.ndarray, center, radius: float,
           pale: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A polyp-like bulge on mucosa of colour `base`: lit from one side, `pale` lighter than the mucosa (None:
    drawn here, after the shape, between 15 and 40).

    Returns:
      (tuple): its mask, its colour (H x W x 3), the dark crease around it (a mask), the light's offset.
    """
    mask = _blob(rng, xs, ys, center, radius, rng.uniform(0.05, 0.15), 3, aspect=rng.uniform(1.0, 1.4),
                 angle=rng.uniform(0, np.pi))
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.8, -0.2)]) * radius
    d = np.hypot(xs - center[0] - light[0] * 0.3, ys - center[1] - light[1] * 0.3) / (radius * 1.2)
    dome = np.clip(1.15 - 0.6 * d**2, 0.5, 1.2)[..., None]
    pale = rng.uniform(15, 40) if pale is None else pale
    color = np.clip(base * np.array([1.0, 1.12, 1.1]) + pale, 0, 255) * dome
    rim = _filter_mask(mask, 5, grow=True) & ~mask  # dark crease around the bulge
    return mask, color, rim, light


def _microscopy(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, ...]:
    """A fluorescence microscope's dark field and its two stains (the cell scenes' ground).

    Returns:
      (tuple): xs, ys (the pixel grid), the H x W x 3 float image, the cytoplasm's and the nuclei's colours.
    """
    xs, ys = _grid(h, w)
    background = np.array([rng.uniform(0, 10), rng.uniform(3, 14), rng.uniform(5, 20)])
    image = np.broadcast_to(background, (h, w, 3)).astype(np.float32).copy()
    cyto_color = _hsv(rng.uniform(0.27, 0.38), rng.uniform(0.6, 0.9), rng.uniform(0.3, 0.5))
    nucleus_color = _hsv(rng.uniform(0.52, 0.62), rng.uniform(0.5, 0.8), rng.uniform(0.8, 1.0))
    return xs, ys, image, cyto_color, nucleus_color
