"""The selector interface: pooled prefix features in, a domain per image (or -1: base) and a score out."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._renamed import renamed_attribute, renamed_method
from .config import SelectorConfig


class Selector:
    """What the learner, the engine and the store need of a selector.

    pooled features are N x 2D (grid mean, then grid std, `backbone.pool_stats`); each kind reads the columns its
    `config.features` names. Domain indices follow the module set's learning order."""

    kind: str
    config: SelectorConfig
    dim: int

    @property
    def num_domains(self) -> int:
        raise NotImplementedError

    def add_domain(self, pooled: torch.Tensor, seed: int = 0, progress: bool = False,
                   groups: Sequence[str | None] | None = None) -> dict:
        """Take a new domain (the last index) from its training images' pooled features; returns a report.
        groups: each row's `Sample.group` (None: independent images), for the kinds with an open-set cut."""
        raise NotImplementedError

    def choose(self, pooled: torch.Tensor, fallback: bool = True) -> tuple[list[int], list[float]]:
        """Per image the chosen domain (-1: no learned domain fits, run the base) and the selector's score for it
        (higher is surer; the statistics kinds' score is calibrated: see `samcl.selector.calibration`)."""
        raise NotImplementedError

    def remove_domain(self, index: int, seed: int = 0) -> None:
        """Forget domain `index` (later domains move down one). `seed`: for kinds that must retrain."""
        raise NotImplementedError

    def merge(self, other: "Selector", seed: int = 0) -> None:
        """Append `other`'s domains after ours (same kind and configuration)."""
        raise NotImplementedError

    def snapshot(self):
        """What `restore` needs to undo an `add_domain` (a failed learn step)."""
        raise NotImplementedError

    def restore(self, snap) -> None:
        raise NotImplementedError

    def to_tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def to(self, device) -> "Selector":
        return self

    @property
    def num_bytes(self) -> int:
        raise NotImplementedError

    # the old spellings (deprecated)
    classes = renamed_attribute("classes", "num_domains")
    add_class = renamed_method("add_class", "add_domain")
    remove_class = renamed_method("remove_class", "remove_domain")
