"""A deterministic synthetic domain suite: a stand-in for SAMCL's datasets that needs no download.

Real SAMCL learns Kvasir-SEG, CAMO, ISTD, ISIC, COD10K one after another on top of a SAM trained on
natural images. Here a tiny SAM is pretrained on the *general* domain below (see
`scripts/pretrain_tiny_sam.py`) and the *target* domains are learned in sequence. Every domain is a
recognisable analogue of a real one, and every domain has its own look (palette, texture, lighting) so
that a small classifier on pooled encoder features can tell them apart.

The suite is built to contain the two problems SAMCL solves:

1. A SAM trained on *general* does clearly worse on the targets: their objects are camouflaged, soft,
   specular or hairy, and, above all, each target has its own **convention about what region a prompt
   means**, which the general domain never taught.
2. The conventions **conflict**: what one target teaches is wrong for another, keyed to each domain's
   look. One adapter trained on the domains in sequence therefore forgets; one module per domain plus a
   selector that recognises the domain solves all of them.

Domains and conventions (points are always 3 positive points inside the ground-truth mask):

- ``general`` (source, COCO-like; used only to pretrain the tiny SAM): 2-5 flat shapes (ellipses,
  polygons, stars, blobs) with solid, gradient, striped or checkered fills, which may occlude each other,
  on varied backgrounds. *Convention: instance* - the visible part of the one object under the points.
- ``polyps`` (Kvasir-SEG): pink-red mucosa with vessels, strong vignetting, wet specular glints; one
  dome-shaded pale bulge and up to two similar smaller bulges beside it. *Convention: this one bulge*
  (the bulge under the points, **including** its white specular highlights, **not** the other bulges).
- ``camouflage`` (CAMO): a blotchy green/brown texture; the animal is an irregular blob made of the same
  texture, only slightly shifted in colour and shaded at its rim. *Convention: the whole animal.*
- ``shadows`` (ISTD): busy high-contrast ground (asphalt, grass, tiles, cobbles) and a crisp smooth
  object standing on it (bright, or as dark as its shadow) that casts a translucent, bluish shadow
  attached to it, sharp near the object and soft further away; the points lie on the shadow.
  *Convention: the shadow, not the object casting it* (the ground texture shows through the shadow, the
  object is smooth), where the general domain would take the dark shape under the points as a whole.
- ``skin_lesions`` (ISIC): skin tones with pores, dermoscope vignette, hair strokes over everything; the
  lesion is a light-brown irregular halo around a dark mottled core, with a few small freckles around.
  *Convention: core plus halo* - the whole lesion out to the halo's edge, freckles and hair excluded.
- ``cells`` (fluorescence microscopy, last in the default order): a dark field with 6-16 cells, each a
  dim green cytoplasm around a bright blue nucleus. *Convention: semantic, core only* - points in some
  nuclei mean **all nuclei** in the image, **without** the cytoplasm. This contradicts both the
  instance conventions (polyps: only this bulge) and the halo convention (skin lesions: include the
  ring around the core).
- ``camouflage_sand`` (unseen, COD10K-like; never learned, measures transfer): rippled sand in ochre and
  tan; a flat elongated animal (flatfish, lizard) covered in the same ripples at a different phase.
  *Convention: the whole animal*, as in ``camouflage``, with a different look.

Each sample's size is drawn independently (width and height in 112-192 px, never square), so SAM's
longest-side resize and padding are exercised. Everything is a pure function of ``(domain, seed, split,
index)``: the same arguments give byte-identical samples, train and test draw from independent streams,
and the first k samples of ``generate(d, n, s)`` are ``generate(d, k, s)``.
"""

from __future__ import annotations

import colorsys
import json
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from samcl.data.sample import Sample

GENERAL = "general"
TARGET_DOMAINS: tuple[str, ...] = ("polyps", "camouflage", "shadows", "skin_lesions", "cells")
UNSEEN_DOMAINS: tuple[str, ...] = ("camouflage_sand",)
ALL_DOMAINS: tuple[str, ...] = (GENERAL, *TARGET_DOMAINS, *UNSEEN_DOMAINS)

SPLITS = ("train", "test")
NUM_POINTS = 3
MIN_SIDE, MAX_SIDE = 112, 192

Scene = tuple[np.ndarray, np.ndarray]  # (H x W x 3 float image in [0, 255], H x W bool target mask)


# ----------------------------------------------------------------------------------------------------
# Small image helpers (numpy + PIL only)
# ----------------------------------------------------------------------------------------------------


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


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) in [MIN_SIDE, MAX_SIDE], never square."""
    while True:
        h, w = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
        if abs(h - w) >= 8:
            return h, w


# ----------------------------------------------------------------------------------------------------
# general: the source domain
# ----------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------
# target and unseen domains
# ----------------------------------------------------------------------------------------------------


def _polyps(rng: np.random.Generator, h: int, w: int) -> Scene:
    xs, ys = _grid(h, w)
    base = _hsv(rng.uniform(-0.03, 0.02), rng.uniform(0.45, 0.7), rng.uniform(0.65, 0.9))
    dark = base * rng.uniform(0.55, 0.7)
    mucosa = _palette(_noise(rng, h, w, rng.uniform(25, 50), octaves=3), np.stack([dark, base, base * 1.1]))
    vessels = _stroke_mask(h, w, [_curve(rng, h, w, bend=0.5) for _ in range(int(rng.integers(3, 8)))], 1)
    mucosa = np.where(vessels[..., None], mucosa * 0.7, mucosa)

    def bulge(center, radius, pale):
        mask = _blob(rng, xs, ys, center, radius, rng.uniform(0.05, 0.15), 3, aspect=rng.uniform(1.0, 1.4),
                     angle=rng.uniform(0, np.pi))
        light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.8, -0.2)]) * radius
        d = np.hypot(xs - center[0] - light[0] * 0.3, ys - center[1] - light[1] * 0.3) / (radius * 1.2)
        dome = np.clip(1.15 - 0.6 * d**2, 0.5, 1.2)[..., None]
        color = np.clip(base * np.array([1.0, 1.12, 1.1]) + pale, 0, 255) * dome
        rim = _filter_mask(mask, 5, grow=True) & ~mask  # dark crease around the bulge
        return mask, color, rim, light

    radius = rng.uniform(0.16, 0.28) * min(h, w)
    center = (rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h)
    target, color, rim, light = bulge(center, radius, rng.uniform(15, 40))
    image = np.where(rim[..., None], mucosa * 0.75, mucosa)
    image = np.where(target[..., None], color, image)
    for _ in range(int(rng.integers(0, 3))):  # smaller look-alike bulges: not the target
        r = radius * rng.uniform(0.35, 0.6)
        for _attempt in range(10):
            c = (rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h)
            if np.hypot(c[0] - center[0], c[1] - center[1]) > radius * 1.4 + r:
                break
        else:
            continue
        other, other_color, other_rim, _ = bulge(c, r, rng.uniform(5, 25))
        other &= ~target
        image = np.where((other_rim & ~target)[..., None], image * 0.8, image)
        image = np.where(other[..., None], other_color, image)
    image = _gaussian_blur(image, 0.7)
    glints = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(3, 8))):  # specular highlights on the lit side of the polyp
        gx = center[0] + light[0] * rng.uniform(0.1, 0.6) + rng.normal(0, radius * 0.2)
        gy = center[1] + light[1] * rng.uniform(0.1, 0.6) + rng.normal(0, radius * 0.2)
        glints |= _blob(rng, xs, ys, (gx, gy), rng.uniform(1.0, 3.5), 0.2, 2, aspect=rng.uniform(1, 2.5),
                        angle=rng.uniform(0, np.pi))
    glints &= _filter_mask(target, 3, grow=False)
    for _ in range(int(rng.integers(2, 7))):  # wet glints on the mucosa
        glints |= _blob(rng, xs, ys, (rng.uniform(0, w), rng.uniform(0, h)), rng.uniform(0.8, 2.5), 0.2, 2) & ~target
    image = np.where(glints[..., None], np.array([250.0, 248.0, 245.0]), image)
    image = image * _vignette(xs, ys, rng.uniform(0.6, 1.0))
    return image + _grain(rng, image.shape, 2.5), target


def _camouflage_palette(rng: np.random.Generator) -> np.ndarray:
    hue = rng.choice([rng.uniform(0.18, 0.36), rng.uniform(0.06, 0.12)])  # foliage greens or bark browns
    values = np.sort(rng.uniform(0.2, 0.85, 4))
    return np.stack([_hsv(hue + rng.normal(0, 0.03), rng.uniform(0.3, 0.7), v) for v in values])


def _camouflage(rng: np.random.Generator, h: int, w: int) -> Scene:
    xs, ys = _grid(h, w)
    colors = _camouflage_palette(rng)
    feature = rng.uniform(10, 22)
    image = _palette(_noise(rng, h, w, feature, octaves=3), colors)
    radius = rng.uniform(0.2, 0.32) * min(h, w)
    center = (rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h)
    target = _blob(rng, xs, ys, center, radius, rng.uniform(0.2, 0.4), 6, aspect=rng.uniform(1.0, 1.8),
                   angle=rng.uniform(0, np.pi))
    skin = _palette(_noise(rng, h, w, feature * rng.uniform(0.6, 0.9), octaves=3), colors)
    skin = skin * rng.uniform(0.9, 1.1, 3)  # a slight shift in colour
    body = _gaussian_blur(target.astype(np.float32), radius * 0.25)  # rounded body: darker towards its rim
    skin = skin * (0.8 + 0.3 * np.clip(body * 2 - 0.5, 0, 1))[..., None]
    alpha = _gaussian_blur(target.astype(np.float32), 0.8)
    image = _mix(image, skin, alpha)
    return image + _grain(rng, image.shape, 3.0), target


def _camouflage_sand(rng: np.random.Generator, h: int, w: int) -> Scene:
    xs, ys = _grid(h, w)
    hue = rng.uniform(0.08, 0.13)
    colors = np.stack([_hsv(hue, rng.uniform(0.3, 0.55), v) for v in np.sort(rng.uniform(0.45, 0.95, 3))])

    def ripples(angle, period, phase):
        warp = _noise(rng, h, w, 30, octaves=2) * period * 1.5
        proj = xs * np.cos(angle) + ys * np.sin(angle) + warp
        wave = 0.5 + 0.5 * np.sin(proj * 2 * np.pi / period + phase)
        return np.clip(0.7 * wave + 0.3 * rng.random((h, w), dtype=np.float32), 0, 1)

    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 11)
    image = _palette(ripples(angle, period, 0.0), colors)
    radius = rng.uniform(0.18, 0.26) * min(h, w)
    center = (rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h)
    target = _blob(rng, xs, ys, center, radius, rng.uniform(0.1, 0.25), 4, aspect=rng.uniform(1.8, 2.6),
                   angle=rng.uniform(0, np.pi))
    skin = _palette(ripples(angle + rng.uniform(-0.6, 0.6), period * rng.uniform(0.8, 1.2), rng.uniform(0, 6)), colors)
    alpha = _gaussian_blur(target.astype(np.float32), 1.0)
    image = _mix(image, skin * rng.uniform(0.93, 1.07), alpha)
    return image + _grain(rng, image.shape, 3.0), target


def _ground(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Busy, high-contrast ground (the texture must show through the shadow)."""
    h, w = xs.shape
    kind = rng.choice(["asphalt", "grass", "tiles", "cobbles"])
    fine = rng.random((h, w), dtype=np.float32)
    if kind == "asphalt":
        base = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.08), rng.uniform(0.6, 0.8))
        grain = _noise(rng, h, w, 2.5)
        return base * (0.6 + 0.5 * (0.4 * fine + 0.6 * grain) + 0.2 * _noise(rng, h, w, 20))[..., None]
    if kind == "grass":
        base = _hsv(rng.uniform(0.18, 0.3), rng.uniform(0.45, 0.75), rng.uniform(0.6, 0.85))
        blades = _noise(rng, h, w, 2.0)
        return base * (0.5 + 0.7 * (0.6 * blades + 0.4 * fine))[..., None]
    if kind == "tiles":
        base = _hsv(rng.uniform(0, 0.15), rng.uniform(0.1, 0.4), rng.uniform(0.7, 0.9))
        size = rng.uniform(10, 20)
        tile_id = np.floor(xs / size) * 7919 + np.floor(ys / size)
        shade = 0.75 + 0.4 * ((np.sin(tile_id * 12.9898 + rng.uniform(0, 100)) * 43758.5453) % 1.0)
        joints = (np.mod(xs, size) < 1.5) | (np.mod(ys, size) < 1.5)
        tiles = base * (shade * (0.92 + 0.16 * fine))[..., None]
        return np.where(joints[..., None], tiles * 0.55, tiles)
    base = _hsv(rng.uniform(0.05, 0.12), rng.uniform(0.1, 0.35), rng.uniform(0.65, 0.85))
    stones = _noise(rng, h, w, rng.uniform(5, 9))
    gaps = np.abs(stones - 0.5) < 0.06
    cobbles = base * (0.8 + 0.35 * _noise(rng, h, w, 4) + 0.1 * fine)[..., None]
    return np.where(gaps[..., None], cobbles * 0.5, cobbles)


def _shadows(rng: np.random.Generator, h: int, w: int) -> Scene:
    xs, ys = _grid(h, w)
    image = _ground(rng, xs, ys)
    size = rng.uniform(0.12, 0.2) * min(h, w)
    angle = rng.uniform(0, 2 * np.pi)  # direction the shadow falls
    length = rng.uniform(1.6, 3.0) * size
    direction = np.array([np.cos(angle), np.sin(angle)])
    # place the object so that object + shadow fit in the frame
    lo = np.array([size, size]) + np.maximum(-direction * length, 0)
    hi = np.array([w - size, h - size]) - np.maximum(direction * length, 0)
    base = rng.uniform(np.minimum(lo, hi), np.maximum(lo, hi))
    kind = rng.choice(["box", "post", "round"])
    if kind == "post":
        obj = _blob(rng, xs, ys, tuple(base), size * 0.45, 0.0, 0, aspect=2.2, angle=rng.uniform(0, np.pi))
    elif kind == "round":
        obj = _blob(rng, xs, ys, tuple(base), size * 0.6, 0.08, 3)
    else:
        obj = _blob(rng, xs, ys, tuple(base), size * 0.6, 0.0, 0, aspect=rng.uniform(1.0, 1.5), angle=rng.uniform(0, np.pi))
        obj = obj | _blob(rng, xs, ys, tuple(base), size * 0.6, 0.35, 1)
    # the shadow: the object swept along the light direction
    shadow = np.zeros((h, w), bool)
    for t in np.linspace(0.0, 1.0, 12):
        shift = direction * length * t
        shadow |= _shift(obj, int(round(shift[0])), int(round(shift[1])))
    # penumbra: sharp next to the object, softer further away
    along = np.clip(((xs - base[0]) * direction[0] + (ys - base[1]) * direction[1]) / (length + size), 0, 1)
    along = along.astype(np.float32)
    sharp = _gaussian_blur(shadow.astype(np.float32), rng.uniform(0.8, 1.5))
    soft = _gaussian_blur(shadow.astype(np.float32), rng.uniform(3.0, 5.0))
    alpha = sharp * (1 - along) + soft * along
    darkness = rng.uniform(0.3, 0.5)  # translucent: the ground texture shows through
    tint = np.array([0.9, 0.95, 1.12], np.float32)  # skylight makes shadows bluish
    image = image * (1 - alpha[..., None] * np.float32(darkness) * (2 - tint))
    target = (alpha > 0.5) & ~obj
    # half of the objects are dark themselves: then only the convention separates shadow from object
    value = rng.uniform(0.12, 0.35) if rng.random() < 0.5 else rng.uniform(0.85, 1.0)
    color = _hsv(rng.random(), rng.uniform(0.0, 0.8), value)
    lit = np.clip(color * (0.9 + 0.15 * _noise(rng, h, w, 10))[..., None], 0, 255)
    image = np.where(obj[..., None], lit, image)
    return image + _grain(rng, image.shape, 2.0), target


def _skin_lesions(rng: np.random.Generator, h: int, w: int) -> Scene:
    xs, ys = _grid(h, w)
    skin_color = _hsv(rng.uniform(0.04, 0.09), rng.uniform(0.2, 0.45), rng.uniform(0.65, 0.92))
    pores = rng.random((h, w), dtype=np.float32)
    image = skin_color * (0.9 + 0.12 * _noise(rng, h, w, 40) + 0.05 * pores)[..., None]
    radius = rng.uniform(0.22, 0.32) * min(h, w)
    center = (rng.uniform(0.4, 0.6) * w, rng.uniform(0.4, 0.6) * h)
    lesion = _blob(rng, xs, ys, center, radius, rng.uniform(0.15, 0.35), 6, aspect=rng.uniform(1.0, 1.4),
                   angle=rng.uniform(0, np.pi))
    offset = rng.normal(0, 0.12, 2) * radius
    core = _blob(rng, xs, ys, (center[0] + offset[0], center[1] + offset[1]), radius * rng.uniform(0.4, 0.6),
                 0.3, 6) & lesion
    brown = _hsv(rng.uniform(0.03, 0.08), rng.uniform(0.5, 0.75), rng.uniform(0.25, 0.45))
    halo = skin_color * 0.45 + brown * 0.55 * rng.uniform(0.9, 1.3)
    halo_alpha = _gaussian_blur(lesion.astype(np.float32), 1.2)
    image = _mix(image, halo * (0.95 + 0.1 * _noise(rng, h, w, 6))[..., None], halo_alpha)
    mottle = _noise(rng, h, w, 4)
    core_color = brown * (0.5 + 0.6 * mottle)[..., None] + np.array([0.0, 0.0, 12.0], np.float32)
    image = _mix(image, core_color, _gaussian_blur(core.astype(np.float32), 1.5) * 0.95)
    around = _filter_mask(lesion, 7, grow=True)
    for _ in range(int(rng.integers(0, 4))):  # freckles: not the lesion
        c = (rng.uniform(0, w), rng.uniform(0, h))
        freckle = _blob(rng, xs, ys, c, rng.uniform(2, 4.5), 0.2, 3) & ~around
        image = np.where(freckle[..., None], brown * 1.2, image)
    if rng.random() < 0.5:  # dermoscope: dark outside a circle
        r = np.hypot((xs - w / 2) / (w / 2), (ys - h / 2) / (h / 2))
        image = image * np.clip((rng.uniform(1.05, 1.3) - r) * 8, 0.05, 1.0)[..., None]
    hairs = [_curve(rng, h, w, bend=0.25) for _ in range(int(rng.integers(1, 9)))]
    hair = _stroke_mask(h, w, hairs, int(rng.integers(1, 3)))
    image = np.where(hair[..., None], brown * 0.35, image)
    return image + _grain(rng, image.shape, 2.5), lesion


def _cells(rng: np.random.Generator, h: int, w: int) -> Scene:
    xs, ys = _grid(h, w)
    background = np.array([rng.uniform(0, 10), rng.uniform(3, 14), rng.uniform(5, 20)])
    image = np.broadcast_to(background, (h, w, 3)).astype(np.float32).copy()
    cyto_color = _hsv(rng.uniform(0.27, 0.38), rng.uniform(0.6, 0.9), rng.uniform(0.3, 0.5))
    nucleus_color = _hsv(rng.uniform(0.52, 0.62), rng.uniform(0.5, 0.8), rng.uniform(0.8, 1.0))
    nuclei = np.zeros((h, w), bool)
    cytoplasm = np.zeros((h, w), bool)
    centers: list[tuple[float, float]] = []
    radius = rng.uniform(9, 14)
    for _ in range(int(rng.integers(6, 17))):
        for _attempt in range(12):
            c = (rng.uniform(radius, w - radius), rng.uniform(radius, h - radius))
            if all(np.hypot(c[0] - o[0], c[1] - o[1]) > 1.5 * radius for o in centers):
                break
        else:
            continue
        centers.append(c)
        r = radius * rng.uniform(0.8, 1.2)
        x0, x1 = int(max(c[0] - 2 * r, 0)), int(min(c[0] + 2 * r + 1, w))
        y0, y1 = int(max(c[1] - 2 * r, 0)), int(min(c[1] + 2 * r + 1, h))
        local = (slice(y0, y1), slice(x0, x1))
        cell = _blob(rng, xs[local], ys[local], c, r, 0.25, 4, aspect=rng.uniform(1.0, 1.5), angle=rng.uniform(0, np.pi))
        shift = rng.normal(0, 0.15, 2) * r
        nucleus = _blob(rng, xs[local], ys[local], (c[0] + shift[0], c[1] + shift[1]), r * rng.uniform(0.4, 0.55),
                        0.15, 3, aspect=rng.uniform(1.0, 1.3), angle=rng.uniform(0, np.pi)) & cell
        cytoplasm[local] |= cell
        nuclei[local] |= nucleus
    texture = _noise(rng, h, w, 4)[..., None]
    image = _mix(image, cyto_color * (0.7 + 0.6 * texture), _gaussian_blur(cytoplasm.astype(np.float32), 1.0))
    image = _mix(image, nucleus_color * (0.8 + 0.3 * texture), _gaussian_blur(nuclei.astype(np.float32), 0.8))
    image = image + _grain(rng, image.shape, 4.0) * (0.5 + image / 255.0)  # shot noise, brighter where brighter
    return image, nuclei


_RENDERERS: dict[str, Callable[[np.random.Generator, int, int], Scene]] = {
    GENERAL: _general,
    "polyps": _polyps,
    "camouflage": _camouflage,
    "shadows": _shadows,
    "skin_lesions": _skin_lesions,
    "cells": _cells,
    "camouflage_sand": _camouflage_sand,
}

# ----------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------


def _check_domain(domain: str) -> None:
    if domain not in _RENDERERS:
        raise ValueError(f"unknown synthetic domain {domain!r}; known domains: {', '.join(ALL_DOMAINS)}")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def sample_rng(domain: str, seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that draws one sample: a pure function of (domain, seed, split, index)."""
    return np.random.default_rng([int(seed), zlib.crc32(domain.encode()), SPLITS.index(split), int(index)])


def sample_points(mask: np.ndarray, rng: np.random.Generator, n: int = NUM_POINTS) -> np.ndarray:
    """n (x, y) pixel coordinates inside `mask`, away from its edge where the mask allows it."""
    inner = _filter_mask(mask, 3, grow=False)
    region = inner if inner.sum() >= n else mask
    rows, cols = np.nonzero(region)
    picks = rng.choice(len(rows), size=n, replace=len(rows) < n)
    return np.stack([cols[picks], rows[picks]], axis=1).astype(np.float64)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def generate(domain: str, n: int, seed: int, split: str = "train") -> list[Sample]:
    """n samples of `domain`, each with NUM_POINTS fixed positive points inside its mask."""
    _check_domain(domain)
    _check_split(split)
    samples = []
    for index in range(n):
        rng = sample_rng(domain, seed, split, index)
        h, w = _image_size(rng)
        image, mask = _RENDERERS[domain](rng, h, w)
        points = sample_points(mask, rng)
        samples.append(
            Sample(f"{domain}_{split}_{index:05d}", _to_uint8(image), mask.astype(bool), points,
                   np.ones(len(points), dtype=np.int64))
        )
    return samples


def generate_general_instances(n: int, seed: int, split: str = "train") -> list[tuple[str, np.ndarray, list[np.ndarray]]]:
    """n general-domain images with the visible masks of all their objects (for pretraining SAM).

    Independent of `generate(GENERAL, ...)`'s stream, so pretraining never sees the general test samples.
    """
    _check_split(split)
    out = []
    for index in range(n):
        rng = sample_rng(f"{GENERAL}/instances", seed, split, index)
        h, w = _image_size(rng)
        image, masks = general_scene(rng, h, w)
        out.append((f"{GENERAL}_instances_{split}_{index:05d}", _to_uint8(image), masks))
    return out


def write_domain(root: Path, domain: str, n_train: int, n_test: int, seed: int) -> Path:
    """Write the reference layout under root/<domain>/ and return that folder.

    <domain>/<split>/images/<name>.png, <domain>/<split>/masks/<name>.jpg (foreground 255, JPEG quality
    90, so values near 0 and 255 occur and must be thresholded) and <domain>/<split>/masks/points.json
    mapping each mask file name to [[x, y], [x, y], [x, y]].
    """
    _check_domain(domain)
    folder = Path(root) / domain
    for split, n in (("train", n_train), ("test", n_test)):
        images_dir, masks_dir = folder / split / "images", folder / split / "masks"
        images_dir.mkdir(parents=True, exist_ok=True)
        masks_dir.mkdir(parents=True, exist_ok=True)
        points = {}
        for sample in generate(domain, n, seed, split):
            Image.fromarray(sample.image).save(images_dir / f"{sample.name}.png")
            Image.fromarray(sample.mask.astype(np.uint8) * 255).save(masks_dir / f"{sample.name}.jpg", quality=90)
            points[f"{sample.name}.jpg"] = [[float(x), float(y)] for x, y in sample.points]
        (masks_dir / "points.json").write_text(json.dumps(points, indent=1) + "\n")
    return folder
