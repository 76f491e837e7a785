"""File helpers shared by the store, the datasets and the CLI: atomic writes and image reading.

New files get the permissions any Unix tool gives them (0666 minus the umask), and a file that is replaced
keeps its own; images and masks are read upright (EXIF orientation applied, `samcl.images`)."""

from __future__ import annotations

import io
import json
import math
import os
import re
import stat
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .images import HIGH_DEPTH_MODES, high_depth_peak, to_rgb_array, upright


class SamclError(Exception):
    """A problem with the user's input or files: shown as one line, exit code 2, nothing saved is changed."""


#: Test hook for fault injection: with SAMCL_FAULT_DELAY=<seconds> every step of a store write announces itself
#: on stderr ("samcl-fault: <step>") and then pauses, so a test can kill the writer between two file writes.
FAULT_DELAY_ENV = "SAMCL_FAULT_DELAY"


def fault_point(step: str) -> None:
    """A point between two steps of a write where a crash must leave a consistent store (no-op by default)."""
    delay = os.environ.get(FAULT_DELAY_ENV)
    if not delay:
        return
    print(f"samcl-fault: {step}", file=sys.stderr, flush=True)
    try:
        time.sleep(max(float(delay), 0.0))
    except ValueError:
        pass


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, rename over `path`, fsync the folder.

    A crash leaves either the old file or the new one at `path` (and possibly a stale `.<name>.*.tmp` beside it)."""
    path = Path(path)
    tmp = None
    try:
        _make_dirs(path.parent)
        mode = file_mode(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, mode)  # mkstemp creates 0600; a store or a mask is meant to be shareable like any file
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        fault_point(f"temporary file for {path.name} written")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        if tmp is not None:  # (already renamed if only the folder's fsync failed: then a no-op)
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # disk full, permission denied...: the old file is still in place
            raise SamclError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise


def file_mode(path: Path) -> int:
    """The permissions a write to `path` gives: the replaced file's own, or 0666 minus the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc; elsewhere set and restored at once)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _make_dirs(folder: Path) -> None:
    """mkdir -p, fsyncing the parent of every folder created so the new entries survive a power loss."""
    if folder.is_dir():
        return
    _make_dirs(folder.parent)
    try:
        folder.mkdir()
    except FileExistsError:
        if not folder.is_dir():
            raise
        return
    fsync_dir(folder.parent)


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
    try:
        kind = os.stat(path).st_mode
        if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)):  # a fifo would block for ever, a device never ends
            raise SamclError(f"{path}: is a {_file_kind(kind)}, not an image file")
        with warnings.catch_warnings():
            # PIL warns above its own limit; samcl's explicit limit below decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        if image.width * image.height > MAX_IMAGE_PIXELS:
            image.close()
            raise _too_large(path, image.width * image.height, f"{image.width}x{image.height} pixels, ")
        image.load()
        return upright(image)
    except FileNotFoundError:
        raise SamclError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SamclError(f"{path}: is a folder, not an image") from None
    except PermissionError:
        raise SamclError(f"{path}: permission denied") from None
    except Image.DecompressionBombError as exc:  # PIL's own guard fires first for the very largest
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(path, int(pixels.group(1)) if pixels else MAX_IMAGE_PIXELS + 1) from None
    except UnidentifiedImageError:
        raise SamclError(f"{path}: not a readable image (unknown format or corrupt header)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise SamclError(f"{path}: not a readable image ({_short(exc)})") from None


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _short(exc: BaseException) -> str:
    """An exception as a short single-line text."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def finite(value):
    """`value` with every non-finite float (NaN, inf) as None: JSON has no NaN, and `--json` output must parse."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return finite(value.item())
    return value


def print_json(value) -> None:
    """The one way `--json` output is printed: strict JSON (non-finite numbers as null)."""
    print(json.dumps(finite(value), allow_nan=False, default=float))

