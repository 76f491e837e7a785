"""The data a user hands to samcl and gets back: a prompt for one image, and one image's prediction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Prompt:
    """Prompts for one image in original pixels (0-based x, y): points N x 2, labels N (1 positive, 0 negative),
    box (x0, y0, x1, y1)."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None

    @classmethod
    def of(cls, points=None, labels=None, box=None) -> "Prompt":
        pts = None if points is None or len(points) == 0 else np.asarray(points, dtype=np.float32).reshape(-1, 2)
        lab = None if pts is None else (np.ones(len(pts), np.int64) if labels is None
                                        else np.asarray(labels, dtype=np.int64).reshape(-1))
        if pts is not None and len(lab) != len(pts):
            raise ValueError(f"{len(pts)} points but {len(lab)} labels")
        return cls(pts, lab, None if box is None else np.asarray(box, dtype=np.float32).reshape(4))


@dataclass
class Prediction:
    """One image's result. masks: M x H x W bool at the original size; scores: M predicted IoU;
    domain: the module that ran ("base" = SAM without a module); low_res: M x h x w logits (a tensor on the
    model's device, copied to the host only when `low_res_logits` is read); logits: M x H x W at the original
    size when asked for; selector_score: how sure the selector was (statistics selectors: the calibrated share
    of that domain's own images farther away; below the store's target false-reject rate the image ran on base)."""

    masks: np.ndarray
    scores: np.ndarray
    domain: str
    low_res: torch.Tensor
    logits: np.ndarray | None = None
    selector_score: float | None = None  # the selector's score for `domain` (None: the domain was forced)

    @property
    def low_res_logits(self) -> np.ndarray:
        return self.low_res.float().cpu().numpy()
