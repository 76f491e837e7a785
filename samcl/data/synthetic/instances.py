"""Synthetic domains with instance ground truth: several objects an image, each domain with its own convention of
what one object is, for automatic masks (`SAMCL.generate`) scored with COCO mask AP (`benchmarks/instance_ap.py`).

    images = generate_instances("nuclei", 16, seed=0, split="test")   # [(name, H x W x 3 uint8, [H x W bool])]
    samples = instance_samples("nuclei", 48, seed=0)                    # one object per image, 3 fixed points

Domains (their looks are the single-object domains' of the suite, so a selector tells them apart the same way):
- ``nuclei`` (fluorescence microscopy): 6-16 cells, a dim green cytoplasm around a bright blue nucleus.
  *One object: one nucleus, without its cytoplasm* (the general domain would take the whole cell).
- ``polyp_field`` (endoscopy): 2-4 separate pale bulges on mucosa, each with white specular glints.
  *One object: one bulge with its glints* (glints are holes to a model that never saw them).
- ``lesion_field`` (dermoscopy): 2-3 lesions on skin with hair, each a dark mottled core in a light-brown halo.
  *One object: one lesion out to its halo* (the core alone is what a contour model finds first).
- ``general`` (the base model's own domain: flat shapes that may occlude each other): the visible part of each
  shape (`generate_general_instances`), never learned here: the open-set answer is measured on it.

Everything is a pure function of (domain, seed, split, index), drawn from streams of its own (`sample_rng` with an
"/instances" suffix), so the single-object domains' samples, and the benchmarks built on them, never change.
"""

from __future__ import annotations

import numpy as np

from ..sample import Sample
from .draw import (_blob, _bulge, _curve, _filter_mask, _gaussian_blur, _grain, _grid, _hsv, _microscopy, _mix, _mucosa,
                   _noise, _stroke_mask, _vignette)

INSTANCE_DOMAINS: tuple[str, ...] = ("nuclei", "polyp_field", "lesion_field")
#: the smallest object kept as ground truth (pixels): smaller visible parts are not objects a person would mark
MIN_OBJECT = 30

Instances = tuple[np.ndarray, list[np.ndarray]]  # (H x W x 3 float image, one H x W bool mask per object)


def _place(rng: np.random.Generator, centers: list, w: int, h: int, radius: float, margin: float, gap: float):
    """A centre at least `gap` from the others and `margin` from the border, or None after 12 tries."""
    for _ in range(12):
        c = (rng.uniform(margin, w - margin), rng.uniform(margin, h - margin))
        if all(np.hypot(c[0] - o[0], c[1] - o[1]) > gap for o, _ in centers):
            return c
    return None


def _placed(rng: np.random.Generator, h: int, w: int, count: int, size: tuple[float, float], apart: float):
    """Up to `count` discs placed one after another: each (centre, radius), the radius a `size` share of the
    shorter side, its centre `apart` x the two radii from every earlier one (a disc that does not fit is skipped)."""
    centers: list = []
    for _ in range(count):
        radius = rng.uniform(*size) * min(h, w)
        c = _place(rng, centers, w, h, radius, radius * 1.1, 0.0)
        if c is None or any(np.hypot(c[0] - o[0], c[1] - o[1]) < apart * (radius + r) for o, r in centers):
            continue
        centers.append((c, radius))
        yield c, radius


def _nuclei(rng: np.random.Generator, h: int, w: int) -> Instances:
    xs, ys, image, cyto_color, nucleus_color = _microscopy(rng, h, w)
    cytoplasm, objects, centers = np.zeros((h, w), bool), [], []
    radius = rng.uniform(9, 14)
    for _ in range(int(rng.integers(6, 17))):
        c = _place(rng, centers, w, h, radius, radius, 1.5 * radius)
        if c is None:
            continue
        r = radius * rng.uniform(0.8, 1.2)
        centers.append((c, r))
        cell = _blob(rng, xs, ys, c, r, 0.25, 4, aspect=rng.uniform(1.0, 1.5), angle=rng.uniform(0, np.pi))
        shift = rng.normal(0, 0.15, 2) * r
        nucleus = _blob(rng, xs, ys, (c[0] + shift[0], c[1] + shift[1]), r * rng.uniform(0.4, 0.55), 0.15, 3,
                        aspect=rng.uniform(1.0, 1.3), angle=rng.uniform(0, np.pi)) & cell
        cytoplasm |= cell
        objects.append(nucleus)
    nuclei = np.any(objects, axis=0) if objects else np.zeros((h, w), bool)
    texture = _noise(rng, h, w, 4)[..., None]
    image = _mix(image, cyto_color * (0.7 + 0.6 * texture), _gaussian_blur(cytoplasm.astype(np.float32), 1.0))
    image = _mix(image, nucleus_color * (0.8 + 0.3 * texture), _gaussian_blur(nuclei.astype(np.float32), 0.8))
    image = image + _grain(rng, image.shape, 4.0) * (0.5 + image / 255.0)
    return image, objects


def _polyp_field(rng: np.random.Generator, h: int, w: int) -> Instances:
    xs, ys, base, image = _mucosa(rng, h, w)
    objects, glints = [], np.zeros((h, w), bool)
    for c, radius in _placed(rng, h, w, int(rng.integers(2, 5)), (0.1, 0.17), 1.5):
        mask, color, rim, light = _bulge(rng, xs, ys, base, c, radius)
        image = np.where(rim[..., None], image * 0.75, image)
        image = np.where(mask[..., None], color, image)
        for _ in range(int(rng.integers(2, 6))):  # specular highlights on the lit side: part of the bulge
            gx = c[0] + light[0] * rng.uniform(0.1, 0.6) + rng.normal(0, radius * 0.2)
            gy = c[1] + light[1] * rng.uniform(0.1, 0.6) + rng.normal(0, radius * 0.2)
            glints |= _blob(rng, xs, ys, (gx, gy), rng.uniform(1.0, 3.0), 0.2, 2, aspect=rng.uniform(1, 2.5),
                            angle=rng.uniform(0, np.pi)) & _filter_mask(mask, 3, grow=False)
        objects.append(mask)
    image = _gaussian_blur(image, 0.7)
    image = np.where(glints[..., None], np.array([250.0, 248.0, 245.0]), image)
    image = image * _vignette(xs, ys, rng.uniform(0.6, 1.0))
    return image + _grain(rng, image.shape, 2.5), objects


def _lesion_field(rng: np.random.Generator, h: int, w: int) -> Instances:
    xs, ys = _grid(h, w)
    skin = _hsv(rng.uniform(0.04, 0.09), rng.uniform(0.2, 0.45), rng.uniform(0.65, 0.92))
    image = skin * (0.9 + 0.12 * _noise(rng, h, w, 40) + 0.05 * rng.random((h, w), dtype=np.float32))[..., None]
    brown = _hsv(rng.uniform(0.03, 0.08), rng.uniform(0.5, 0.75), rng.uniform(0.25, 0.45))
    objects = []
    for c, radius in _placed(rng, h, w, int(rng.integers(2, 4)), (0.12, 0.18), 1.3):
        lesion = _blob(rng, xs, ys, c, radius, rng.uniform(0.15, 0.3), 6, aspect=rng.uniform(1.0, 1.4),
                       angle=rng.uniform(0, np.pi))
        offset = rng.normal(0, 0.12, 2) * radius
        core = _blob(rng, xs, ys, (c[0] + offset[0], c[1] + offset[1]), radius * rng.uniform(0.4, 0.6), 0.3,
                     6) & lesion
        halo = skin * 0.45 + brown * 0.55 * rng.uniform(0.9, 1.3)
        image = _mix(image, halo * (0.95 + 0.1 * _noise(rng, h, w, 6))[..., None],
                     _gaussian_blur(lesion.astype(np.float32), 1.2))
        core_color = brown * (0.5 + 0.6 * _noise(rng, h, w, 4))[..., None] + np.array([0.0, 0.0, 12.0], np.float32)
        image = _mix(image, core_color, _gaussian_blur(core.astype(np.float32), 1.5) * 0.95)
        objects.append(lesion)
    hair = _stroke_mask(h, w, [_curve(rng, h, w, bend=0.25) for _ in range(int(rng.integers(1, 7)))], 1)
    image = np.where(hair[..., None], brown * 0.35, image)
    return image + _grain(rng, image.shape, 2.5), objects


_RENDERERS = {"nuclei": _nuclei, "polyp_field": _polyp_field, "lesion_field": _lesion_field}


def generate_instances(domain: str, n: int, seed: int, split: str = "train"
                       ) -> list[tuple[str, np.ndarray, list[np.ndarray]]]:
    """n images of `domain` ("general" too) with one mask per object (objects under MIN_OBJECT pixels dropped).

    Returns:
      (list): (name, H x W x 3 uint8 image, [H x W bool mask per object]) per image.
    """
    from . import GENERAL, _check_split, _image_size, _to_uint8, generate_general_instances, sample_rng

    _check_split(split)
    if domain == GENERAL:
        return [(name, image, [m for m in masks if m.sum() >= MIN_OBJECT])
                for name, image, masks in generate_general_instances(n, seed, split)]
    if domain not in _RENDERERS:
        raise ValueError(f"unknown instance domain {domain!r}; known: {', '.join((*INSTANCE_DOMAINS, GENERAL))}")
    out = []
    for index in range(n):
        rng = sample_rng(f"{domain}/instances", seed, split, index)
        h, w = _image_size(rng)
        image, masks = _RENDERERS[domain](rng, h, w)
        out.append((f"{domain}_{split}_{index:05d}", _to_uint8(image), [m for m in masks if m.sum() >= MIN_OBJECT]))
    return out


def instance_samples(domain: str, n: int, seed: int, split: str = "train") -> list[Sample]:
    """Training samples of an instance domain: image i with one of its objects (drawn with the image's own
    generator) as the mask and three fixed positive points inside it, as the single-object domains' samples."""
    from . import fixed_test_points, sample_rng

    samples = []
    for name, image, masks in generate_instances(domain, n, seed, split):
        rng = sample_rng(f"{domain}/instance-pick", seed, split, len(samples))
        if not masks:
            continue
        mask = masks[int(rng.integers(len(masks)))]
        points = fixed_test_points(mask, rng)
        samples.append(Sample(name, image, mask, points, np.ones(len(points), dtype=np.int64)))
    return samples
