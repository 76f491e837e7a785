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
- ``documents`` (unseen; unlike every learned domain, for the open-set answer): a scanned grey page with rows
  of text and one faded ink stamp. *Convention: the whole stamp* (see `documents.py`).

Each sample's size is drawn independently (width and height in 112-192 px, never square), so SAM's
longest-side resize and padding are exercised. Everything is a pure function of ``(domain, seed, split,
index)``: the same arguments give byte-identical samples, train and test draw from independent streams,
and the first k samples of ``generate(d, n, s)`` are ``generate(d, k, s)``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ..sample import Sample
from .documents import _documents
from .draw import Scene, _filter_mask
from .general import _general, general_scene
from .targets import _camouflage, _camouflage_sand, _cells, _polyps, _shadows, _skin_lesions

__all__ = ["ALL_DOMAINS", "GENERAL", "MAX_SIDE", "MIN_SIDE", "NUM_POINTS", "SPLITS", "TARGET_DOMAINS",
           "UNSEEN_DOMAINS", "fixed_test_points", "generate", "generate_general_instances", "sample_rng",
           "write_domain"]

GENERAL = "general"
TARGET_DOMAINS: tuple[str, ...] = ("polyps", "camouflage", "shadows", "skin_lesions", "cells")
UNSEEN_DOMAINS: tuple[str, ...] = ("camouflage_sand", "documents")
ALL_DOMAINS: tuple[str, ...] = (GENERAL, *TARGET_DOMAINS, *UNSEEN_DOMAINS)

SPLITS = ("train", "test")
NUM_POINTS = 3
MIN_SIDE, MAX_SIDE = 112, 192


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) in [MIN_SIDE, MAX_SIDE], never square."""
    while True:
        h, w = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
        if abs(h - w) >= 8:
            return h, w


_RENDERERS: dict[str, Callable[[np.random.Generator, int, int], Scene]] = {
    GENERAL: _general,
    "polyps": _polyps,
    "camouflage": _camouflage,
    "shadows": _shadows,
    "skin_lesions": _skin_lesions,
    "cells": _cells,
    "camouflage_sand": _camouflage_sand,
    "documents": _documents,
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


def fixed_test_points(mask: np.ndarray, rng: np.random.Generator, n: int = NUM_POINTS) -> np.ndarray:
    """A sample's n fixed (x, y) prompt points inside `mask`, away from its edge where the mask allows it (drawn
    once with the sample, unlike `samcl.method.prompts.sample_points`, which draws training points anew)."""
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
        points = fixed_test_points(mask, rng)
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
