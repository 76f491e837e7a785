"""Synthetic video clips of the synthetic domains: the target moves and deforms, a distractor enters and leaves.

Built on the image domains' renderers (their look and their mask convention, see `samcl.data.synthetic`),
without changing them:

- the target is the ground-truth region of one rendered scene of the domain (the bulge, the animal, the shadow,
  the lesion, all nuclei...), cut out with its pixels;
- the background is that same scene with the target's pixels replaced by another scene of the domain at the same
  place (so the rest of the scene, with its own distractors, stays);
- over the clip the target drifts (a few pixels a frame, in a random direction) and deforms (its width and height
  breathe in opposite phase, up to +-12 %); a third scene's target crosses the frame below it, entering from one
  side after the first quarter and gone before the last;
- the ground truth of each frame is the target's warped mask (the part inside the frame).

Everything is a pure function of (domain, seed, split, index): `generate_clips(d, n, s)` starts with
`generate_clips(d, k, s)`. Frames are the image domains' sizes (112-192 px, never square).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ..sample import Sample
from . import _RENDERERS, SPLITS, _check_domain, _check_split, _image_size, _to_uint8, fixed_test_points

#: frames per clip by default; the deformation's amplitude; drift in pixels per frame
FRAMES = 10
DEFORMATION = 0.12
DRIFT = (1.0, 2.5)


@dataclass
class Clip:
    """One synthetic video. frames: T x (H x W x 3 uint8); masks: T x (H x W bool) ground truth of the target;
    points: 3 x 2 fixed (x, y) positive points inside the first frame's mask (the prompt)."""

    name: str
    frames: list[np.ndarray]
    masks: list[np.ndarray]
    points: np.ndarray


def clip_rng(domain: str, seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that draws one clip (a stream apart from the image samples')."""
    return np.random.default_rng([int(seed), zlib.crc32(f"video/{domain}".encode()), SPLITS.index(split), int(index)])


def _warp(array: np.ndarray, center: tuple[float, float], scale: tuple[float, float], shift: tuple[float, float],
          fill) -> np.ndarray:
    """Nearest-neighbour warp: output pixel p takes input (p - center - shift) / scale + center."""
    h, w = array.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = (xs - center[0] - shift[0]) / scale[0] + center[0]
    sy = (ys - center[1] - shift[1]) / scale[1] + center[1]
    inside = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
    rx, ry = np.clip(np.round(sx), 0, w - 1).astype(int), np.clip(np.round(sy), 0, h - 1).astype(int)
    out = array[ry, rx]
    out[~inside] = fill
    return out


def generate_clips(domain: str, n: int, seed: int, split: str = "test", frames: int = FRAMES) -> list[Clip]:
    """n clips of `domain` (see the module doc)."""
    _check_domain(domain)
    _check_split(split)
    render = _RENDERERS[domain]
    clips = []
    for index in range(n):
        rng = clip_rng(domain, seed, split, index)
        h, w = _image_size(rng)
        target, target_mask = render(rng, h, w)
        filler, _ = render(rng, h, w)
        distractor, distractor_mask = render(rng, h, w)
        background = np.where(target_mask[..., None], filler, target)
        ys, xs = np.nonzero(target_mask)
        center = (float(xs.mean()), float(ys.mean()))
        angle = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(*DRIFT)
        phase = rng.uniform(0, 2 * np.pi)
        side = 1 if rng.random() < 0.5 else -1  # the distractor crosses left to right, or right to left
        enter, leave = frames // 4, frames - frames // 4
        images, masks = [], []
        for t in range(frames):
            breathe = DEFORMATION * np.sin(2 * np.pi * t / frames + phase)
            scale = (1 + breathe, 1 - breathe)
            shift = (speed * t * np.cos(angle), speed * t * np.sin(angle))
            frame = background.copy()
            if enter <= t < leave:  # from outside one side to outside the other
                progress = (t - enter + 0.5) / (leave - enter)
                offset = side * (progress * 2 - 1) * w
                moved = _warp(distractor_mask, center, (1, 1), (offset, 0), False)
                frame = np.where(moved[..., None], _warp(distractor, center, (1, 1), (offset, 0), 0), frame)
            mask = _warp(target_mask, center, scale, shift, False)
            frame = np.where(mask[..., None], _warp(target, center, scale, shift, 0), frame)
            images.append(_to_uint8(frame))
            masks.append(mask.astype(bool))
        points = fixed_test_points(masks[0], rng)
        clips.append(Clip(f"{domain}_{split}_clip{index:04d}", images, masks, points))
    return clips


def clip_samples(clips: list[Clip]) -> list[Sample]:
    """Every frame of `clips` as an image sample (points drawn by the trainer; its clip as its `group`), to learn a
    domain from its videos."""
    return [Sample(f"{clip.name}_{t:03d}", frame, mask, group=clip.name) for clip in clips
            for t, (frame, mask) in enumerate(zip(clip.frames, clip.masks)) if mask.any()]
