"""A predictor with Meta's `SamPredictor` interface (and SAM 2's batch calls) that picks the module itself.

    predictor = samcl.predictor()
    predictor.set_image(image)                  # prefix, pooled features and selection
    masks, scores, low_res = predictor.predict(np.array([[x, y]]), np.array([1]))   # 3 masks, as Meta's default
    masks, scores, low_res = predictor.predict(np.array([[x, y], [u, v]]), np.array([1, 0]),
                                               mask_input=low_res[[scores.argmax()]], multimask_output=False)
    predictor.domain                            # which module was chosen ("base" = none)

The calls, arguments, defaults and shapes are Meta's (`segment_anything/predictor.py`): `set_image`,
`set_torch_image`, `predict`, `predict_torch`, `get_image_embedding`, `reset_image`, `is_image_set`,
`original_size`, `input_size`, `features`; on the base model the outputs equal Meta's predictor on the same
weights (tests/test_predictor_meta.py). SAM 2's `set_image_batch` / `predict_batch` (`sam2_image_predictor.py`)
run several images. samcl's own options are keyword-only: `force` (a domain instead of the selector's pick) and
`refine` (which clicks heat the encoder, `samcl.inference.refine`).

A thin front end over the engine (`samcl.inference.engine`): `set_image` is `Engine.prepare` for one image and its
route, and `predict` is `Engine.run` on it. What a prompt costs: with no module (the base) the embedding does not
depend on the prompt, so every prompt costs only the decoder, as SAM's. With a module the heat makes the blocks
after the selector block depend on the prompt; under the default strategy ("first") the first click (or the box)
heats the encoder and the embedding is kept, so later clicks of the same object cost only the decoder.
"""

from __future__ import annotations

import numpy as np
import torch

from ..types import Prompt
from .engine import Engine, InputPrompt
from .refine import DEFAULT_REFINE, check_refine


class SamclPredictor:
    """set_image / predict on one image at a time, through the inference engine (`samcl.inference.engine`).

    Arguments:
      engine: the opened set's engine (`SAMCL.predictor()` makes this predictor).
      refine: the refinement strategy of `predict` ("first", "all" or "outside"; `samcl.inference.refine`).
    """

    def __init__(self, engine: Engine, *, refine: str = DEFAULT_REFINE):
        self.engine = engine
        self.refine = check_refine(refine)
        self.reset_image()

    def reset_image(self) -> None:
        """Forget the image (and its kept embeddings)."""
        self._prepared = None
        self._batch: list[tuple] = []
        self._choice: int | None = None
        self._precision: str | None = None
        self._last: Prompt | None = None

    # ------------------------------------------------------------------ images
    @torch.no_grad()
    def set_image(self, image, image_format: str = "RGB", *, force: str | None = None) -> None:
        """Compute the image's prefix and pick its module.

        Arguments:
          image (np.ndarray | PIL.Image.Image): H x W x 3 uint8.
          image_format (str): "RGB" or "BGR" (an array in OpenCV's channel order).
          force (str | None): a domain's name (or "base") to run instead of the selector's pick.
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format {image_format!r}: expected RGB or BGR")
        if image_format == "BGR":
            image = np.ascontiguousarray(np.asarray(image)[..., ::-1])
        self._use(self.engine.prepare([image], keep=False)[0], force)  # held here, outside the shared cache

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...], *,
                        force: str | None = None) -> None:
        """As Meta's: an image already resized by `ResizeLongestSide` (SAM's bases).

        Arguments:
          transformed_image (torch.Tensor): 1 x 3 x H x W, pixel values 0..255, longest side the model's input
            size (normalized and padded here).
          original_image_size (tuple[int, int]): (H, W) of the image before the resize.
          force (str | None): as `set_image`.
        """
        from ..backbone.preprocess import ResizeGeometry
        from ..backbone.sam import PIXEL_MEAN, PIXEL_STD

        backbone = self.engine.backbone
        size = getattr(backbone, "image_size", None)
        if getattr(backbone, "family", "sam") != "sam" or self.engine.reference:
            raise ValueError("set_torch_image takes SAM's longest-side input: use set_image on this base")
        if (transformed_image.ndim != 4 or transformed_image.shape[:2] != (1, 3)
                or max(transformed_image.shape[2:]) != size):
            raise ValueError(f"set_torch_image expects 1 x 3 x H x W with max(H, W) = {size}, got "
                             f"{tuple(transformed_image.shape)}")
        resized = tuple(int(v) for v in transformed_image.shape[2:])
        geometry = ResizeGeometry(tuple(int(v) for v in original_image_size[:2]), resized, size)
        pixels = transformed_image[0].detach().float().cpu()
        pixels = (pixels - torch.tensor(PIXEL_MEAN).view(3, 1, 1)) / torch.tensor(PIXEL_STD).view(3, 1, 1)
        tensor = torch.nn.functional.pad(pixels, (0, size - resized[1], 0, size - resized[0]))  # as Sam.preprocess
        self._use(self.engine.cache.from_pixels(tensor[None], [geometry], [geometry.original])[0], force)

    @torch.no_grad()
    def set_image_batch(self, image_list: list, *, force: str | None = None) -> None:
        """As SAM 2's: several images (each H x W x 3 uint8 RGB) in one prefix pass, for `predict_batch`."""
        if not isinstance(image_list, (list, tuple)) or not image_list:
            raise ValueError("set_image_batch expects a non-empty list of images")
        prepared = self.engine.prepare(list(image_list), keep=False)
        self.reset_image()
        self._precision = self.engine.backbone.precision
        chosen, _ = self.engine.route(torch.stack([p.pooled for p in prepared]),
                                      self.engine.resolve(force, len(prepared)))
        self._batch = list(zip(prepared, chosen))

    def _use(self, prepared, force: str | None) -> None:
        engine = self.engine
        self.reset_image()
        self._prepared, self._precision = prepared, engine.backbone.precision
        self._choice = engine.route(prepared.pooled[None], engine.resolve(force, 1))[0][0]

    # ------------------------------------------------------------------ what is set
    @property
    def precision(self) -> str:
        """The encoder's precision ("float32" or "bfloat16"; `SAMCL.predictor(precision=...)` sets it)."""
        return self.engine.backbone.precision

    @property
    def is_image_set(self) -> bool:
        return self._prepared is not None or bool(self._batch)

    @property
    def device(self) -> torch.device:
        return self.engine.device

    @property
    def domain(self) -> str:
        """The module chosen for the current image ("base": none)."""
        self._require_image()
        return self.engine.module_set.domain_name(self._choice)

    @property
    def original_size(self) -> tuple[int, int]:
        """(H, W) of the current image."""
        self._require_image()
        return tuple(self._prepared.geometry.original)

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the current image resized to the model's input (before padding)."""
        self._require_image()
        return tuple(self._prepared.geometry.resized)

    @property
    def features(self):
        """The image embedding (`get_image_embedding`)."""
        return self.get_image_embedding()

    @torch.no_grad()
    def get_image_embedding(self):
        """The image embedding the decoder reads (SAM: 1 x C x h x w): the base's when no module was chosen;
        with a module it depends on the heat, and is the one of the last `predict`'s prompt."""
        self._require_image()
        engine, prompt = self.engine, self._last
        if prompt is None:
            if engine.module_set.module_for(self._choice) is not None:
                raise RuntimeError(f"module {self.domain!r}: the embedding depends on the prompt; call predict first")
            prompt = Prompt.of([[0, 0]])
        return engine.embed([self._prepared], [self._choice], [prompt], self.refine)[0]

    # ------------------------------------------------------------------ prompts
    @torch.no_grad()
    def predict(self, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                box: np.ndarray | None = None, mask_input: np.ndarray | None = None, multimask_output: bool = True,
                return_logits: bool = False, *, refine: str | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segment the current image with a prompt in its original pixels (Meta's `SamPredictor.predict`).

        Arguments:
          point_coords (np.ndarray | None): N x 2 x, y (every click so far, in click order).
          point_labels (np.ndarray | None): N, 1 positive, 0 negative.
          box (np.ndarray | None): 4, x0, y0, x1, y1.
          mask_input (np.ndarray | None): 1 x h x w low-res logits of a previous prediction (SAM: 1 x 256 x 256).
          multimask_output (bool): three masks (Meta's default) instead of one.
          return_logits (bool): mask logits instead of booleans.
          refine (str | None): this call's refinement strategy (None: the predictor's).

        Returns:
          (np.ndarray): C x H x W masks (bool, or float32 logits), C = 3 or 1.
          (np.ndarray): C predicted IoU, float32.
          (np.ndarray): C x h x w low-res logits, float32 (what `mask_input` takes back).
        """
        self._require_image(single=True)
        if point_coords is not None and point_labels is None:
            raise ValueError("point_labels must be supplied if point_coords is supplied")
        prompt = Prompt.of(point_coords, point_labels, box)
        force = self.engine.module_set.domain_name(self._choice)  # the pick of set_image, kept
        result = self.engine.run([self._prepared], [prompt], multimask_output=multimask_output, force=force,
                                 return_logits=return_logits, mask_inputs=[_mask(mask_input)],
                                 refine=check_refine(refine or self.refine))[0]
        self._last = prompt
        masks = result.logits if return_logits else result.masks
        return masks, result.scores, result.low_res_logits

    @torch.no_grad()
    def predict_torch(self, point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                      boxes: torch.Tensor | None = None, mask_input: torch.Tensor | None = None,
                      multimask_output: bool = True, return_logits: bool = False, *, refine: str | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """B prompts on the current image, in the model-input frame (Meta's `SamPredictor.predict_torch`).

        Arguments:
          point_coords (torch.Tensor | None): B x N x 2, already transformed to the input frame.
          point_labels (torch.Tensor | None): B x N.
          boxes (torch.Tensor | None): B x 4, input frame.
          mask_input (torch.Tensor | None): B x 1 x h x w low-res logits.
          multimask_output, return_logits, refine: as `predict`.

        Returns:
          (torch.Tensor): B x C x H x W masks (bool, or logits) at the original size.
          (torch.Tensor): B x C predicted IoU.
          (torch.Tensor): B x C x h x w low-res logits.
        """
        self._require_image(single=True)
        engine, geometry = self.engine, self._prepared.geometry
        batch = next(t.shape[0] for t in (point_coords, boxes, mask_input) if t is not None)
        scale = torch.tensor([geometry.resized[1] / geometry.original[1], geometry.resized[0] / geometry.original[0]])
        prompts = []  # each prompt in original pixels, for its heat (the decoder takes the input frame as given)
        for j in range(batch):
            points = None if point_coords is None else (point_coords[j].float().cpu() / scale).numpy()
            labels = None if point_labels is None else point_labels[j].cpu().numpy()
            box = None if boxes is None else (boxes[j].float().cpu().view(2, 2) / scale).reshape(4).numpy()
            prompts.append(Prompt.of(points, labels, box))
        embeddings = engine.embed([self._prepared] * batch, [self._choice] * batch, prompts,
                                  check_refine(refine or self.refine))
        from ..backbone import tokens as batch_ops

        device = engine.device
        inputs = InputPrompt(None if point_coords is None else point_coords.to(device),
                             None if point_labels is None else point_labels.to(device),
                             None if boxes is None else boxes.to(device),
                             None if mask_input is None else mask_input.to(device))
        logits, iou, low_res = engine.decode_prompts(batch_ops.stack([batch_ops.take(e, 0) for e in embeddings]),
                                                     inputs, geometry, multimask_output)
        self._last = prompts[-1]
        return (logits if return_logits else logits > 0), iou, low_res

    @torch.no_grad()
    def predict_batch(self, point_coords_batch: list | None = None, point_labels_batch: list | None = None,
                      box_batch: list | None = None, mask_input_batch: list | None = None,
                      multimask_output: bool = True, return_logits: bool = False, normalize_coords: bool = True,
                      *, refine: str | None = None) -> tuple[list, list, list]:
        """As SAM 2's: one prompt per image of `set_image_batch`; each list holds one entry per image (None: no
        points / box / mask). `normalize_coords` False: coordinates are relative (0..1) to the image's size.
        Returns lists of masks, predicted IoU and low-res logits, as `predict` gives them per image."""
        if not self._batch:
            raise RuntimeError("call set_image_batch(...) before predict_batch()")
        self._check_precision()
        count = len(self._batch)
        lists = [point_coords_batch, point_labels_batch, box_batch, mask_input_batch]
        for values in lists:
            if values is not None and len(values) != count:
                raise ValueError(f"{count} images but {len(values)} prompts in a batch list")
        out: tuple[list, list, list] = ([], [], [])
        batch = self._batch
        try:
            for i, (prepared, choice) in enumerate(batch):
                coords, labels, box, mask = (None if v is None else v[i] for v in lists)
                if not normalize_coords:
                    height, width = prepared.geometry.original
                    coords = None if coords is None else np.asarray(coords, np.float32) * [width, height]
                    box = None if box is None else np.asarray(box, np.float32) * [width, height, width, height]
                self._prepared, self._choice = prepared, choice
                for part, value in zip(out, self.predict(coords, labels, box, mask, multimask_output,
                                                         return_logits, refine=refine)):
                    part.append(value)
        finally:
            self._prepared, self._choice, self._batch = None, None, batch
        return out

    def _require_image(self, single: bool = False) -> None:
        if self._prepared is None:
            if self._batch and single:
                raise RuntimeError("set_image_batch(...) set several images: use predict_batch()")
            raise RuntimeError("call set_image(...) before predict()")
        self._check_precision()

    def _check_precision(self) -> None:
        if self._precision != self.engine.backbone.precision:  # the prepared prefix is the other precision's
            raise RuntimeError(f"the precision changed to {self.engine.backbone.precision} after set_image(...) "
                               "(in float32): call set_image(...) again")


def _mask(mask_input) -> torch.Tensor | None:
    """`predict`'s mask_input (1 x h x w, or h x w) as a tensor, or None."""
    if mask_input is None:
        return None
    mask = torch.as_tensor(np.asarray(mask_input, dtype=np.float32))
    if mask.ndim == 3 and mask.shape[0] != 1 or mask.ndim not in (2, 3):
        raise ValueError(f"mask_input: expected 1 x h x w low-res logits, got {tuple(mask.shape)}")
    return mask
