"""Decoding pixels into what the models read: H x W x 3 uint8 RGB, upright as viewers show it.

No model code here: the CLI, the server and SAM's preprocessing (`samcl.backbone.preprocess`) all read images
through it; files are opened with `samcl.io.files.open_regular` (no FIFO, no device). EXIF orientation (phone
photos store the sensor's pixels plus a rotation tag) is applied to every image and mask samcl reads, so masks,
points and boxes all live in the frame every image viewer shows.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import SamclError
from .files import atomic_write_bytes, one_line, open_regular

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


def atomic_write_png(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


#: Images with more pixels than this are refused before decoding (a decompression-bomb guard). It stays below
#: the point where PIL itself refuses (2 x PIL's MAX_IMAGE_PIXELS), so the limit is samcl's and the message too.
MAX_IMAGE_PIXELS = 150_000_000


def read_image(path: Path) -> np.ndarray:
    """Any PIL-readable image -> H x W x 3 uint8 RGB (grayscale, RGBA, 16-bit, float and palette converted),
    upright by its EXIF orientation."""
    with _open(path) as image:
        return to_rgb_array(image)


def read_mask(path: Path) -> np.ndarray:
    """Mask image -> H x W bool, upright by its EXIF orientation. 8-bit, RGB, RGBA: foreground above half range
    (JPEG values near 0/255 are thresholded at 127); 16-bit, 32-bit and float: above half of their range;
    palette: any index but 0. Integer masks holding only 0 and 1 (a common export) are read as 0/1."""
    with _open(path) as image:
        if image.mode in HIGH_DEPTH_MODES:
            array = np.nan_to_num(np.asarray(image, dtype=np.float32))
            if image.mode != "F" and array.max(initial=0) == 1:
                return array > 0
            return array > high_depth_peak(array) / 2
        if image.mode == "P":
            return np.asarray(image) > 0
        array = np.asarray(image.convert("L"))
        if array.max(initial=0) == 1:  # 0/1, not 0/255: thresholding at 127 would read it as empty
            return array > 0
        return array > 127


def _too_large(path: Path, pixels: int, size: str = "") -> SamclError:
    return SamclError(f"{path}: image of {size}{pixels / 1e6:.0f} megapixels exceeds samcl's limit of "
                      f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (a decompression-bomb guard); downscale it first")


def _open(path: Path) -> Image.Image:
    path = Path(path)
    handle = open_regular(path, "image")  # a fifo would block for ever, a device never ends
    try:
        with warnings.catch_warnings():
            # PIL warns above its own limit; samcl's explicit limit below decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(handle)
        if image.width * image.height > MAX_IMAGE_PIXELS:
            image.close()
            raise _too_large(path, image.width * image.height, f"{image.width}x{image.height} pixels, ")
        image.load()
        return upright(image)
    except PermissionError:
        raise SamclError(f"{path}: permission denied") from None
    except Image.DecompressionBombError as exc:  # PIL's own guard fires first for the very largest
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(path, int(pixels.group(1)) if pixels else MAX_IMAGE_PIXELS + 1) from None
    except UnidentifiedImageError:
        raise SamclError(f"{path}: not a readable image (unknown format or corrupt header)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise SamclError(f"{path}: not a readable image ({one_line(exc)})") from None
    finally:
        handle.close()  # the pixels are loaded: PIL needs the file no more
