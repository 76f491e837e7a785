"""Datasets in the reference layout, read lazily.

    SPLIT/images/<stem>.(png|jpg|jpeg|bmp|tif|tiff|webp|gif)
    SPLIT/masks/<stem>.(png|jpg|...)           foreground 255 or 1 (JPEG values near 0/255 are thresholded)
    SPLIT/masks/points.json                    optional, keyed by the image's or the mask's full file name:
        {"a.png": [[x, y], ...]}                                 0-based pixels of the image
        {"a.png": {"points": [[x, y], ...], "labels": [1, 0]}}   0-based pixels of the image
        {"a.jpg": [[[x, y], ...], [1, 1, ...]]}                  the reference code's file: points in the
                                                                 1024x1024 square the image is stretched to

A *domain* folder holds `train/` and `test/` split folders; `resolve_split` accepts either.
Images and masks pair by file stem; images (and masks) are read upright by their EXIF orientation.
Entries of points.json for files not in the folder are ignored (the reference's file covers a whole split).
The coordinate frame is the reference's square for its format and pixels otherwise, unless `points_frame`
says which; `points_note` says which was used. Missing points are sampled from the mask with the seed.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import SamclError
from ..io import quote, read_image, read_json_file, read_mask
from ..method.prompts import sample_points, sample_rng
from .sample import Sample

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
POINT_FRAMES = ("auto", "pixels", "square1024")
REFERENCE_SIDE = 1024  # the reference code stretches every image to this square before placing points
POINTS_LIMIT = 64 << 20  # the most a points.json may hold (the reference's for 10,000 images is about 2 MB)


def resolve_split(path: str | Path, split: str) -> Path:
    """A split folder (images/ + masks/) as given, or `path/split` for a domain folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SamclError(f"{path}: is a file; expected a data folder with images/ and masks/")
    if not path.is_dir():
        raise SamclError(f"{path}: no such data folder")
    if (path / "images").is_dir():
        return path
    if (path / split / "images").is_dir():
        return path / split
    raise SamclError(f"{path}: expected images/ and masks/ (a split folder) or {split}/images (a domain folder)")


def _files(folder: Path) -> dict[str, Path]:
    """Image files by stem. Hidden files (".DS_Store", macOS "._name.png" forks) are not data (hidden images
    are counted in a warning); two files with one stem (a.png, a.jpg) would pair ambiguously and are an error."""
    files: dict[str, Path] = {}
    hidden: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES and not path.is_dir():
            hidden.append(path.name)
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or path.is_dir():
            continue  # (a fifo or device under an image's name stays: reading it says what it is)
        if path.stem in files:
            raise SamclError(f"{path}: same name as {files[path.stem].name}; keep one file per name")
        files[path.stem] = path
    if hidden:  # said, not silently dropped: a user may have meant them as data
        warnings.warn(f"{folder}: {len(hidden)} hidden file{'s' * (len(hidden) > 1)} (name starting with '.', "
                      f"e.g. {quote(hidden[0])}) skipped", stacklevel=3)
    return files


class FolderDataset(Sequence[Sample]):
    """A split folder as a sequence of `Sample`s; images are read when indexed.

    Every image needs a mask of the same name, unless `skip_unlabeled` (then images without one are left out and
    listed in `unlabeled`) or not `strict` (then unpaired files on both sides are ignored). `group_by`: a regular
    expression whose first group, matched at the start of each file name's stem, is the image's `Sample.group`
    (e.g. "(.+)_\\d+$" for frames named <video>_<number>: a video's frames are held out together when the selector
    sets its open-set cut); every stem must match."""

    def __init__(self, split_dir: str | Path, *, seed: int = 0, points_per_image: int = 3, strict: bool = True,
                 points_frame: str = "auto", skip_unlabeled: bool = False, group_by: str | None = None):
        if points_frame not in POINT_FRAMES:
            raise ValueError(f"points_frame {points_frame!r}: expected one of {', '.join(POINT_FRAMES)}")
        self.group_by = _group_pattern(group_by)
        self.root = Path(split_dir)
        self.seed = seed
        self.points_per_image = points_per_image
        images_dir, masks_dir = self.root / "images", self.root / "masks"
        if not images_dir.is_dir():
            raise SamclError(f"{self.root}: no images/ folder")
        if not masks_dir.is_dir():
            raise SamclError(f"{self.root}: no masks/ folder")
        images, masks = _files(images_dir), _files(masks_dir)
        if not images:
            raise SamclError(f"{images_dir}: no images (expected .png or .jpg files)")
        missing_mask = sorted(set(images) - set(masks))
        missing_image = sorted(set(masks) - set(images))
        #: images left out because no mask has their name (`skip_unlabeled`), in name order
        self.unlabeled = [images[stem] for stem in missing_mask] if skip_unlabeled else []
        if skip_unlabeled and len(missing_mask) == len(images):
            raise SamclError(f"{masks_dir}: none of the {len(images)} images in {images_dir} has a mask")
        if strict and missing_mask and not skip_unlabeled:
            raise SamclError(f"{images[missing_mask[0]]}: no mask with the same name in {masks_dir}"
                             + (f" (and {len(missing_mask) - 1} more)" if len(missing_mask) > 1 else ""))
        if strict and missing_image:
            unread = sorted(p.name for p in images_dir.glob(f"{glob_escape(missing_image[0])}.*"))
            if unread:
                raise SamclError(f"{images_dir / unread[0]}: not a supported image type (use "
                                 f"{', '.join(sorted(IMAGE_SUFFIXES))})")
            raise SamclError(f"{masks[missing_image[0]]}: no image with the same name in {images_dir}"
                             + (f" (and {len(missing_image) - 1} more)" if len(missing_image) > 1 else ""))
        self.stems = sorted(set(images) & set(masks))
        self.images = images
        self.masks = masks
        self.points_file = masks_dir / "points.json"
        self.points, self.points_frame, self.points_note = read_points(self.points_file, self._names(), points_frame)
        self._positives = self._on_mask = 0  # fixed positive points seen so far, and those on their mask
        self._warned = False
        self.groups = [self._group(stem) for stem in self.stems] if self.group_by is not None else None

    def _group(self, stem: str) -> str:
        match = self.group_by.match(stem)
        if match is None or not match.group(1):
            raise SamclError(f"{self.images[stem]}: its name does not match group_by '{self.group_by.pattern}'",
                             field="group_by")
        return match.group(1)

    def group_of(self, index: int) -> str | None:
        """The group of image `index` (`group_by`), without reading it."""
        return None if self.groups is None else self.groups[index]

    def _names(self) -> dict[str, str]:
        """Full file name (image's and mask's) -> stem."""
        return {**{self.images[s].name: s for s in self.stems}, **{self.masks[s].name: s for s in self.stems}}

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        stem = self.stems[index]
        image = read_image(self.images[stem])
        mask = read_mask(self.masks[stem])
        if mask.shape != image.shape[:2]:
            hint = " (rotated: does the image carry an EXIF orientation?)" if mask.shape == image.shape[1::-1] else ""
            raise SamclError(f"{self.masks[stem]}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                             f"{image.shape[1]}x{image.shape[0]}{hint}")
        points, labels = self.points.get(stem, (None, None))
        if points is not None:
            points = self._to_pixels(stem, points, mask)
            self._check_on_mask(points, labels, mask)
        elif mask.any():
            points = sample_points(mask, self.points_per_image, sample_rng(self.seed, index, 7919))
            labels = np.ones(len(points), np.int64)
        return Sample(stem, image, mask, points, labels, group=self.group_of(index))

    def _to_pixels(self, stem: str, points: np.ndarray, mask: np.ndarray) -> np.ndarray:
        height, width = mask.shape
        frame_w, frame_h = (REFERENCE_SIDE, REFERENCE_SIDE) if self.points_frame == "square1024" else (width, height)
        inside = (points[:, 0] >= 0) & (points[:, 0] < frame_w) & (points[:, 1] >= 0) & (points[:, 1] < frame_h)
        if not inside.all():
            frame = "the 1024x1024 square frame" if self.points_frame == "square1024" else f"the {width}x{height} image"
            raise SamclError(f"{self.points_file}: point {points[~inside][0].tolist()} for {self.masks[stem].name} "
                             f"lies outside {frame}")
        if self.points_frame == "square1024":
            points = points * np.array([width / REFERENCE_SIDE, height / REFERENCE_SIDE], np.float32)
        return points

    def _check_on_mask(self, points: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> None:
        """Positive points in the wrong frame mostly miss their object: say so once, early and loudly."""
        positive = points[labels == 1].astype(int)
        self._positives += len(positive)
        self._on_mask += int(mask[positive[:, 1], positive[:, 0]].sum())
        if not self._warned and self._positives >= 10 and self._on_mask < self._positives / 2:
            self._warned = True
            other = "pixels" if self.points_frame == "square1024" else "square1024"
            warnings.warn(f"{self.points_file}: only {self._on_mask} of {self._positives} positive points so far lie on "
                          f"their mask, read in the {self.points_frame} frame; if they are in another frame, read "
                          f"them in the {other} frame (points_frame)", stacklevel=2)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def read_points(path: Path, names: dict[str, str], frame: str) -> tuple[dict, str, str | None]:
    """points.json -> ({stem: (points N x 2 float32, labels N int64)}, frame used, a note saying which)."""
    if not os.path.lexists(path):
        return {}, "pixels", None
    raw = read_json_file(path, POINTS_LIMIT, "points file", "malformed points.json")
    if not isinstance(raw, dict):
        raise SamclError(f"{path}: malformed points.json (expected an object mapping file names to points)")
    out, keys, reference = {}, {}, 0
    for key, value in raw.items():
        stem = names.get(key)
        if stem is None:
            continue  # a file not in this folder
        if stem in keys:
            raise SamclError(f"{path}: both {keys[stem]!r} and {key!r} give points for {stem}; keep one")
        keys[stem] = key
        points, labels, is_reference = _entry(path, key, value)
        reference += is_reference
        out[stem] = (points, labels)
    if not out:
        note = f"note: {path}: none of its {len(raw)} entries names a file here; points are sampled from the masks"
        return {}, "pixels", note if raw else None
    if frame == "auto":
        if 0 < reference < len(out):
            unclear = f"{path}: mixes the reference's [[points], [labels]] entries with others; the frame is unclear"
            raise SamclError(f"{unclear} (give points_frame 'pixels' or 'square1024')",
                             field="points_frame")
        frame, how = ("square1024" if reference else "pixels"), "detected"
    else:
        how = "as asked"
    if frame == "pixels":  # the plain formats' own frame: nothing to point out (a wrong frame still warns)
        return out, frame, None
    return out, frame, (f"note: {path}: {len(out)} of its {len(raw)} entries used; points read in the reference's "
                        f"1024x1024 square frame (x * width / 1024, y * height / 1024; {how}; the frame 'pixels' "
                        "to change: points_frame)")


def _entry(path: Path, key: str, value) -> tuple[np.ndarray, np.ndarray, bool]:
    """One entry: [[x, y], ...], {"points": ..., "labels": ...} or the reference's [[[x, y], ...], [l, ...]]."""
    labels, reference = None, False
    if isinstance(value, dict):
        value, labels = value.get("points"), value.get("labels")
    elif (isinstance(value, list) and len(value) == 2 and isinstance(value[0], list) and value[0]
          and isinstance(value[0][0], list)):
        value, labels, reference = value[0], value[1], True
    numbers = isinstance(value, list) and all(isinstance(p, list) and all(type(v) in (int, float) for v in p)
                                              for p in value)  # (numpy would read "3" and true as numbers)
    try:
        if not numbers:
            raise TypeError
        points = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        raise SamclError(f"{path}: malformed points for {key!r} (expected [[x, y], ...])") from None
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0 or not np.isfinite(points).all():
        raise SamclError(f"{path}: malformed points for {key!r} (expected a non-empty [[x, y], ...])")
    if labels is None:
        labels = [1] * len(points)
    if (not isinstance(labels, list) or len(labels) != len(points)
            or not all(type(v) in (int, float) and not (isinstance(v, float) and math.isnan(v)) and v in (0, 1)
                       for v in labels)):
        raise SamclError(f"{path}: malformed labels for {key!r} (expected one 1 or 0 per point, got {labels!r:.60})")
    return points, np.asarray(labels, dtype=np.int64), reference


def _group_pattern(group_by: str | None):
    """The compiled `group_by` (one group at least), or None."""
    if group_by is None:
        return None
    try:
        pattern = re.compile(group_by)
    except re.error as exc:
        raise SamclError(f"group_by '{group_by}': not a regular expression ({exc})", field="group_by") from None
    if pattern.groups < 1:
        raise SamclError(f"group_by '{group_by}': needs a group, e.g. '(.+)_\\d+$', whose match names the video",
                         field="group_by")
    return pattern
