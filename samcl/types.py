"""The data a user hands to samcl and gets back: a prompt for one image, and one image's prediction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._renamed import renamed_attribute
from .errors import SamclError

__all__ = ["Prediction", "Prompt", "PromptError"]


class PromptError(SamclError):
    """A prompt that does not fit its image. `code` names the problem as the HTTP API answers it: `no_prompt`,
    `point_outside`, `bad_box`, `box_outside`."""

    def __init__(self, code: str, message: str, *, field: str = "Prompt"):
        super().__init__(message, code=code, field=field)


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

    @staticmethod
    def check_box(box, what: str = "box") -> tuple[float, float, float, float]:
        """The one box-order check, for every front end (the API, the CLI's flag type, CVAT, Label Studio).

        Arguments:
          box: x0, y0, x1, y1.
          what (str): how the message names the box.

        Returns:
          (tuple[float, float, float, float]): the box as floats, when x0 <= x1 and y0 <= y1; else PromptError
          `bad_box`.
        """
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (x0 <= x1 and y0 <= y1):
            raise PromptError("bad_box", f"{what} {x0:g},{y0:g},{x1:g},{y1:g}: needs x0 <= x1 and y0 <= y1")
        return x0, y0, x1, y1

    def check(self, width: int | None = None, height: int | None = None) -> None:
        """The one check of a prompt against its image, for every front end (the API, the CLI, the server).

        Arguments:
          width, height: the image's size in pixels; None: check only that there is a prompt.

        Raises PromptError unless the prompt has a point or a box, every point lies inside the image
        (0 <= x < width, 0 <= y < height) and the box is ordered (x0 <= x1, y0 <= y1) and within it.
        """
        if self.points is None and self.box is None:
            raise PromptError("no_prompt", "no prompt: give at least one point or a box (Prompt)")
        if width is None or height is None:
            return
        for x, y in self.points if self.points is not None else ():
            if not (0 <= x < width and 0 <= y < height):
                raise PromptError("point_outside", f"point {x:g},{y:g} lies outside the {width}x{height} image")
        if self.box is not None:
            x0, y0, x1, y1 = self.check_box(self.box)
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                raise PromptError("box_outside", f"box {x0:g},{y0:g},{x1:g},{y1:g} reaches outside the "
                                                 f"{width}x{height} image")


@dataclass
class Prediction:
    """One image's result (M masks: 1, or 3 with `multimask_output`).

    Arguments:
      masks (np.ndarray): M x H x W bool, at the image's original size.
      scores (np.ndarray): M float32, the decoder's predicted IoU of each mask.
      domain (str): the domain whose module ran; "base" when the base model ran (a domain without a module, a
        forced "base", or the open-set fallback).
      low_res (torch.Tensor): M x h x w logits in the model-input frame (256 x 256 for SAM at 1024 px), on the model's device (copied to the
        host only when `low_res_logits` is read); what SamPredictor calls low_res_masks.
      logits (np.ndarray | None): M x H x W float32 logits at the original size, when asked for.
      domain_score (float | None): how sure the selector was of `domain` (statistics selectors: the calibrated
        share of that domain's own images lying farther away; below the store's cut the image ran on base);
        None when the domain was forced.
    """

    masks: np.ndarray
    scores: np.ndarray
    domain: str
    low_res: torch.Tensor
    logits: np.ndarray | None = None
    domain_score: float | None = None  # the selector's score for `domain` (None: the domain was forced)
    selector_score = renamed_attribute("selector_score", "domain_score")

    @property
    def low_res_logits(self) -> np.ndarray:
        """`low_res` as M x h x w float32 on the host."""
        return self.low_res.float().cpu().numpy()
