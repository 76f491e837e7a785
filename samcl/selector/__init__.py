"""The Module Selector: which learned domain (or the base) an image belongs to, from pooled prefix features.

    selector = make_selector(SelectorConfig(kind="fecam"), dim=768)
    selector.add_domain(pooled)                      # N x 2D pooled features of one domain's training images
    chosen, scores = selector.choose(pooled_batch)  # domain per image (-1: base, the open-set answer) and its score

Kinds (`config.KINDS`): `mlp`, the paper's MLP retrained on a feature buffer (`mlp.py`), and the statistics
selectors `ncm`, `fecam`, `ranpac` (`stats.py`), which keep per-domain statistics instead of features and answer
"none of my domains" (`calibration.py`).
"""

from __future__ import annotations

import torch

from .._renamed import renamed_names
from .base import Selector
from .config import DEFAULT_FEATURES, DEFAULT_KIND, FEATURES, KINDS, SelectorConfig, features_of
from .mlp import FeatureBuffer, MlpSelector, SelectorNet, train_selector
from .stats import STATS_KINDS, DomainStats, StatsSelector

__all__ = ["DEFAULT_FEATURES", "DEFAULT_KIND", "FEATURES", "KINDS", "DomainStats", "FeatureBuffer", "MlpSelector",
           "Selector", "SelectorConfig", "SelectorNet", "StatsSelector", "features_of", "make_selector",
           "selector_from_tensors", "train_selector"]
__getattr__ = renamed_names(__name__, {"EmbeddingBuffer": "FeatureBuffer", "ClassStats": "DomainStats"}, globals())


def make_selector(config: SelectorConfig, dim: int) -> Selector:
    """An empty selector of `config.kind` on D = `dim` features."""
    if config.kind == "mlp":
        return MlpSelector(config, dim)
    return STATS_KINDS[config.kind](config, dim)


def selector_from_tensors(config: SelectorConfig, dim: int, domains: int, tensors: dict[str, torch.Tensor],
                          buffer: FeatureBuffer | None = None) -> Selector:
    """A stored selector (raises ValueError/KeyError/RuntimeError when the tensors do not fit)."""
    if config.kind == "mlp":
        net = SelectorNet(config.width(dim), domains)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
        return MlpSelector(config, dim, net.eval(), buffer)
    selector = STATS_KINDS[config.kind].from_tensors(config, dim, tensors)
    if selector.num_domains != domains:
        raise ValueError(f"holds {selector.num_domains} domains, the manifest names {domains}")
    return selector
