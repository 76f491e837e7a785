"""The open-set answer of the statistics selectors: when does an image belong to none of the learned domains?

Set from training data only. A new domain's training images are split into up to `FOLDS` folds; the domain's
statistics are fitted without a fold and the distances of that fold's images to the domain are recorded (held out:
the distance a new image of the domain will have, not the smaller one of an image the statistics have seen). Their
logarithm is fitted by a normal distribution (mean m, deviation s). An image's score for domain k is then the share
of domain k's own images expected to lie farther away: 1 - Phi((log d - m) / s). The selector sends an image to base
when the score of its nearest domain is below that domain's threshold, and images far from every domain do.

The threshold: m and s come from a few dozen images, and the plain quantile m + z(1 - frr) s then lets through more
than `frr` of the domain's new images (measured: about three times the 1 % target with 48 images per domain). With
`tolerance` > 0 the cut is a one-sided normal tolerance bound instead: the point below which, with confidence
`tolerance`, at least 1 - frr of the domain's images lie, given the n images behind the fit (Natrella's closed form
of the factor k(n, frr, tolerance); k = 2.87 for n = 48 at 1 % and 95 %, 3.7 for n = 12, against the plain 2.33).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import torch

FOLDS = 8
#: Floor of the fitted spread: with a dozen images a domain's held-out distances may agree by chance.
MIN_SPREAD = 0.1


@dataclass(frozen=True)
class Calibration:
    """Normal fit (mean, spread) of a domain's held-out log distances; spread 0: no fit (fewer than 2 images)."""

    mean: float
    spread: float

    @classmethod
    def fit(cls, distances: torch.Tensor) -> "Calibration":
        logs = torch.log(distances.double().clamp_min(1e-12))
        if len(logs) < 2:
            return cls(float(logs.mean()) if len(logs) else 0.0, 0.0)
        return cls(float(torch.tensor(float(logs.mean())).float()),
                   float(torch.tensor(max(float(logs.std()), MIN_SPREAD)).float()))

    def score(self, distance: float) -> float:
        """The share of the domain's own images expected farther than `distance` (1.0 where there is no fit)."""
        if self.spread <= 0:
            return 1.0
        z = (math.log(max(distance, 1e-12)) - self.mean) / self.spread
        return 0.5 * math.erfc(z / math.sqrt(2))

    def looser(self, other: "Calibration", frr: float) -> "Calibration":
        """The fit that accepts more (the higher 1 - frr quantile of the log distance), for two merged domains."""
        if self.spread <= 0 or other.spread <= 0:
            return Calibration(self.mean, 0.0)
        z = NormalDist().inv_cdf(1 - frr) if 0 < frr < 1 else 0.0
        return max(self, other, key=lambda c: c.mean + z * c.spread)

    def to_list(self) -> list[float]:
        return [self.mean, self.spread]

    @classmethod
    def from_list(cls, values) -> "Calibration":
        return cls(float(values[0]), float(values[1]))


def _group_numbers(groups: Sequence[str | None] | None, count: int) -> torch.Tensor:
    """Per image the number its fold is taken from: its group's, in order of first appearance (an image of no group
    is a group of its own); the image's own index where there are fewer than two groups."""
    if groups is None or len(groups) != count:
        return torch.arange(count)
    numbers: dict = {}
    keys = [group if group is not None else (None, i) for i, group in enumerate(groups)]
    index = torch.tensor([numbers.setdefault(key, len(numbers)) for key in keys])
    return index if len(numbers) >= 2 else torch.arange(count)


def tolerance_factor(count: float, frr: float, tolerance: float) -> float:
    """k such that m + k s bounds the 1 - frr quantile of a normal sample of `count` values with confidence
    `tolerance` (Natrella 1963, the usual closed form for one-sided normal tolerance limits)."""
    z_p, z_g = NormalDist().inv_cdf(1 - frr), NormalDist().inv_cdf(tolerance)
    a = 1 - z_g ** 2 / (2 * (count - 1))
    b = z_p ** 2 - z_g ** 2 / count
    if a <= 0:  # too few values for any bound at this confidence: only the farthest images fall back
        return float("inf")
    return (z_p + math.sqrt(max(z_p ** 2 - a * b, 0.0))) / a


def fallback_threshold(frr: float, count: float, tolerance: float) -> float:
    """The score below which an image of a domain fitted on `count` held-out values goes to base."""
    if frr <= 0:
        return 0.0
    if tolerance <= 0:
        return frr
    if count < 3:  # no bound from two values: the fallback stays off for this domain
        return 0.0
    return 1 - NormalDist().cdf(tolerance_factor(count, frr, tolerance))


def held_out_distances(selector, phi: torch.Tensor, stats, groups: Sequence[str | None] | None = None) -> torch.Tensor:
    """Open-set distances (`open_distance`: under the domain's own statistics) of each of a new domain's images (N x M
    features) to that domain fitted without the image's fold. groups: each image's `Sample.group` (or None): a group
    lies in one fold, so that no held-out frame of a video is measured against statistics fitted on its neighbours
    (which would make the cut as tight as a frame's distance to its own video, and send new videos of the domain to
    base); images of no group, and a domain of fewer than two groups, fold one by one."""
    count = len(phi)
    if count < 2:
        return torch.zeros(0, dtype=torch.float64)
    index = _group_numbers(groups, count)
    folds = min(FOLDS, int(index.max()) + 1)
    out = torch.empty(count, dtype=torch.float64)
    for fold in range(folds):
        held = index % folds == fold
        rest = type(stats).of(phi[~held], stats.scatter is not None)
        out[held] = selector.open_distance(phi[held], rest)
    return out
