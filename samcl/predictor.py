"""A predictor in the style of Meta's `SamPredictor` that picks the module itself.

    predictor = samcl.predictor()
    predictor.set_image(image)                  # prefix + selection, cached
    masks, scores, low_res = predictor.predict(np.array([[x, y]]), np.array([1]))
    predictor.domain                            # which module was chosen ("base" = none)

What a new prompt costs: the heat injection makes the encoder's blocks after the selector block depend on the
prompt, so `set_image` caches the prefix (blocks up to the selector block), the pooled embedding and the
selection, and each `predict` runs the remaining blocks, the neck and the decoder. When the chosen class is
"base" (no module) the suffix does not depend on the prompt and the image embedding is cached too.
"""

from __future__ import annotations

import numpy as np
import torch

from .engine import Engine, InputPrompt
from .types import Prompt


class SamclPredictor:
    """set_image / predict on one image at a time, through the inference engine (`samcl.engine`)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.reset_image()

    def reset_image(self) -> None:
        self._tokens = None
        self._geometry = None
        self._choice: int | None = None
        self._base_embedding = None
        self._precision: str | None = None

    @torch.no_grad()
    def set_image(self, image, domain: str | None = None) -> None:
        """image: H x W x 3 uint8 RGB array or PIL image. `domain` forces a module instead of selecting."""
        engine = self.engine
        self._tokens, (self._geometry,) = engine.prefix([image])
        self._precision = engine.backbone.precision
        self._choice = engine.choose(self._tokens, engine.resolve(domain, 1))[0][0]
        self._base_embedding = None

    @property
    def precision(self) -> str:
        """The encoder's precision ("float32" or "bfloat16"; `SAMCL.predictor(precision=...)` sets it)."""
        return self.engine.backbone.precision

    @property
    def is_image_set(self) -> bool:
        return self._tokens is not None

    @property
    def domain(self) -> str:
        """The module chosen for the current image."""
        self._require_image()
        return self.engine.module_set.domain_name(self._choice)

    @torch.no_grad()
    def predict(self, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                box: np.ndarray | None = None, multimask_output: bool = False,
                return_logits: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """point_coords N x 2 (x, y) and point_labels N in original pixels; box (x0, y0, x1, y1).
        Returns masks M x H x W (bool, or logits if `return_logits`), scores M, low-res logits M x h x w."""
        self._require_image()
        engine = self.engine
        prompt = InputPrompt.of(Prompt.of(point_coords, point_labels, box), self._geometry, engine.device)
        if engine.module_set.module_for(self._choice) is not None:
            embedding = engine.suffix(self._tokens, [self._choice], [prompt])
        else:  # no module: the image embedding does not depend on the prompt
            if self._base_embedding is None:
                self._base_embedding = engine.backbone.suffix(self._tokens, engine.start_block, None)
            embedding = self._base_embedding
        result = engine.decode(embedding, prompt, self._geometry, multimask_output, self.domain, return_logits)
        masks = result.logits if return_logits else result.masks
        return masks, result.scores, result.low_res_logits

    def _require_image(self) -> None:
        if self._tokens is None:
            raise RuntimeError("call set_image(...) before predict()")
        if self._precision != self.engine.backbone.precision:  # the cached prefix is the other precision's
            raise RuntimeError(f"the precision changed to {self.engine.backbone.precision} after set_image(...) "
                               "(in float32): call set_image(...) again")
