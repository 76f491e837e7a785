"""The data a user hands to samcl and gets back: a prompt for one image, and one image's prediction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Prompt:
    """The prompt for one image, in its original pixels (0-based x, y, as viewers show the image).

    Arguments:
      points (np.ndarray | None): N x 2 float32, the points' x, y.
      labels (np.ndarray | None): N int64, 1 for a positive point, 0 for a negative one.
      box (np.ndarray | None): 4 float32, x0, y0, x1, y1.

    Build it with `Prompt.of`, which converts and checks; a prompt needs at least a point or a box.
    """

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None

    @classmethod
    def of(cls, points=None, labels=None, box=None) -> "Prompt":
        """A prompt from array-likes.

        Arguments:
          points: N x 2 x, y (or None, or empty: no points).
          labels: N labels (1/0); None: every point positive.
          box: x0, y0, x1, y1, or None.

        Returns:
          (Prompt): with float32 points and box and int64 labels. Raises ValueError when the counts differ.
        """
        pts = None if points is None or len(points) == 0 else np.asarray(points, dtype=np.float32).reshape(-1, 2)
        lab = None if pts is None else (np.ones(len(pts), np.int64) if labels is None
                                        else np.asarray(labels, dtype=np.int64).reshape(-1))
        if pts is not None and len(lab) != len(pts):
            raise ValueError(f"{len(pts)} points but {len(lab)} labels")
        return cls(pts, lab, None if box is None else np.asarray(box, dtype=np.float32).reshape(4))


@dataclass
class Prediction:
    """One image's result (M masks: 1, or 3 with `multimask_output`).

    Arguments:
      masks (np.ndarray): M x H x W bool, at the image's original size.
      scores (np.ndarray): M float32, the decoder's predicted IoU of each mask.
      domain (str): the module that ran; "base" when none did (SAM itself: the base class, a forced "base", or
        the open-set fallback).
      low_res (torch.Tensor): M x h x w logits in the model-input frame (256 x 256 for SAM at 1024 px), on the model's device (copied to the
        host only when `low_res_logits` is read); what SamPredictor calls low_res_masks.
      logits (np.ndarray | None): M x H x W float32 logits at the original size, when asked for.
      selector_score (float | None): how sure the selector was of `domain` (statistics selectors: the calibrated
        share of that domain's own images lying farther away; below the store's cut the image ran on base);
        None when the domain was forced.
    """

    masks: np.ndarray
    scores: np.ndarray
    domain: str
    low_res: torch.Tensor
    logits: np.ndarray | None = None
    selector_score: float | None = None  # the selector's score for `domain` (None: the domain was forced)

    @property
    def low_res_logits(self) -> np.ndarray:
        """`low_res` as M x h x w float32 on the host."""
        return self.low_res.float().cpu().numpy()
