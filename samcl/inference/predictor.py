"""A predictor in the style of Meta's `SamPredictor` that picks the module itself.

    predictor = samcl.predictor()
    predictor.set_image(image)                  # prefix, pooled features and selection
    masks, scores, low_res = predictor.predict(np.array([[x, y]]), np.array([1]))
    predictor.domain                            # which module was chosen ("base" = none)

A thin front end over the engine's two calls (`samcl.inference.engine`): `set_image` is `Engine.prepare` for one
image, and `predict` is `Engine.run` on it. What a new prompt costs: the heat injection makes the encoder's blocks
after the selector block depend on the prompt, so each `predict` runs the remaining blocks, the neck and the
decoder; when the chosen class is "base" (no module) the suffix does not depend on the prompt and the engine keeps
the image embedding, so a new prompt costs only the decoder.
"""

from __future__ import annotations

import numpy as np
import torch

from ..types import Prompt
from .engine import Engine


class SamclPredictor:
    """set_image / predict on one image at a time, through the inference engine (`samcl.inference.engine`)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.reset_image()

    def reset_image(self) -> None:
        self._prepared = None
        self._force: str | None = None
        self._choice: int | None = None
        self._precision: str | None = None

    @torch.no_grad()
    def set_image(self, image, *, force: str | None = None) -> None:
        """Compute the image's prefix and pick its module.

        Arguments:
          image (np.ndarray | PIL.Image.Image): H x W x 3 uint8 RGB.
          force (str | None): a domain's name (or "base") to run instead of the selector's pick.
        """
        engine = self.engine
        self._prepared = engine.prepare([image], keep=False)[0]  # held here, outside the shared cache
        self._precision = engine.backbone.precision
        self._force = force
        self._choice = engine.route(self._prepared.pooled[None], engine.resolve(force, 1))[0][0]

    @property
    def precision(self) -> str:
        """The encoder's precision ("float32" or "bfloat16"; `SAMCL.predictor(precision=...)` sets it)."""
        return self.engine.backbone.precision

    @property
    def is_image_set(self) -> bool:
        return self._prepared is not None

    @property
    def domain(self) -> str:
        """The module chosen for the current image ("base": none)."""
        self._require_image()
        return self.engine.module_set.domain_name(self._choice)

    @torch.no_grad()
    def predict(self, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                box: np.ndarray | None = None, multimask_output: bool = False,
                return_logits: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segment the current image with a prompt, in its original pixels (as Meta's `SamPredictor.predict`).

        Arguments:
          point_coords (np.ndarray | None): N x 2 x, y.
          point_labels (np.ndarray | None): N, 1 positive, 0 negative.
          box (np.ndarray | None): 4, x0, y0, x1, y1.
          multimask_output (bool): three masks instead of one.
          return_logits (bool): mask logits instead of booleans.

        Returns:
          (np.ndarray): M x H x W masks (bool, or float32 logits), M = 1 or 3.
          (np.ndarray): M predicted IoU, float32.
          (np.ndarray): M x h x w low-res logits, float32 (the decoder's own resolution).
        """
        self._require_image()
        force = self.engine.module_set.domain_name(self._choice)  # the pick of set_image, kept
        result = self.engine.run([self._prepared], [Prompt.of(point_coords, point_labels, box)],
                                 multimask_output=multimask_output, force=force, return_logits=return_logits)[0]
        masks = result.logits if return_logits else result.masks
        return masks, result.scores, result.low_res_logits

    def _require_image(self) -> None:
        if self._prepared is None:
            raise RuntimeError("call set_image(...) before predict()")
        if self._precision != self.engine.backbone.precision:  # the prepared prefix is the other precision's
            raise RuntimeError(f"the precision changed to {self.engine.backbone.precision} after set_image(...) "
                               "(in float32): call set_image(...) again")
