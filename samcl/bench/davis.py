"""DAVIS's video segmentation measures, computed as davis2017-evaluation (davis2017/metrics.py) computes them.

    J = region similarity: |M ∩ G| / |M ∪ G| (1 when both are empty)
    F = boundary F-measure: precision and recall of the 1-pixel boundaries of M and G, each boundary pixel
        matching when the other boundary lies within a disk of radius ceil(0.008 x the image diagonal)
    J&F = their mean

Boundaries follow DAVIS's `_seg2bmap` (a pixel is a boundary pixel where it differs from its right, lower or
lower-right neighbour; the last row compares to the right only, the last column downwards only, the corner is
never one); the disk is skimage's `disk(r)` (x^2 + y^2 <= r^2) and the dilation is a binary dilation by it
(DAVIS uses cv2.dilate, the same for a binary image). Semi-supervised sequences are scored without their first
and last frames, as DAVIS does (`evaluation.py`: `[:, 1:-1]`).
"""

from __future__ import annotations

import math

import numpy as np

BOUND_TH = 0.008


def jaccard(mask: np.ndarray, truth: np.ndarray) -> float:
    """J of a predicted mask against the ground truth (H x W, any truthy dtype)."""
    mask, truth = mask.astype(bool), truth.astype(bool)
    union = np.logical_or(mask, truth).sum()
    return 1.0 if union == 0 else float(np.logical_and(mask, truth).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """DAVIS's 1-pixel boundary map of a binary mask (see the module doc)."""
    seg = mask.astype(bool)
    right, down, diagonal = (np.zeros_like(seg) for _ in range(3))
    right[:, :-1] = seg[:, 1:]
    down[:-1, :] = seg[1:, :]
    diagonal[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ right) | (seg ^ down) | (seg ^ diagonal)
    bmap[-1, :] = seg[-1, :] ^ right[-1, :]
    bmap[:, -1] = seg[:, -1] ^ down[:, -1]
    bmap[-1, -1] = False
    return bmap


def _dilate(bmap: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by the disk of `radius` (outside the image counts as background)."""
    h, w = bmap.shape
    out = np.zeros_like(bmap)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy > radius * radius:
                continue
            out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] |= \
                bmap[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def boundary_f(mask: np.ndarray, truth: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """F of a predicted mask against the ground truth (DAVIS's `f_measure`, no void pixels)."""
    radius = int(bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*mask.shape)))
    predicted, expected = boundary_map(mask), boundary_map(truth)
    n_predicted, n_expected = int(predicted.sum()), int(expected.sum())
    if n_predicted == 0 or n_expected == 0:
        precision = 1.0 if n_predicted == 0 else 0.0
        recall = 1.0 if n_expected == 0 else 0.0
    else:
        precision = float((predicted & _dilate(expected, radius)).sum() / n_predicted)
        recall = float((expected & _dilate(predicted, radius)).sum() / n_expected)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def sequence_scores(masks: list[np.ndarray], truths: list[np.ndarray]) -> dict:
    """Mean J, F and J&F of one object through one sequence, its first and last frames left out (as DAVIS)."""
    if len(masks) != len(truths) or len(masks) < 3:
        raise ValueError(f"{len(masks)} masks for {len(truths)} frames: DAVIS scoring needs 3 frames or more")
    pairs = list(zip(masks, truths))[1:-1]
    j = float(np.mean([jaccard(m, g) for m, g in pairs]))
    f = float(np.mean([boundary_f(m, g) for m, g in pairs]))
    return {"J": j, "F": f, "J&F": (j + f) / 2}
