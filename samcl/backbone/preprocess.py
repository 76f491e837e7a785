"""SAM's own input convention: longest side resized to the model's input size, padded, normalized.

transformers' `SamProcessor` needs torchvision, which is not available everywhere (and is a multi-GB
install with CUDA torch), so the few operations are done here with PIL and torch. The conventions follow
Meta's `ResizeLongestSide`: `scale = size / max(h, w)`, new sides rounded half up, bilinear resize,
zero padding at the bottom and right after normalization, coordinates scaled per axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image



@dataclass(frozen=True)
class ResizeGeometry:
    """Where an original image sits inside the square model input.

    `original` and `resized` are (height, width); `input_size` is the side of the square input.
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    input_size: int

    @classmethod
    def for_image(cls, height: int, width: int, input_size: int) -> "ResizeGeometry":
        scale = input_size / max(height, width)
        # at least one pixel: a very thin image (aspect beyond input_size:1) would otherwise resize to nothing
        resized = (max(int(height * scale + 0.5), 1), max(int(width * scale + 0.5), 1))
        return cls((height, width), resized, input_size)

    def coords_to_input(self, coords: np.ndarray | torch.Tensor) -> torch.Tensor:
        """... x 2 (x, y) coordinates in original pixels -> model-input pixels."""
        coords = torch.as_tensor(coords, dtype=torch.float32).clone()
        coords[..., 0] *= self.resized[1] / self.original[1]
        coords[..., 1] *= self.resized[0] / self.original[0]
        return coords

    def boxes_to_input(self, boxes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """... x 4 boxes (x0, y0, x1, y1) in original pixels -> model-input pixels."""
        boxes = torch.as_tensor(boxes, dtype=torch.float32)
        return self.coords_to_input(boxes.reshape(*boxes.shape[:-1], 2, 2)).reshape(boxes.shape)

    def logits_to_original(self, logits: torch.Tensor) -> torch.Tensor:
        """B x M x h x w low-res logits -> B x M x H x W at the original size (as Meta's postprocess_masks)."""
        size = self.input_size
        upsampled = F.interpolate(logits, (size, size), mode="bilinear", align_corners=False)
        upsampled = upsampled[..., : self.resized[0], : self.resized[1]]
        return F.interpolate(upsampled, self.original, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class StretchGeometry(ResizeGeometry):
    """The whole image stretched to the square input (no aspect ratio, no padding): SAM 2's input frame, and the
    frame of the authors' code (for modules imported from it, `samcl.reference`)."""

    @classmethod
    def for_image(cls, height: int, width: int, input_size: int) -> "StretchGeometry":
        return cls((height, width), (input_size, input_size), input_size)

    def logits_to_original(self, logits: torch.Tensor) -> torch.Tensor:
        """B x M x h x w low-res logits -> B x M x H x W at the original size (as Meta's SAM2Transforms)."""
        return F.interpolate(logits, self.original, mode="bilinear", align_corners=False)


def resize_longest(image: np.ndarray, geometry: ResizeGeometry) -> np.ndarray:
    """H x W x C uint8 -> resized uint8 (bilinear, like Meta's ResizeLongestSide)."""
    if image.shape[:2] == geometry.resized:
        return image
    pil = Image.fromarray(image)
    return np.asarray(pil.resize((geometry.resized[1], geometry.resized[0]), Image.Resampling.BILINEAR))


def normalize_and_pad(resized: np.ndarray, geometry: ResizeGeometry, mean: tuple, std: tuple) -> torch.Tensor:
    """h x w x 3 uint8 (already resized) -> 3 x S x S float, normalized then zero padded bottom/right."""
    tensor = torch.from_numpy(np.array(resized, dtype=np.uint8, copy=True)).permute(2, 0, 1).float()
    tensor = (tensor - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    pad_h = geometry.input_size - tensor.shape[1]
    pad_w = geometry.input_size - tensor.shape[2]
    return F.pad(tensor, (0, pad_w, 0, pad_h))


def mask_to_input(mask: np.ndarray, geometry: ResizeGeometry) -> torch.Tensor:
    """H x W bool mask -> S x S float {0, 1} in the model-input frame (nearest resize, zero padding)."""
    pil = Image.fromarray(mask.astype(np.uint8) * 255)
    resized = np.asarray(pil.resize((geometry.resized[1], geometry.resized[0]), Image.Resampling.NEAREST)) > 127
    out = torch.zeros(geometry.input_size, geometry.input_size)
    out[: geometry.resized[0], : geometry.resized[1]] = torch.from_numpy(resized).float()
    return out
