"""The selector's configuration: its kind, the pooled features it reads, and each kind's settings."""

from __future__ import annotations

from dataclasses import asdict

from ..options import config, option

#: Selector kinds: the paper's MLP on a feature buffer, and the statistics selectors (`samcl.selector.stats`).
KINDS = ("mlp", "ncm", "fecam", "ranpac")
#: What a new store gets (chosen by `benchmarks/selector_kinds.py`; see the README's selector section).
DEFAULT_KIND = "fecam"
#: Pooled features of the prefix: the grid mean (the paper's), or mean and spread (std) over the grid.
FEATURES = ("mean", "mean_std")
#: Features per kind when not given: the MLP keeps the paper's exact input.
DEFAULT_FEATURES = {"mlp": "mean", "ncm": "mean_std", "fecam": "mean_std", "ranpac": "mean_std"}


@config(frozen=True)
class SelectorConfig:
    """The Module Selector: which kind, what it reads, and how it is fitted.

    Arguments:
      kind (str): one of KINDS: "mlp" (the paper's MLP on a feature buffer) or a statistics kind ("ncm",
        "fecam", "ranpac": per-domain statistics, and the open-set answer: images of no learned domain go to base).
      features (str | None): what is read of the pooled block, one of FEATURES (None: the kind's default).
      block (int | None): encoder block whose pooled output the selector reads (None: the backbone's middle block).
      samples_per_domain, epochs, lr, batch_size, max_steps: the mlp's buffer (N_e feature rows per domain) and its
        retraining (max_steps: SGD steps per retrain once `epochs` passes over the buffer would take more; None:
        always the reference schedule).
      proj_dim, shrink, ridge, frr, tolerance: the statistics kinds' projection width, FeCAM's covariance
        shrinkage, RanPAC's ridge, and the open-set cut (see each field's help).

    Every field checks its range when the config is made (ValueError naming it); `samcl learn` reads its flags'
    help, defaults and ranges from these fields.
    """

    kind: str = option(DEFAULT_KIND, "selector kind", choices=tuple(KINDS))
    features: str | None = option(None, "what the selector reads of the pooled block: mean (the paper's grid "
                                        "mean) or mean_std (mean and spread over the grid; the same encoder work)",
                                  choices=tuple(FEATURES), optional=True)
    block: int | None = option(None, "encoder block whose pooled output the selector reads (default: the middle block)",
                               low=0, high=255, integer=True, optional=True)
    samples_per_domain: int = option(300, "N_e pooled feature rows kept per domain (mlp selector)", low=1, high=100_000,
                                     integer=True)
    epochs: int = option(25, "passes over the feature buffer per selector retrain", low=1, high=100_000,
                         integer=True)
    lr: float = option(0.01, "the mlp selector's SGD learning rate", low=0, low_open=True)
    batch_size: int = option(24, "the mlp selector's batch (it has BatchNorm layers: at least 2)", low=2,
                             integer=True)
    max_steps: int | None = option(2000, "SGD steps per selector retrain once the epochs over the whole buffer "
                                         "would take more (a long history); None = the reference schedule always",
                                   low=1, integer=True, optional=True)
    proj_dim: int = option(144, "statistics kinds: features are randomly projected to this width when wider (the "
                                "per-domain covariance is proj_dim^2)", low=1, integer=True)
    shrink: float | None = option(None, "fecam: how far a domain's covariance is pulled toward the pooled one; None: "
                                        "per domain, by the Ledoit-Wolf estimate from the domain's own images; a "
                                        "number: the domain's covariance counts as that many samples of the pooled "
                                        "covariance", low=0, low_open=True, optional=True)
    ridge: float = option(1e-3, "ranpac: ridge strength, relative to the Gram trace", low=0, low_open=True)
    frr: float = option(0.01, "open set: the target share of a learned domain's images sent to base, set from "
                              "held-out training data; 0 turns the fallback off", low=0, high=0.5, high_open=True)
    tolerance: float = option(0.95, "open set: the confidence with which at most frr of a domain's images fall "
                                    "back, given how few held-out images set its threshold (a one-sided normal "
                                    "tolerance bound); 0: the plain fitted quantile", low=0, high=1, high_open=True)

    def __post_init__(self):
        if self.features is None:
            object.__setattr__(self, "features", DEFAULT_FEATURES[self.kind])

    @classmethod
    def from_manifest(cls, raw: dict) -> "SelectorConfig":
        """A config as the manifest stores it (every field: `samcl.store.manifest.upgrade` fills in those an older
        format left out), so every store routes as it did when it was made."""
        return cls(**raw)

    def to_dict(self) -> dict:
        return asdict(self)

    def width(self, dim: int) -> int:
        """How many pooled columns the selector reads for a backbone of width D = `dim`."""
        return dim if self.features == "mean" else 2 * dim


def features_of(pooled, features: str, dim: int):
    """The columns of `pooled` (N x 2D: grid mean, then grid std) that `features` names."""
    return pooled[:, :dim] if features == "mean" else pooled[:, : 2 * dim]
