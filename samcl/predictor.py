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

from .backbone.preprocess import ResizeGeometry
from .learner import SAMCL, Prompt


class SamclPredictor:
    def __init__(self, samcl: SAMCL):
        self.samcl = samcl
        self.reset_image()

    def reset_image(self) -> None:
        self._tokens: torch.Tensor | None = None
        self._geometry: ResizeGeometry | None = None
        self._choice: int | None = None
        self._base_embedding: torch.Tensor | None = None

    @torch.no_grad()
    def set_image(self, image, domain: str | None = None) -> None:
        """image: H x W x 3 uint8 RGB array or PIL image. `domain` forces a module instead of selecting."""
        samcl = self.samcl
        tensor, self._geometry = samcl.backbone.preprocess(image)
        self._tokens = samcl.backbone.prefix(tensor[None].to(samcl.device), samcl.selector_block)
        forced = samcl.resolve_domain(domain)
        self._choice = samcl.select(samcl.backbone.pool(self._tokens))[0] if forced is None else forced
        self._base_embedding = None

    @property
    def is_image_set(self) -> bool:
        return self._tokens is not None

    @property
    def domain(self) -> str:
        """The module chosen for the current image."""
        self._require_image()
        return self.samcl.domain_name(self._choice)

    @torch.no_grad()
    def predict(self, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                box: np.ndarray | None = None, multimask_output: bool = False,
                return_logits: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """point_coords N x 2 (x, y) and point_labels N in original pixels; box (x0, y0, x1, y1).
        Returns masks M x H x W (bool, or logits if `return_logits`), scores M, low-res logits M x h x w."""
        self._require_image()
        samcl = self.samcl
        prompt = Prompt.of(point_coords, point_labels, box)
        injection = None
        if samcl.module_for(self._choice) is not None:
            injection = samcl.injection([self._choice], samcl.heat([prompt], [self._geometry]))
            embedding = samcl.backbone.suffix(self._tokens, samcl.selector_block + 1, injection)
        else:
            if self._base_embedding is None:
                self._base_embedding = samcl.backbone.suffix(self._tokens, samcl.selector_block + 1, None)
            embedding = self._base_embedding
        result = samcl.decode_one(embedding, prompt, self._geometry, multimask_output, self.domain, return_logits)
        masks = result.logits if return_logits else result.masks
        return masks, result.scores, result.low_res_logits

    def _require_image(self) -> None:
        if self._tokens is None:
            raise RuntimeError("call set_image(...) before predict()")
