"""Bytes in and out of the API: uploaded images (with the size limits) and masks as PNG or COCO RLE.

    image = decode_image(data, max_pixels)        # H x W x 3 uint8, upright; ApiError 4xx naming the problem
    image = load_image(open_image(data, max_pixels))   # the same in two steps: the size is known in between
    png_base64(mask); coco_rle(mask) -> {"size": [h, w], "counts": "..."}; rle_to_mask(rle) (its inverse)

COCO RLE is pycocotools' own compressed form (`samcl.io.masks`, the one mask codec: `mask.encode` with the counts
as a str), so any COCO tool decodes it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from contextlib import contextmanager

import numpy as np
from PIL import Image

from .. import SamclError
from ..io import ImageTooLarge, coco_rle, encode_image, rle_to_mask, run_lengths  # noqa: F401 (COCO RLE)
from ..io import load_image as load_pixels, open_image as open_header  # the one decoder (`samcl.io.images`)
from .errors import ApiError


def image_id(data: bytes) -> str:
    """An image's id: a hash of its bytes, so the same upload gets the same id on every server process."""
    return hashlib.sha256(data).hexdigest()[:32]


def decode_base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", f"{what}: not valid base64") from None


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Image file bytes -> H x W x 3 uint8 RGB, upright by EXIF; refused before decoding above `max_pixels`."""
    return load_image(open_image(data, max_pixels))


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """The image's header read (not its pixels), refused above `max_pixels`: its size is known before decoding
    (`samcl.io.open_image`; its errors as 4xx answers)."""
    if not data:
        raise ApiError(400, "empty_image", "the image is empty (0 bytes)")
    with _answered():
        return open_header(data, max_pixels=max_pixels)


def load_image(image: Image.Image) -> np.ndarray:
    """An opened image's pixels as H x W x 3 uint8 RGB, upright by EXIF (`samcl.io.load_image`)."""
    with _answered():
        return load_pixels(image)


@contextmanager
def _answered():
    """The decoder's refusals as 4xx errors: 413 for an image over the limit, 400 for one that does not decode."""
    try:
        yield
    except ImageTooLarge as exc:
        raise ApiError(413, "image_too_large", str(exc)) from None
    except SamclError as exc:
        raise ApiError(400, "not_an_image", str(exc)) from None


#: Bytes per pixel of encoding a mask for an answer: the uint8 copy for PNG (1, and its scaled copy 1) or the
#: flattened column-major copy and run boundaries for RLE, with the bool mask (1) alive; and per run of an RLE:
#: its boundary (8), a Python int in the runs list (8 + 32) and its characters in the text (up to 8).
ENCODE_BYTES_PER_PIXEL = 3
RLE_BYTES_PER_RUN = 64


def encode_cost(mask: np.ndarray, mask_format: str) -> int:
    """Bytes to charge before `encoded_mask` (its runs counted for RLE: a noisy mask has many)."""
    cost = mask.size * ENCODE_BYTES_PER_PIXEL
    if mask_format == "rle" and mask.size:
        runs = 1 + int(np.count_nonzero(mask[1:, :] != mask[:-1, :])) + mask.shape[1]  # column-major: per column
        cost += runs * RLE_BYTES_PER_RUN
    return cost


def encoded_mask(mask: np.ndarray, mask_format: str) -> dict:
    """A /v1/segment answer's mask: {"format": "png", "data"} or {"format": "rle", "size", "counts"}."""
    if mask_format == "png":
        return {"format": "png", "data": png_base64(mask)}
    return {"format": "rle", **coco_rle(mask)}


def png_base64(mask: np.ndarray) -> str:
    """A H x W mask as an 8-bit grayscale PNG (foreground 255, `samcl.io.encode_image`), in base64."""
    return base64.b64encode(encode_image(mask.astype(bool))).decode("ascii")
