"""Datasets: `Sample` (an image, its mask, its fixed test points), folders of images and masks in ours and the
reference's layout (`folders.FolderDataset`), and the synthetic domains the demo and benchmark generate
(`synthetic`). Public names load on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

_WHERE = {"Sample": ".sample", "FolderDataset": ".folders", "resolve_split": ".folders", "read_points": ".folders",
          "synthetic": ".synthetic"}
__all__ = ["FolderDataset", "Sample", "read_points", "resolve_split", "synthetic"]
__getattr__, __dir__ = lazy_names(__name__, _WHERE)

if TYPE_CHECKING:
    from . import synthetic
    from .folders import FolderDataset, read_points, resolve_split
    from .sample import Sample
