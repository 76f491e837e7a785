"""Datasets in the reference layout, read lazily.

    SPLIT/images/<stem>.(png|jpg|jpeg|bmp|tif|tiff|webp)
    SPLIT/masks/<stem>.(png|jpg|...)           foreground 255 (JPEG values near 0/255 are thresholded)
    SPLIT/masks/points.json                    optional: {"<mask file name>": [[x, y], ...]} or
                                               {"<mask file name>": {"points": [[x, y], ...], "labels": [1, 0, ...]}}

A *domain* folder holds `train/` and `test/` split folders; `resolve_split` accepts either.
Images and masks pair by file stem. Missing points are sampled from the mask with the seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..io import SamclError, read_image, read_mask
from ..prompts import sample_points, sample_rng
from .sample import Sample

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def resolve_split(path: str | Path, split: str) -> Path:
    """A split folder (images/ + masks/) as given, or `path/split` for a domain folder."""
    path = Path(path)
    if not path.is_dir():
        raise SamclError(f"{path}: no such data folder")
    if (path / "images").is_dir():
        return path
    if (path / split / "images").is_dir():
        return path / split
    raise SamclError(f"{path}: expected images/ and masks/ (a split folder) or {split}/images (a domain folder)")


def _files(folder: Path) -> dict[str, Path]:
    """Image files by stem. Hidden files (".DS_Store", macOS "._name.png" forks) are not data; two files
    with one stem (a.png, a.jpg) would pair ambiguously and are an error."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in files:
            raise SamclError(f"{path}: same name as {files[path.stem].name}; keep one file per name")
        files[path.stem] = path
    return files


class FolderDataset(Sequence[Sample]):
    """A split folder as a sequence of `Sample`s; images are read when indexed."""

    def __init__(self, split_dir: str | Path, seed: int = 0, points_per_image: int = 3, strict: bool = True):
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
        if strict and missing_mask:
            raise SamclError(f"{images[missing_mask[0]]}: no mask with the same name in {masks_dir}"
                             + (f" (and {len(missing_mask) - 1} more)" if len(missing_mask) > 1 else ""))
        if strict and missing_image:
            raise SamclError(f"{masks[missing_image[0]]}: no image with the same name in {images_dir}"
                             + (f" (and {len(missing_image) - 1} more)" if len(missing_image) > 1 else ""))
        self.stems = sorted(set(images) & set(masks))
        self.images = images
        self.masks = masks
        self.points = self._read_points(masks_dir / "points.json")

    def _read_points(self, path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if not path.is_file():
            return {}
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SamclError(f"{path}: malformed points.json ({exc})") from None
        if not isinstance(raw, dict):
            raise SamclError(f"{path}: malformed points.json (expected an object mapping mask names to points)")
        out = {}
        for key, value in raw.items():
            labels = None
            if isinstance(value, dict):
                value, labels = value.get("points"), value.get("labels")
            try:
                points = np.asarray(value, dtype=np.float32)
                labels = np.ones(len(points), np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
            except (TypeError, ValueError, OverflowError):
                raise SamclError(f"{path}: malformed points for {key!r} (expected [[x, y], ...])") from None
            if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0 or not np.isfinite(points).all():
                raise SamclError(f"{path}: malformed points for {key!r} (expected a non-empty [[x, y], ...])")
            if labels.shape != (len(points),) or not np.isin(labels, (0, 1)).all():
                raise SamclError(f"{path}: malformed labels for {key!r} (expected one 1 or 0 per point)")
            out[Path(key).stem] = (points, labels)
        return out

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
            height, width = mask.shape
            inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
            if not inside.all():
                raise SamclError(f"{self.root / 'masks' / 'points.json'}: point {points[~inside][0].tolist()} "
                                 f"for {self.masks[stem].name} lies outside the {width}x{height} image")
        elif mask.any():
            points = sample_points(mask, self.points_per_image, sample_rng(self.seed, index, 7919))
            labels = np.ones(len(points), np.int64)
        return Sample(stem, image, mask, points, labels)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]
