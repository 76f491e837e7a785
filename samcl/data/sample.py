"""One annotated image, as every dataset in samcl yields it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Sample:
    """An image with its ground-truth mask and optional fixed prompt points.

    image: H x W x 3 uint8 RGB. mask: H x W bool (foreground True).
    points: N x 2 float (x, y) in image pixels, or None (then sampled from the mask with a seed).
    labels: N int (1 positive, 0 negative), or None (all positive).
    group: what the sample is not independent of, e.g. the video its frame comes from (None: nothing). A statistics
      selector holds a group's samples out together when it sets its open-set cut (`samcl.selector.calibration`).
      A dataset read lazily says it through a `group_of(index)` method (`FolderDataset(group_by=...)`).
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    group: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]


def groups_of(samples: Sequence[Sample], rows: list[int]) -> list[str | None] | None:
    """Each row's `Sample.group` without reading an image: from a list of samples, or a dataset's `group_of`
    (`FolderDataset --group-by`); None where no row has one (or the dataset cannot say without reading)."""
    if isinstance(samples, (list, tuple)):
        groups = [samples[i].group for i in rows]
    elif callable(getattr(samples, "group_of", None)):
        groups = [samples.group_of(i) for i in rows]
    else:
        return None
    return groups if any(group is not None for group in groups) else None
