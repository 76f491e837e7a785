"""The steps of Meta's automatic mask generator (`segment_anything.utils.amg` and the NMS it takes from
torchvision), ported to torch and numpy alone so that `samcl.inference.automatic` follows them exactly:

    build_point_grid(n)                    n x n points in [0, 1]^2 at the cells' centres
    generate_crop_boxes(size, layers, r)   the whole image, then (2^i)^2 overlapping crops per layer i
    stability_score(logits, t, offset)     IoU of the masks thresholded at t + offset and t - offset
    masks_to_boxes(masks)                  XYXY boxes (inclusive right/bottom pixel; 0s for an empty mask)
    nms(boxes, scores, threshold)          greedy box NMS as torchvision's (stable descending order)
    remove_small_regions(mask, area, mode) holes / islands under `area` pixels (8-connected, scipy.ndimage)

Meta's code: Apache 2.0, (c) Meta Platforms; the behaviour, names and conventions are theirs.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import torch


def build_point_grid(n_per_side: int) -> np.ndarray:
    """n^2 x 2 points (x, y) evenly spaced in [0, 1]^2, at the centres of an n x n grid of cells."""
    offset = 1 / (2 * n_per_side)
    one_side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(one_side[None, :], (n_per_side, 1))
    ys = np.tile(one_side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """The grid of each crop layer: layer i has int(n / scale^i) points a side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer ** i))) for i in range(n_layers + 1)]


def generate_crop_boxes(size: tuple[int, int], n_layers: int, overlap_ratio: float
                        ) -> tuple[list[list[int]], list[int]]:
    """Crop boxes XYXY of an image of `size` (h, w) and each one's layer: the whole image (layer 0), then per layer
    i >= 1 a (2^i) x (2^i) grid of crops overlapping by `overlap_ratio` of the short side (less in later layers)."""
    height, width = size
    short = min(height, width)
    boxes, layers = [[0, 0, width, height]], [0]

    def crop_len(length: int, count: int, overlap: int) -> int:
        return int(math.ceil((overlap * (count - 1) + length) / count))

    for layer in range(n_layers):
        per_side = 2 ** (layer + 1)
        overlap = int(overlap_ratio * short * (2 / per_side))
        crop_w, crop_h = crop_len(width, per_side, overlap), crop_len(height, per_side, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)])
            layers.append(layer + 1)
    return boxes, layers


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """N x H x W logits -> N: pixels above threshold + offset over pixels above threshold - offset (Meta's
    sums: int16 along rows, then int32)."""
    inner = (logits > (threshold + offset)).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    outer = (logits > (threshold - offset)).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    return inner / outer


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """N x H x W bool -> N x 4 XYXY int64: the first and last row and column holding the mask (inclusive), zeros
    for an empty mask (Meta's `batched_mask_to_box`)."""
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, dtype=torch.int64, device=masks.device)
    height, width = masks.shape[-2:]
    rows = masks.any(dim=-1)  # N x H
    cols = masks.any(dim=-2)  # N x W
    row_ids = torch.arange(height, device=masks.device)
    col_ids = torch.arange(width, device=masks.device)
    bottom = (rows * row_ids).amax(dim=-1)
    top = (rows * row_ids + height * ~rows).amin(dim=-1)
    right = (cols * col_ids).amax(dim=-1)
    left = (cols * col_ids + width * ~cols).amin(dim=-1)
    empty = (right < left) | (bottom < top)
    return torch.stack([left, top, right, bottom], dim=-1) * (~empty).unsqueeze(-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """N x 4 XYXY -> N areas (x1 - x0) * (y1 - y0), as torchvision's."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression as torchvision's `nms` (and `batched_nms` with one category): boxes in
    order of descending score (ties: the earlier first), each kept unless its IoU with a kept one exceeds
    `threshold`. IoU = overlap / (area_a + area_b - overlap) in float32. Returns the kept indices, best first."""
    count = boxes.shape[0]
    if count == 0:
        return torch.zeros(0, dtype=torch.int64)
    order = torch.sort(scores.detach().cpu(), descending=True, stable=True)[1]
    b = boxes.detach().cpu().float()[order].numpy()
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    width = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    overlap = width * height
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = overlap / (areas[:, None] + areas[None, :] - overlap)  # float32, as the kernel's
    over = ratio.astype(np.float64) > threshold  # the kernel compares its float with the double threshold
    suppressed = np.zeros(count, dtype=bool)
    keep = []
    for i in range(count):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.int64)]


def remove_small_regions(mask: np.ndarray, area: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes ("holes") or drop islands ("islands") of fewer than `area` pixels, 8-connected (Meta's, which
    uses OpenCV's connected components; scipy.ndimage labels the same regions). Returns the mask and whether it
    changed; an islands pass that would drop every region keeps the largest."""
    from scipy import ndimage

    holes = mode == "holes"
    working = holes ^ mask
    regions, count = ndimage.label(working, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(regions.ravel(), minlength=count + 1)[1:]
    small = [i + 1 for i, size in enumerate(sizes) if size < area]
    if not small:
        return mask, False
    fill = [0] + small
    if not holes:
        fill = [i for i in range(count + 1) if i not in fill]
        if not fill:
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True


def near_crop_edge(boxes: torch.Tensor, crop_box: list[int], image_box: list[int], atol: float = 20.0
                   ) -> torch.Tensor:
    """N x 4 XYXY boxes in crop pixels -> N bool: the box reaches within `atol` of an edge of the crop that is not
    an edge of the image (Meta's `is_box_near_crop_edge`: such a mask is probably cut by the crop)."""
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    image = torch.as_tensor(image_box, dtype=torch.float, device=boxes.device)
    x0, y0 = crop_box[:2]
    uncropped = (boxes + torch.tensor([[x0, y0, x0, y0]], device=boxes.device)).float()
    near_crop = torch.isclose(uncropped, crop[None, :], atol=atol, rtol=0)
    near_image = torch.isclose(uncropped, image[None, :], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)


def uncrop_masks(masks: torch.Tensor, crop_box: list[int], height: int, width: int) -> torch.Tensor:
    """N x h x w masks of a crop -> N x H x W in the whole image (zeros outside the crop)."""
    x0, y0, x1, y1 = crop_box
    if x0 == 0 and y0 == 0 and x1 == width and y1 == height:
        return masks
    pad_x, pad_y = width - (x1 - x0), height - (y1 - y0)
    return torch.nn.functional.pad(masks, (x0, pad_x - x0, y0, pad_y - y0), value=0)
