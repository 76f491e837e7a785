"""Automatic ("everything") masks with the routed module: Meta's `SamAutomaticMaskGenerator` on the engine.

    result = samcl.generate([image], config=AutoMaskConfig(points_per_side=16))[0]
    result.domain, result.domain_score          # the domain whose module ran ("base": none) and its selector score
    result.records[0]["segmentation"], ["bbox"]   # one record per mask, with Meta's keys

Per image: the prefix runs once, the selector picks the module from its pooled features (or `force`), and the
suffix runs once with that module's rows and no heat (zero heatmap: no prompt), so the encoder costs what one
prompt's does. Then Meta's steps: a grid of single positive points, decoded `points_per_batch` at a time with three
masks each (the embedding broadcast over the batch), filtered by predicted IoU and stability score, binarised,
boxed, deduplicated by box NMS per crop; crop layers repeat this on overlapping crops (each crop its own encoder
pass on the module chosen for the whole image) and NMS across crops prefers smaller crops; small holes and islands
are removed last when `min_mask_region_area` is set. `samcl.inference.amg` holds the ported steps; masks are kept
as COCO RLE (`samcl.io.masks`, pycocotools) between steps, as Meta keeps RLEs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..backbone import tokens as batch_ops
from .._renamed import renamed_attribute
from ..io.images import to_rgb_array
from ..io.masks import coco_rle, coco_rles, rle_area, rle_bbox, rle_to_mask, uncompressed_rle
from ..options import config, option
from . import amg

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
#: Meta's `Sam.mask_threshold`: logits above it are the mask.
MASK_THRESHOLD = 0.0


@config
class AutoMaskConfig:
    """How automatic masks are made: Meta's `SamAutomaticMaskGenerator` arguments, names and defaults (their
    defaults were chosen for SAM ViT-H; a small or fresh model predicts lower IoU, so lower `pred_iou_thresh`)."""

    points_per_side: int = option(32, "points along each side of the image's prompt grid (points_per_side^2 "
                                      "single-point prompts)", low=1, high=1024, integer=True)
    points_per_batch: int = option(64, "grid points decoded together (more: faster, more memory)",
                                   low=1, high=65536, integer=True)
    pred_iou_thresh: float = option(0.88, "keep masks whose predicted IoU exceeds this (0: keep all)", low=0, high=1)
    stability_score_thresh: float = option(0.95, "keep masks whose stability score (IoU of the mask thresholded "
                                                 "at +/- the offset) is at least this (0: keep all)", low=0, high=1)
    stability_score_offset: float = option(1.0, "how far the logit cut-off moves for the stability score",
                                           low=0, high=1000)
    box_nms_thresh: float = option(0.7, "box IoU above which the lower-scored of two masks is dropped",
                                   low=0, high=1)
    crop_n_layers: int = option(0, "crop layers: layer i reruns on (2^i)^2 overlapping crops of the image "
                                   "(more masks of small objects; each crop costs an encoder pass)",
                                low=0, high=4, integer=True)
    crop_nms_thresh: float = option(0.7, "box IoU for dropping duplicates between crops", low=0, high=1)
    crop_overlap_ratio: float = option(512 / 1500, "crops of the first layer overlap by this share of the image's "
                                                   "short side", low=0, high=1, high_open=True)
    crop_n_points_downscale_factor: int = option(1, "layer i's grid has points_per_side / factor^i points a side",
                                                 low=1, high=1024, integer=True)
    min_mask_region_area: int = option(0, "fill holes and drop islands smaller than this many pixels, then NMS "
                                          "again (0: off)", low=0, high=1 << 40, integer=True)
    output_mode: str = option("binary_mask", "the records' segmentation: binary_mask (H x W bool), "
                                             "uncompressed_rle, or coco_rle (counts as a str)", choices=OUTPUT_MODES)

    def point_grids(self) -> list[np.ndarray]:
        return amg.build_all_layer_point_grids(self.points_per_side, self.crop_n_layers,
                                               self.crop_n_points_downscale_factor)


@dataclass
class GeneratedMasks:
    """One image's automatic masks.

    Arguments:
      domain (str): the domain whose module ran ("base": the base model ran).
      domain_score (float | None): the selector's score for `domain` (None when forced or nothing is learned).
      records (list[dict]): one per mask with Meta's keys: segmentation (per `output_mode`), area (pixels), bbox
        [x, y, w, h] (Meta's: w and h from the first to the last pixel), predicted_iou, point_coords [[x, y]],
        stability_score, crop_box [x, y, w, h].
      size (tuple[int, int]): the image's height and width.
    """

    domain: str
    domain_score: float | None
    records: list[dict] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)
    selector_score = renamed_attribute("selector_score", "domain_score")


@dataclass
class _Masks:
    """Masks between steps (Meta's `MaskData`): compressed RLEs and per-mask tensors, filtered together."""

    rles: list
    boxes: torch.Tensor  # N x 4 XYXY int64
    iou: torch.Tensor  # N float32
    points: torch.Tensor  # N x 2 float64, image pixels
    stability: torch.Tensor  # N float32
    crop_boxes: torch.Tensor  # N x 4 XYXY int64

    def take(self, keep: torch.Tensor) -> "_Masks":
        keep = torch.as_tensor(keep).cpu()
        index = keep.nonzero().flatten() if keep.dtype == torch.bool else keep
        return _Masks([self.rles[i] for i in index.tolist()], self.boxes[index], self.iou[index],
                      self.points[index], self.stability[index], self.crop_boxes[index])

    @staticmethod
    def cat(parts: Sequence["_Masks"]) -> "_Masks":
        return _Masks([r for p in parts for r in p.rles], *(torch.cat([getattr(p, name) for p in parts]) for name in
                                                             ("boxes", "iou", "points", "stability", "crop_boxes")))


@torch.no_grad()
def generate_masks(engine, prepared: Sequence, images: Sequence[np.ndarray | None], *,
                   config: AutoMaskConfig | None = None, force: str | Sequence[str | None] | None = None,
                   fallback: bool | None = None) -> list[GeneratedMasks]:
    """Automatic masks of prepared images (`Engine.prepare`), each on its routed (or forced) module, no heat.

    Arguments:
      engine (Engine): the inference engine.
      prepared (Sequence[PreparedImage]): the images' prefixes and pooled features.
      images (Sequence[np.ndarray | None]): their H x W x 3 uint8 pixels; needed only with crop layers (a crop
        runs its own encoder pass), else None is fine.
      config (AutoMaskConfig | None): the generator's settings (None: Meta's defaults).
      force, fallback: as `Engine.run`.

    Returns:
      (list[GeneratedMasks]): one per image.
    """
    config = AutoMaskConfig() if config is None else config
    if len(images) != len(prepared):
        raise ValueError(f"{len(prepared)} prepared images but {len(images)} images")
    chosen, scores = engine.route(torch.stack([p.pooled for p in prepared]), engine.resolve(force, len(prepared)),
                                  fallback)
    grids = config.point_grids()
    out = []
    for j, image in enumerate(prepared):
        height, width = image.size
        boxes, layers = amg.generate_crop_boxes((height, width), config.crop_n_layers, config.crop_overlap_ratio)
        if len(boxes) > 1 and images[j] is None:
            raise ValueError("crop layers need the image's pixels (each crop runs its own encoder pass)")
        parts = []
        for box, layer in zip(boxes, layers):
            crop = image if layer == 0 else engine.prepare([_crop_pixels(images[j], box)], keep=False)[0]
            embedding = engine.image_embeddings([crop], [chosen[j]])[0]
            parts.append(_process_crop(engine, embedding, crop.geometry, box, grids[layer], (height, width), config))
        masks = _Masks.cat(parts)
        if len(boxes) > 1:  # duplicates across crops: the mask from the smaller crop wins
            masks = masks.take(amg.nms(masks.boxes.float(), 1 / amg.box_area(masks.crop_boxes),
                                       config.crop_nms_thresh))
        if config.min_mask_region_area > 0:
            masks = _remove_small_regions(masks, config.min_mask_region_area,
                                          max(config.box_nms_thresh, config.crop_nms_thresh))
        out.append(GeneratedMasks(engine.module_set.domain_name(chosen[j]), scores[j],
                                  _records(masks, config.output_mode), (height, width)))
    return out


def generate_images(engine, images: Sequence, *, config: AutoMaskConfig | None = None,
                    force: str | Sequence[str | None] | None = None, fallback: bool | None = None
                    ) -> list[GeneratedMasks]:
    """`SAMCL.generate`: automatic masks of images (H x W x 3 uint8 RGB arrays or PIL images, any sizes) on each
    one's routed module (or `force`; `fallback` as `SAMCL.segment`), with `config` (None: Meta's defaults).
    Returns one `GeneratedMasks` per image."""
    images = [to_rgb_array(image) for image in images]
    return generate_masks(engine, engine.prepare(images, keep=False), images, config=config, force=force,
                          fallback=fallback)


def _crop_pixels(image: np.ndarray, box: list[int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def _process_crop(engine, embedding, geometry, box: list[int], grid: np.ndarray, size: tuple[int, int],
                  config: AutoMaskConfig) -> _Masks:
    """One crop's masks: its grid decoded in batches, NMS within the crop, then in whole-image coordinates."""
    x0, y0, x1, y1 = box
    points = grid * np.array([x1 - x0, y1 - y0], dtype=np.float64)[None]  # the grid in the crop's pixels
    parts = [_process_batch(engine, embedding, geometry, points[start:start + config.points_per_batch], box, size,
                            config) for start in range(0, len(points), config.points_per_batch)]
    masks = _Masks.cat(parts)
    masks = masks.take(amg.nms(masks.boxes.float(), masks.iou, config.box_nms_thresh))
    masks.boxes = masks.boxes + torch.tensor([[x0, y0, x0, y0]])
    masks.points = masks.points + torch.tensor([[x0, y0]], dtype=torch.float64)
    masks.crop_boxes = torch.tensor([box] * len(masks.rles), dtype=torch.int64).reshape(-1, 4)
    return masks


def _process_batch(engine, embedding, geometry, points: np.ndarray, box: list[int], size: tuple[int, int],
                   config: AutoMaskConfig) -> _Masks:
    """A batch of grid points, one positive point each: three masks a point, filtered as Meta's generator does."""
    count = len(points)
    broadcast = batch_ops.map_batch(lambda t: t.expand(count, *t.shape[1:]), embedding)  # a view, no copy
    device = engine.device
    coords = geometry.coords_to_input(points).to(device)[:, None, :]  # count x 1 x 2, model-input pixels
    labels = torch.ones(count, 1, dtype=torch.long, device=device)
    low_res, iou = engine.backbone.decode(broadcast, coords, labels, None, True)
    logits = geometry.logits_to_original(low_res.float()).flatten(0, 1)  # (count x 3) x h x w, the crop's pixels
    iou = iou.float().flatten(0, 1)
    per_mask = torch.as_tensor(points.repeat(low_res.shape[1], axis=0))
    keep = iou > config.pred_iou_thresh if config.pred_iou_thresh > 0 else torch.ones_like(iou, dtype=torch.bool)
    logits, iou, per_mask = logits[keep], iou[keep], per_mask[keep.cpu()]
    stability = amg.stability_score(logits, MASK_THRESHOLD, config.stability_score_offset)
    if config.stability_score_thresh > 0:
        keep = stability >= config.stability_score_thresh
        logits, iou, per_mask, stability = logits[keep], iou[keep], per_mask[keep.cpu()], stability[keep]
    masks = logits > MASK_THRESHOLD
    boxes = amg.masks_to_boxes(masks)
    height, width = size
    keep = ~amg.near_crop_edge(boxes, box, [0, 0, width, height])
    masks, boxes, iou, per_mask, stability = masks[keep], boxes[keep], iou[keep], per_mask[keep.cpu()], stability[keep]
    rles = coco_rles(amg.uncrop_masks(masks, box, height, width).cpu().numpy())
    return _Masks(rles, boxes.cpu(), iou.cpu(), per_mask, stability.float().cpu(),
                  torch.zeros(len(rles), 4, dtype=torch.int64))


def _remove_small_regions(masks: _Masks, area: int, threshold: float) -> _Masks:
    """Meta's `postprocess_small_regions`: holes and islands under `area` pixels removed, NMS again preferring
    unchanged masks; the changed masks that survive take their new shape and box."""
    if not masks.rles:
        return masks
    cleaned, unchanged = [], []
    for rle in masks.rles:
        mask, holes = amg.remove_small_regions(rle_to_mask(rle), area, "holes")
        mask, islands = amg.remove_small_regions(mask, area, "islands")
        cleaned.append(torch.as_tensor(mask))
        unchanged.append(float(not (holes or islands)))
    stacked = torch.stack(cleaned)
    boxes = amg.masks_to_boxes(stacked)
    keep = amg.nms(boxes.float(), torch.as_tensor(unchanged), threshold)
    for i in keep.tolist():
        if unchanged[i] == 0.0:
            masks.rles[i] = coco_rle(cleaned[i].numpy())
            masks.boxes[i] = boxes[i]
    return masks.take(keep)


def _xywh(box) -> list:
    x0, y0, x1, y1 = box
    return [x0, y0, x1 - x0, y1 - y0]


def _records(masks: _Masks, output_mode: str) -> list[dict]:
    """Meta's records, in the order the masks were kept."""
    records = []
    for i, rle in enumerate(masks.rles):
        if output_mode == "coco_rle":
            segmentation = rle
        elif output_mode == "binary_mask":
            segmentation = rle_to_mask(rle)
        else:
            segmentation = uncompressed_rle(rle_to_mask(rle))
        records.append({"segmentation": segmentation, "area": rle_area(rle),
                        "bbox": _xywh(masks.boxes[i].tolist()), "predicted_iou": float(masks.iou[i]),
                        "point_coords": [masks.points[i].tolist()], "stability_score": float(masks.stability[i]),
                        "crop_box": _xywh(masks.crop_boxes[i].tolist())})
    return records


def coco_results(result: GeneratedMasks, image_id: int, category_id: int = 1) -> list[dict]:
    """One image's masks as COCO results (what `pycocotools.cocoeval` and COCO tools read): image_id, category_id,
    segmentation (compressed RLE, counts a str), score (the predicted IoU), bbox (COCO's [x, y, w, h], w and h
    counting pixels, from `pycocotools.mask.toBbox`), area, and Meta's predicted_iou, stability_score,
    point_coords, crop_box, with the domain that ran."""
    out = []
    for record in result.records:
        segmentation = record["segmentation"]
        if isinstance(segmentation, np.ndarray):
            segmentation = coco_rle(segmentation)
        elif isinstance(segmentation.get("counts"), list):
            segmentation = coco_rle(rle_to_mask(segmentation))
        out.append({"image_id": image_id, "category_id": category_id, "segmentation": segmentation,
                    "score": record["predicted_iou"], "bbox": rle_bbox(segmentation), "area": record["area"],
                    "predicted_iou": record["predicted_iou"], "stability_score": record["stability_score"],
                    "point_coords": record["point_coords"], "crop_box": record["crop_box"],
                    "domain": result.domain})
    return out


def label_image(result: GeneratedMasks) -> np.ndarray:
    """H x W instance ids (0: background; mask k of `records` has id k + 1), larger masks painted first so a smaller
    one on top of a larger one stays visible: uint8 up to 255 masks, else uint16."""
    height, width = result.size
    dtype = np.uint8 if len(result.records) < 256 else np.uint16
    labels = np.zeros((height, width), dtype=dtype)
    order = sorted(range(len(result.records)), key=lambda k: -result.records[k]["area"])
    for k in order:
        segmentation = result.records[k]["segmentation"]
        mask = segmentation if isinstance(segmentation, np.ndarray) else rle_to_mask(segmentation)
        labels[mask] = k + 1
    return labels
