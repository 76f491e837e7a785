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
from contextlib import contextmanager
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


def encode_image(array: np.ndarray, format: str = "PNG") -> bytes:
    """The one image encoder: an H x W mask (bool: 0/255; uint8 or uint16 values as they are) or an H x W x 3 RGB
    picture as lossless image bytes in `format` (Pillow's name: PNG, BMP, TIFF; WEBP is written lossless)."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format, **({"lossless": True} if format == "WEBP" else {}))
    return buffer.getvalue()


def atomic_write_png(path: Path, array: np.ndarray) -> None:
    atomic_write_bytes(path, encode_image(array))


#: Images with more pixels than this are refused before decoding (a decompression-bomb guard). It stays below
#: the point where PIL itself refuses (2 x PIL's MAX_IMAGE_PIXELS), so the limit is samcl's and the message too;
#: a caller may pass a stricter one (the server passes its configured cap).
MAX_IMAGE_PIXELS = 150_000_000


class ImageTooLarge(SamclError):
    """An image over the pixel limit, refused from its header before its pixels are decoded."""


def read_image(source: Path | bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Any PIL-readable image (a file path, or the file's bytes) -> H x W x 3 uint8 RGB (grayscale, RGBA,
    16-bit, float and palette converted), upright by its EXIF orientation; refused above `max_pixels`."""
    return load_image(open_image(source, max_pixels=max_pixels))


def read_mask(path: Path) -> np.ndarray:
    """Mask image -> H x W bool, upright by its EXIF orientation. 8-bit, RGB, RGBA: foreground above half range
    (JPEG values near 0/255 are thresholded at 127); 16-bit, 32-bit and float: above half of their range;
    palette: any index but 0. Integer masks holding only 0 and 1 (a common export) are read as 0/1."""
    with open_image(path) as opened:
        image = upright(opened)
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


def _too_large(where: str, pixels: int, max_pixels: int, size: str = "") -> ImageTooLarge:
    megapixels = f"{pixels / 1e6:.0f}" if pixels >= 10_000_000 else f"{pixels / 1e6:.2g}"
    return ImageTooLarge(f"{where}image of {size}{megapixels} megapixels exceeds the limit of "
                         f"{max_pixels / 1e6:g} megapixels (a decompression-bomb guard); downscale it first")


@contextmanager
def _read_errors(where: str, max_pixels: int):
    """Pillow's failures on a bad file as one SamclError naming it (`where`: "<path>: " or "")."""
    try:
        yield
    except SamclError:
        raise
    except PermissionError:
        raise SamclError(f"{where}permission denied") from None
    except Image.DecompressionBombError as exc:  # PIL's own guard fires first for the very largest
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(where, int(pixels.group(1)) if pixels else max_pixels + 1, max_pixels) from None
    except UnidentifiedImageError:
        raise SamclError(f"{where}not a readable image (unknown format or corrupt header)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise SamclError(f"{where}not a readable image ({one_line(exc)})") from None


def open_image(source: Path | bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """An image's header read (not its pixels: `load_image` decodes them), refused above `max_pixels`, so its
    size is known before decoding. `source`: a file path (opened with `open_regular`: no FIFO, no device) or
    the file's bytes. A path's image has its pixels loaded and the file closed (the path is named in errors)."""
    from_path = not isinstance(source, (bytes, bytearray, memoryview))
    where = f"{source}: " if from_path else ""
    handle = open_regular(Path(source), "image") if from_path else io.BytesIO(source)
    try:
        with _read_errors(where, max_pixels):
            with warnings.catch_warnings():
                # PIL warns above its own limit; samcl's explicit limit below decides instead.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(handle)
            if image.width * image.height > max_pixels:
                image.close()
                raise _too_large(where, image.width * image.height, max_pixels,
                                 f"{image.width}x{image.height} pixels, ")
            if from_path:
                image.load()  # the pixels in memory: PIL needs the file no more
            return image
    finally:
        if from_path:
            handle.close()


def load_image(image: Image.Image) -> np.ndarray:
    """An opened image's (`open_image`) pixels as H x W x 3 uint8 RGB, upright by EXIF."""
    with _read_errors("", image.width * image.height):  # (a path's image was loaded, and named, when opened)
        image.load()
        return to_rgb_array(upright(image))
