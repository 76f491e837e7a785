"""File helpers shared by the store, the datasets and the CLI: atomic writes and image reading."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class SamclError(Exception):
    """A problem with the user's input or files: shown as one line, exit code 2, nothing saved is changed."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, rename over `path`, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, data) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def atomic_write_png(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


#: Images larger than this many pixels are refused (PIL's decompression-bomb guard is a warning only).
MAX_IMAGE_PIXELS = 20_000 * 20_000


def read_image(path: Path) -> np.ndarray:
    """Any PIL-readable image -> H x W x 3 uint8 RGB (grayscale, RGBA, 16-bit and palette converted)."""
    from .backbone.preprocess import to_rgb_array

    with _open(path) as image:
        return to_rgb_array(image)


def read_mask(path: Path) -> np.ndarray:
    """8-bit (or 16-bit, RGB, palette) mask -> H x W bool; JPEG values near 0/255 are thresholded at half range."""
    with _open(path) as image:
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(image, dtype=np.float64)
            return array > (32767 if array.max(initial=0) > 255 else 127)
        if image.mode == "P":
            return np.asarray(image) > 0
        return np.asarray(image.convert("L")) > 127


def _open(path: Path) -> Image.Image:
    path = Path(path)
    try:
        image = Image.open(path)
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise SamclError(f"{path}: image of {image.width}x{image.height} pixels is too large")
        image.load()
        return image
    except FileNotFoundError:
        raise SamclError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise SamclError(f"{path}: not a readable image ({exc})") from None
