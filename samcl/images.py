"""Decoding pixels into what the models read: H x W x 3 uint8 RGB, upright as viewers show it.

No model code here: the file helpers (`samcl.io`) and SAM's preprocessing (`samcl.backbone.preprocess`) both
import it. EXIF orientation (phone photos store the sensor's pixels plus a rotation tag) is applied to every
image and mask samcl reads, so masks, points and boxes all live in the frame every image viewer shows.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

#: PIL modes with more than 8 bits per sample (16-bit, 32-bit integer, 32-bit float).
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")

_ORIENTATION_TAG = 0x0112


def upright(image: Image.Image) -> Image.Image:
    """The image rotated/flipped by its EXIF orientation tag (the image itself when it has none or 1)."""
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a malformed EXIF block: show the pixels as stored, like most viewers
        return image
    if orientation in (None, 1):
        return image
    return ImageOps.exif_transpose(image)


def high_depth_peak(array: np.ndarray) -> float:
    """The full-scale value of a high-bit-depth image, from its largest value: 1 (float in [0, 1]), 255 (8-bit
    values stored wider), 65535 (16-bit), or the maximum itself (anything larger)."""
    top = float(array.max(initial=0))
    for peak in (1.0, 255.0, 65535.0):
        if top <= peak and (peak > 1.0 or np.issubdtype(array.dtype, np.floating)):
            return peak
    return top


def _high_depth_to_uint8(array: np.ndarray) -> np.ndarray:
    array = np.nan_to_num(array.astype(np.float32, copy=False))
    return np.clip(array / high_depth_peak(array) * 255.0, 0, 255).round().astype(np.uint8)


def to_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """Any PIL image or H x W (x C) array -> H x W x 3 uint8 RGB. Wider samples (16-bit, 32-bit, float) are
    scaled from their full range (`high_depth_peak`); alpha is dropped; palettes are resolved; a PIL image's
    EXIF orientation is applied."""
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            array = _high_depth_to_uint8(array)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"expected an H x W, H x W x 3 or H x W x 4 image, got shape {array.shape}")
        return np.ascontiguousarray(array[:, :, :3])
    image = upright(image)
    if image.mode in HIGH_DEPTH_MODES:
        return to_rgb_array(_high_depth_to_uint8(np.asarray(image)))
    return np.asarray(image.convert("RGB"))
