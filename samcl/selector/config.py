"""The selector's configuration: its kind, the pooled features it reads, and each kind's settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: Selector kinds: the paper's MLP on an embedding buffer, and the statistics selectors (`samcl.selector.stats`).
KINDS = ("mlp", "ncm", "fecam", "ranpac")
#: What a new store gets (chosen by `benchmarks/selector_kinds.py`; see the README's selector section).
DEFAULT_KIND = "fecam"
#: Pooled features of the prefix: the grid mean (the paper's), or mean and spread (std) over the grid.
FEATURES = ("mean", "mean_std")
#: Features per kind when not given: the MLP keeps the paper's exact input (old stores route identically).
DEFAULT_FEATURES = {"mlp": "mean", "ncm": "mean_std", "fecam": "mean_std", "ranpac": "mean_std"}


@dataclass(frozen=True)
class SelectorConfig:
    """kind: one of KINDS. features: one of FEATURES (None: the kind's default). block: encoder block whose
    pooled output is the embedding (None: the backbone's middle block).
    mlp: samples_per_domain (N_e embeddings kept per class in the buffer), epochs, lr, batch_size, max_steps (SGD
    steps per retrain once the reference schedule (`epochs` passes over the buffer) would take more; None =
    always the reference schedule).
    statistics kinds: proj_dim (features are randomly projected to this width when wider: the per-class
    covariance is proj_dim^2), shrink (FeCAM: how far a class's covariance is pulled toward the pooled one; None:
    per class, by the Ledoit-Wolf estimate from the class's own images; a number: the class's covariance counts as
    `shrink` samples of the pooled covariance, as in stores made before the per-class estimate), ridge (RanPAC's ridge
    strength, relative to the Gram trace), frr (open set: the target share of a learned domain's images sent to
    base, set from held-out training data; 0 turns the fallback off), tolerance (the confidence with which at most
    `frr` of a domain's images fall back, given how few held-out images set its threshold: a one-sided normal
    tolerance bound; 0: the plain fitted quantile, as in stores made before the bound)."""

    kind: str = DEFAULT_KIND
    features: str | None = None
    block: int | None = None
    samples_per_domain: int = 300
    epochs: int = 25
    lr: float = 0.01
    batch_size: int = 24
    max_steps: int | None = 2000
    proj_dim: int = 144
    shrink: float | None = None
    ridge: float = 1e-3
    frr: float = 0.01
    tolerance: float = 0.95

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"SelectorConfig.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.features is None:
            object.__setattr__(self, "features", DEFAULT_FEATURES[self.kind])
        if self.features not in FEATURES:
            raise ValueError(f"SelectorConfig.features must be one of {', '.join(FEATURES)}, got {self.features!r}")
        for name in ("samples_per_domain", "epochs", "batch_size", "proj_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"SelectorConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.batch_size < 2:
            raise ValueError("SelectorConfig.batch_size must be >= 2 (the selector has BatchNorm layers)")
        for name in ("lr", "shrink", "ridge"):
            value = getattr(self, name)
            if name == "shrink" and value is None:
                continue
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"SelectorConfig.{name} must be a finite number > 0, got {value!r}")
        if not (isinstance(self.frr, (int, float)) and 0 <= self.frr < 0.5):
            raise ValueError(f"SelectorConfig.frr must be in [0, 0.5), got {self.frr!r}")
        if not (isinstance(self.tolerance, (int, float)) and 0 <= self.tolerance < 1):
            raise ValueError(f"SelectorConfig.tolerance must be in [0, 1), got {self.tolerance!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ValueError(f"SelectorConfig.max_steps must be an integer >= 1 or None, got {self.max_steps!r}")
        if self.block is not None and (not isinstance(self.block, int) or self.block < 0):
            raise ValueError(f"SelectorConfig.block must be an integer >= 0 or None, got {self.block!r}")

    @classmethod
    def from_manifest(cls, raw: dict) -> "SelectorConfig":
        """A stored config; one written before selector kinds existed is the paper's MLP on the grid mean, one
        written before the tolerance bound keeps the plain quantile (its stored `shrink` and `proj_dim` keep its
        covariance rule and projection), so every store routes as it did when it was made."""
        return cls(**{"kind": "mlp", "features": "mean", "tolerance": 0.0, **raw})

    def to_dict(self) -> dict:
        return asdict(self)

    def width(self, dim: int) -> int:
        """How many pooled columns the selector reads for a backbone of width D = `dim`."""
        return dim if self.features == "mean" else 2 * dim


def features_of(pooled, features: str, dim: int):
    """The columns of `pooled` (N x 2D: grid mean, then grid std) that `features` names."""
    return pooled[:, :dim] if features == "mean" else pooled[:, : 2 * dim]
