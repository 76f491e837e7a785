"""Where `samcl segment --out` writes, decided before any work, and how.

- a regular file (new or existing): atomic replace; its extension names the format (PNG, BMP, TIFF, WebP,
  all lossless); anything else is refused rather than written as PNG bytes under a wrong name
- a symlink: written through to its target (the link stays a link)
- a character or block device, a fifo: opened and written through, never replaced (PNG unless named)
- `-`: PNG bytes on stdout (one image; not with --json, not to a terminal)
- a folder (several images, or an existing folder): `<stem>.png` per image; two images with one stem are refused

`--overlay` (the mask drawn over its image) is planned and written the same way.

With `--auto` (`plan_auto`): a `.json` file gets the COCO results of every image and the label PNGs go beside it
(`<name>.png` for one image, `<name>-<stem>.png` for several); a folder gets `auto.json` and `<stem>.png` each.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import SamclError
from ..io import atomic_write_bytes, encode_image, name_max

FORMATS = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
LOSSY = {".jpg", ".jpeg", ".jpe"}


@dataclass(frozen=True)
class Target:
    shown: str  # what the user named (the mask path reported back)
    path: Path | None  # where bytes go (a symlink resolved); None for stdout
    kind: str  # "file" (atomic replace), "stream" (device or fifo: written through), "stdout"
    format: str


def plan(out: str, images: list[Path], json_on_stdout: bool, flag: str = "--out") -> list[Target]:
    """One target per image, or SamclError naming `flag` (--out, --overlay) and the problem."""
    if out == "-":
        if len(images) > 1:
            raise SamclError(f"{flag} -: several images need a folder")
        if json_on_stdout:
            raise SamclError(f"{flag} -: the picture goes to stdout, so --json cannot; give a file or drop --json")
        if sys.stdout.isatty():
            raise SamclError(f"{flag} -: stdout is a terminal; redirect it (> mask.png) or give a file")
        return [Target("-", None, "stdout", "PNG")]
    path = Path(out)
    folder = path.is_dir() or (len(images) > 1 and not path.exists())
    if len(images) > 1 and not folder:
        raise SamclError(f"{out}: several images need {flag} to be a folder, and this is a file")
    if len(images) > 1 and path.suffix.lower() in (*FORMATS, *LOSSY):
        raise SamclError(f"{out}: several images need {flag} to be a folder, not a {path.suffix} file")
    if not folder:
        return [_target(path)]
    owners: dict[str, Path] = {}
    for image in images:
        name = f"{image.stem}.png"
        if name in owners and owners[name].resolve() != image.resolve():
            raise SamclError(f"{owners[name]} and {image} would both be written to {path / name}; "
                             "segment them in separate calls or rename one")
        owners[name] = image
    return [_target(path / f"{image.stem}.png") for image in images]


def multimask(targets: list[Target], count: int = 3) -> list[list[Target]]:
    """`--multimask`: each planned mask file becomes `count` files, `<stem>_0<ext>` .. `<stem>_<count-1><ext>`
    beside it (SAM's masks in the decoder's order); stdout and devices take one mask only."""
    out = []
    for target in targets:
        if target.kind != "file":
            raise SamclError(f"--out {target.shown}: --multimask writes {count} files; give a file name or a folder")
        path = Path(target.shown)
        out.append([_target(path.with_name(f"{path.stem}_{i}{path.suffix}")) for i in range(count)])
    return out


def _target(path: Path) -> Target:
    real = Path(os.path.realpath(path))  # a symlink is written through: the link itself is kept
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise SamclError(f"{path}: cannot write ({exc.strerror or exc})") from None
    suffix = path.suffix.lower()
    if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)):
        return Target(str(path), real, "stream", FORMATS.get(suffix, "PNG"))
    if mode is not None and not stat.S_ISREG(mode):
        raise SamclError(f"{path}: not a regular file, device or fifo; give a file name such as mask.png")
    if suffix in LOSSY:
        raise SamclError(f"{path}: JPEG is lossy and would blur the mask's edges; use .png (or .bmp, .tif, .webp)")
    if suffix not in FORMATS:
        named = f"'{path.suffix}'" if path.suffix else "no extension"
        raise SamclError(f"{path}: {named} names no mask format; use .png (or .bmp, .tif, .webp)")
    length, longest = len(os.fsencode(real.name)), name_max(real.parent)
    if length > longest:
        raise SamclError(f"{path}: the file name is {length} bytes, longer than the folder takes ({longest}); "
                         "give a shorter --out or rename the image")
    parent = real.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise SamclError(f"{path}: cannot write ({parent} is not a writable folder)")
    return Target(str(path), real, "file", FORMATS[suffix])


def write(target: Target, mask: np.ndarray) -> None:
    data = encode_image(mask, target.format)  # (--overlay: an RGB picture)
    if target.kind == "stdout":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    elif target.kind == "stream":
        try:
            fd = os.open(target.path, os.O_WRONLY)  # no O_CREAT, no O_TRUNC: the node stays what it is
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        except OSError as exc:
            raise SamclError(f"{target.shown}: cannot write ({exc.strerror or exc})") from None
    else:
        atomic_write_bytes(target.path, data)


@dataclass(frozen=True)
class AutoTargets:
    """Where `samcl segment --auto` writes: the COCO results JSON, and one label PNG per image."""

    results: Path
    labels: list[Target]


def plan_auto(out: str, images: list[Path]) -> AutoTargets:
    """The results file and label PNGs for `--out` with --auto, or SamclError naming --out and the problem."""
    if out == "-":
        raise SamclError("--out -: --auto writes a JSON file and label PNGs; give a .json file or a folder")
    path = Path(out)
    if path.suffix.lower() == ".json" and not path.is_dir():
        stems = [path.stem] if len(images) == 1 else [f"{path.stem}-{image.stem}" for image in images]
        results, labels = path, [path.with_name(f"{stem}.png") for stem in stems]
    elif path.suffix and not path.is_dir():
        raise SamclError(f"{out}: --auto writes COCO results JSON: give a .json file or a folder")
    else:
        results, labels = path / "auto.json", [path / f"{image.stem}.png" for image in images]
    if len(set(labels)) != len(labels):
        raise SamclError(f"{out}: two images share a file name stem; segment them in separate calls or rename one")
    _target(results.with_suffix(".png"))  # the results file's folder is writable (the same checks as a mask's)
    return AutoTargets(results, [_target(label) for label in labels])


def write_label(target: Target, labels: np.ndarray) -> None:
    """An instance-id image (uint8 or uint16) as a lossless PNG."""
    write(target, labels)
