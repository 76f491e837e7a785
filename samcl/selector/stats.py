"""Statistics selectors: per domain a count, a mean and (FeCAM, RanPAC) a scatter matrix of the pooled features, never
the features themselves. A domain's statistics are computed once, from its own images, so they do not depend on
the order domains were learned in, removing a domain is dropping its entry (exactly what never learning it gives),
and two selectors' domains merge by concatenation (`merge`) or two domains by the parallel-axis rule (`merge_domains`).

    ncm     nearest class mean of the L2-normalised features
    fecam   FeCAM (Goswami et al. 2023): Mahalanobis distance to each domain under its covariance, shrunk toward the
            pooled within-class covariance and toward the identity, normalised to trace M. How far toward the pooled
            one: per domain, the Ledoit-Wolf intensity (Ledoit & Wolf 2004) lambda = beta / ||S - P||_F^2, where
            beta (the sampling variance of the domain's covariance S, from its own images: one number stored per
            domain) says how noisy S is and P is the pooled covariance; domains that share one shape get nearly the
            pooled covariance (what keeps 1,000 domains apart), domains with few images or their own shape keep
            theirs. A config with `shrink` set pulls every domain by that fixed count of pooled samples instead.
    ranpac  RanPAC (McDonnell et al. 2023): a fixed random projection with ReLU, ridge regression of one-hot targets
            from the Gram matrix (the sum of every domain's uncentred second moment) and the domain sums

Features wider than `proj_dim` are first multiplied by a fixed random matrix (seeded, stored), so a domain's scatter is
proj_dim x proj_dim whatever the backbone's width: 42 KB per domain at proj_dim 144 (float32, upper triangle).

The open-set answer (`samcl.selector.calibration`): each domain keeps the log-normal fit of its own held-out training
images' distances; an image whose chosen domain would see it farther than a share `frr` of that domain's own images
goes to base (the cut: `calibration.fallback_threshold`). The open-set distance uses the domain's own statistics
alone (`open_distance`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .._renamed import renamed_attribute, renamed_method
from .base import Selector
from .calibration import Calibration, fallback_threshold, held_out_distances
from .config import SelectorConfig, features_of

_IDENTITY_SHRINK = 0.1  # FeCAM's diagonal shrinkage: a share of the mean variance added to every variance


class DomainStats:
    """One domain: count n, mean (M), scatter sum (x - mean)(x - mean)^T (M x M, or None for NCM) and beta, the
    Ledoit-Wolf sampling variance of its covariance S = scatter / n: (1/n^2) sum_i ||z_i z_i^T - S||_F^2 over the
    centred features z_i (None without a scatter). Float64 values that are exactly float32 numbers, so a stored set
    reads back bit for bit. Never changed in place."""

    __slots__ = ("count", "mean", "scatter", "beta")

    def __init__(self, count: float, mean: torch.Tensor, scatter: torch.Tensor | None, beta: float | None = None):
        self.count, self.mean, self.scatter, self.beta = float(count), mean, scatter, beta

    @classmethod
    def of(cls, phi: torch.Tensor, with_scatter: bool) -> "DomainStats":
        phi = phi.double()
        mean = phi.mean(dim=0)
        scatter = beta = None
        if with_scatter:
            centred = phi - mean
            scatter = centred.T @ centred
            n = len(phi)
            # sum_i ||z z^T - S||^2 = sum_i ||z_i||^4 - n ||S||^2, since sum_i z_i^T S z_i = n ||S||^2
            beta = _f32_scalar((float(((centred ** 2).sum(dim=1) ** 2).sum()) - float((scatter ** 2).sum()) / n)
                               / n ** 2)
            scatter = _f32(scatter)
        return cls(len(phi), _f32(mean), scatter, beta)

    def merged(self, other: "DomainStats") -> "DomainStats":
        """The statistics of both domains' images together (parallel-axis rule; beta, which needs the images'
        fourth moments, is combined as if both domains had one mean: an approximation)."""
        n = self.count + other.count
        mean = (self.mean * self.count + other.mean * other.count) / n
        scatter = beta = None
        if self.scatter is not None:
            delta = (other.mean - self.mean)[:, None]
            scatter = self.scatter + other.scatter + (delta @ delta.T) * self.count * other.count / n
            if self.beta is not None and other.beta is not None:
                beta = _f32_scalar((self.beta * self.count ** 2 + other.beta * other.count ** 2) / n ** 2)
        return DomainStats(n, _f32(mean), None if scatter is None else _f32(scatter), beta)


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.float().double()


def _f32_scalar(value: float) -> float:
    return float(torch.tensor(max(value, 0.0), dtype=torch.float32))


def _ledoit_wolf(stats: DomainStats, covariance: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The domain's covariance pulled toward `target` by its Ledoit-Wolf intensity beta / ||S - target||^2 (in
    [0, 1]). Below three images beta says nothing (for two it is 0 whatever they are: each centred outer product
    equals S) and the domain takes the target's covariance."""
    gap = float(((covariance - target) ** 2).sum())
    weight = 1.0 if gap <= 0 or stats.count < 3 else min(1.0, stats.beta / gap)
    return (1 - weight) * covariance + weight * target


def definite(matrix: torch.Tensor) -> torch.Tensor:
    """A covariance that factors: `matrix` plus the smallest of 1e-9, 1e-8, ... times its mean variance on the
    diagonal that makes it positive definite (the identity when it has no variance). Called only where the
    matrix itself does not factor (a domain of identical or collinear images), so every other domain's numbers
    are those of the matrix itself."""
    width = matrix.shape[0]
    eye = torch.eye(width, dtype=matrix.dtype)
    scale = float(matrix.trace()) / width
    if not scale > 0 or not math.isfinite(scale):
        return eye
    for power in range(-9, 1):
        candidate = matrix + 10.0 ** power * scale * eye
        if int(torch.linalg.cholesky_ex(candidate).info) == 0:
            return candidate
    return scale * eye


class StatsSelector(Selector):
    """The shared machinery of the statistics kinds; subclasses define the feature map and the distance."""

    with_scatter = True

    def __init__(self, config: SelectorConfig, dim: int, projection: torch.Tensor | None = None):
        self.config, self.dim = config, dim
        width = config.width(dim)
        if projection is None and self.projected(width):
            generator = torch.Generator().manual_seed(0)
            projection = _f32(torch.randn(width, config.proj_dim, generator=generator, dtype=torch.float64)
                              / config.proj_dim ** 0.5)
        self.projection = projection
        self.stats: list[DomainStats] = []
        self.calibration: list[Calibration] = []
        self._cache = None

    def projected(self, width: int) -> bool:
        return width > self.config.proj_dim

    # ------------------------------------------------------------------ the interface
    @property
    def num_domains(self) -> int:
        return len(self.stats)

    def phi(self, pooled: torch.Tensor) -> torch.Tensor:
        """N x 2D pooled features -> N x M, float64."""
        x = features_of(pooled.detach().cpu().double(), self.config.features, self.dim)
        return x @ self.projection if self.projection is not None else x

    def add_domain(self, pooled: torch.Tensor, seed: int = 0, progress: bool = False,
                   groups: Sequence[str | None] | None = None) -> dict:
        phi = self.phi(pooled)
        stats = DomainStats.of(phi, self.with_scatter)
        distances = held_out_distances(self, phi, stats, groups)
        self.stats.append(stats)
        self.calibration.append(Calibration.fit(distances))
        self._cache = None
        return {"held_out": len(distances)}

    def distances(self, phi: torch.Tensor) -> torch.Tensor:
        """B x M -> B x K distances to every domain (lower is nearer)."""
        raise NotImplementedError

    @property
    def per_domain_shrink(self) -> bool:
        """Covariances shrunk by each domain's own Ledoit-Wolf intensity (else the fixed `shrink` count)."""
        return self.with_scatter and self.config.shrink is None

    def shrunk(self, stats: DomainStats, target: torch.Tensor) -> torch.Tensor:
        """The domain's covariance pulled toward `target`: by its own Ledoit-Wolf intensity, or (`config.shrink` set)
        as if `shrink` samples of `target` joined the domain's images."""
        if self.per_domain_shrink:
            return _ledoit_wolf(stats, stats.scatter / max(stats.count, 1.0), target)
        return (stats.scatter + self.config.shrink * target) / (stats.count + self.config.shrink)

    def open_precision(self, stats: DomainStats) -> torch.Tensor | None:
        """The inverse of the domain's open-set covariance: its own covariance shrunk toward the isotropic one of equal
        trace (by its Ledoit-Wolf intensity or `shrink` samples' worth), normalised to trace M; None without a
        scatter (NCM: squared Euclidean distance). It uses the domain's own statistics alone, so a domain's calibration
        depends on no other domain: it does not change with learning order or when another domain is removed."""
        if stats.scatter is None:
            return None
        width = stats.scatter.shape[0]
        trace = float(stats.scatter.trace()) / max(stats.count, 1.0)
        iso = max(trace, 1e-12) / width * torch.eye(width, dtype=torch.float64)
        covariance = self.shrunk(stats, iso)
        if not float(covariance.trace()) > 0:  # every image of the domain the same: no shape of its own
            return torch.eye(width, dtype=torch.float64)
        covariance = covariance * width / covariance.trace()
        try:
            precision = torch.linalg.inv(covariance)
            if bool(torch.isfinite(precision).all()):
                return precision
        except torch.linalg.LinAlgError:  # singular (a degenerate domain: images on a line, say)
            pass
        return torch.linalg.inv(definite(covariance))

    def open_distance(self, phi: torch.Tensor, stats: DomainStats,
                      precision: torch.Tensor | None = None) -> torch.Tensor:
        """The open-set distance of B x M to a domain (`precision`: its `open_precision`, computed when not given)."""
        diff = phi - stats.mean
        if stats.scatter is None:
            return (diff ** 2).sum(dim=1)
        if precision is None:
            precision = self.open_precision(stats)
        return torch.einsum("bm,mn,bn->b", diff, precision, diff)

    def choose(self, pooled: torch.Tensor, fallback: bool = True) -> tuple[list[int], list[float]]:
        if not self.stats:
            return [-1] * len(pooled), [0.0] * len(pooled)
        phi = self.phi(pooled)
        best = self.distances(phi).argmin(dim=1).tolist()
        # per chosen domain once: its open-set precision and its fallback cut
        per_domain = {k: (self.open_precision(self.stats[k]),
                         fallback_threshold(self.config.frr, self.stats[k].count, self.config.tolerance))
                     for k in set(best)}
        chosen, scores = [], []
        for j, k in enumerate(best):
            precision, cut = per_domain[k]
            score = self.calibration[k].score(float(self.open_distance(phi[j:j + 1], self.stats[k], precision)[0]))
            scores.append(score)
            chosen.append(-1 if fallback and score < cut else k)
        return chosen, scores

    def remove_domain(self, index: int, seed: int = 0) -> None:
        del self.stats[index], self.calibration[index]
        self._cache = None

    def merge(self, other: "StatsSelector", seed: int = 0) -> None:
        """Append `other`'s domains (same kind, features and projection)."""
        if type(other) is not type(self) or other.config.features != self.config.features or other.dim != self.dim \
                or not _same(self.projection, other.projection):
            raise ValueError("only selectors of the same kind, features and projection merge")
        self.stats += other.stats
        self.calibration += other.calibration
        self._cache = None

    merge_classes = renamed_method("merge_classes", "merge_domains")  # the old spellings (deprecated)
    per_class_shrink = renamed_attribute("per_class_shrink", "per_domain_shrink")
    bytes_per_class = renamed_method("bytes_per_class", "bytes_per_domain")

    def merge_domains(self, keep: int, absorb: int) -> None:
        """Domain `absorb`'s images become domain `keep`'s (its statistics exact; its open-set fit the looser one)."""
        self.stats[keep] = self.stats[keep].merged(self.stats[absorb])
        self.calibration[keep] = self.calibration[keep].looser(self.calibration[absorb], self.config.frr)
        self.remove_domain(absorb)

    def snapshot(self):
        return list(self.stats), list(self.calibration)

    def restore(self, snap) -> None:
        self.stats, self.calibration = list(snap[0]), list(snap[1])
        self._cache = None

    # ------------------------------------------------------------------ state
    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {"count": torch.tensor([s.count for s in self.stats], dtype=torch.float64),
               "mean": torch.stack([s.mean for s in self.stats]).float(),
               "calibration": torch.tensor([c.to_list() for c in self.calibration], dtype=torch.float32)}
        if self.with_scatter:
            rows, cols = torch.triu_indices(*self.stats[0].scatter.shape)
            out["scatter"] = torch.stack([s.scatter[rows, cols] for s in self.stats]).float()
        if self.per_domain_shrink:
            out["beta"] = torch.tensor([s.beta for s in self.stats], dtype=torch.float32)
        if self.projection is not None:
            out["projection"] = self.projection.float()
        return out

    @classmethod
    def from_tensors(cls, config: SelectorConfig, dim: int, tensors: dict[str, torch.Tensor]) -> "StatsSelector":
        projection = tensors.get("projection")
        selector = cls(config, dim, None if projection is None else projection.double())
        count, mean = tensors["count"].double(), tensors["mean"].double()
        scatter, beta = tensors.get("scatter"), tensors.get("beta")
        if selector.per_domain_shrink and beta is None:
            raise ValueError("a per-domain shrinkage selector without its 'beta' tensor")
        width = mean.shape[1]
        for k in range(len(count)):
            full = None
            if selector.with_scatter:
                full = torch.zeros(width, width, dtype=torch.float64)
                rows, cols = torch.triu_indices(width, width)
                full[rows, cols] = scatter[k].double()
                full = full + full.T - torch.diag(full.diagonal())
            selector.stats.append(DomainStats(float(count[k]), mean[k], full,
                                             float(beta[k]) if selector.per_domain_shrink else None))
            selector.calibration.append(Calibration.from_list(tensors["calibration"][k].tolist()))
        return selector

    @property
    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.to_tensors().values()) if self.stats else 0

    def bytes_per_domain(self) -> int:
        """Stored bytes that grow with each domain (the projection is a fixed cost)."""
        tensors = self.to_tensors()
        return sum(t[0].numel() * t.element_size() for k, t in tensors.items() if k != "projection")


def _same(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


class NcmSelector(StatsSelector):
    kind = "ncm"
    with_scatter = False

    def projected(self, width: int) -> bool:
        return False  # no covariance: the mean costs D floats, no projection needed

    def phi(self, pooled):
        return torch.nn.functional.normalize(super().phi(pooled), dim=1)

    def distances(self, phi):
        means = torch.stack([s.mean for s in self.stats])
        return torch.cdist(phi, means) ** 2


class FecamSelector(StatsSelector):
    kind = "fecam"

    def _pooled(self) -> tuple[torch.Tensor, float]:
        """Sum of scatters and of counts over the domains."""
        return sum(s.scatter for s in self.stats), sum(s.count for s in self.stats)

    def _covariance(self, stats: DomainStats, pooled: torch.Tensor) -> torch.Tensor:
        blend = self.shrunk(stats, pooled)
        width = blend.shape[0]
        blend = blend + _IDENTITY_SHRINK * blend.trace() / width * torch.eye(width, dtype=blend.dtype)
        if not float(blend.trace()) > 0:  # every image of every domain the same: no shape at all
            return torch.eye(width, dtype=blend.dtype)
        return blend * width / blend.trace()

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Domain means (K x M) and the Cholesky factors of their covariances (K x M x M, lower): what a new domain
        costs is these K factorisations (the pooled covariance every domain is shrunk toward changes), a third of
        the work of inverting them."""
        if self._cache is None:
            scatter, count = self._pooled()
            pooled = scatter / max(count, 1.0)
            covariances = torch.stack([self._covariance(s, pooled) for s in self.stats])
            factors, info = torch.linalg.cholesky_ex(covariances)
            if bool((info != 0).any()):  # only degenerate statistics (identical images) get here
                factors = torch.linalg.cholesky(torch.stack([definite(c) for c in covariances]))
            self._cache = (torch.stack([s.mean for s in self.stats]), factors)
        return self._cache

    def distances(self, phi):
        """Mahalanobis distances: |L_k^-1 (x - mean_k)|^2 by triangular solves with each domain's factor."""
        means, factors = self._factors()
        diff = (phi[:, None, :] - means[None]).permute(1, 2, 0)  # K x M x B
        return (torch.linalg.solve_triangular(factors, diff, upper=False) ** 2).sum(dim=1).T



class RanpacSelector(StatsSelector):
    kind = "ranpac"

    def projected(self, width: int) -> bool:
        return True  # the random projection with ReLU is the method

    def phi(self, pooled):
        return torch.relu(super().phi(pooled))

    def _solve(self, parts: list[DomainStats], columns: list[DomainStats]) -> torch.Tensor:
        gram = sum(s.scatter + s.count * torch.outer(s.mean, s.mean) for s in parts)
        width = gram.shape[0]
        scale = float(gram.trace()) / width if float(gram.trace()) > 0 else 1.0  # (all features zero: no scale)
        gram = gram + self.config.ridge * scale * torch.eye(width, dtype=gram.dtype)
        targets = torch.stack([s.mean * s.count for s in columns], dim=1)
        return torch.linalg.solve(gram, targets)  # M x columns

    def distances(self, phi):
        if self._cache is None:
            self._cache = self._solve(self.stats, self.stats)
        return torch.exp(-(phi @ self._cache))  # positive, lower for a higher ridge output


STATS_KINDS = {"ncm": NcmSelector, "fecam": FecamSelector, "ranpac": RanpacSelector}
