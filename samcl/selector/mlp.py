"""The `mlp` selector (the paper's): an MLP on pooled middle-block features, and the feature buffer it trains on.

Classifier (as the reference): D -> D (BN) -> D/4 (BN, ReLU) -> D/4 (BN, ReLU) -> K, cross-entropy, SGD
lr 0.01 without momentum, batch 24, continuing from its previous weights after each new domain. The output
layer grows by one row per domain and keeps the old rows.

Schedule. The reference trains 25 epochs on the whole buffer after each new domain, so a retrain costs
O(K x N_e) and a long history becomes the bottleneck (K = 1,000 domains x 300 features: 312,500 SGD steps).
samcl runs exactly the reference schedule while it fits in `max_steps` steps (every small-K run, such as the
demo, is bit for bit the reference), and beyond that a fixed budget of `max_steps` steps: each new-domain
feature row is still seen `epochs` times, and the rest of every batch replays old features drawn uniformly at
random (domain-balanced, since every domain holds N_e). The cost of a retrain is then independent of K apart
from the output layer. `max_steps=None` is the reference schedule at any size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._renamed import renamed_attribute
from ..io import bar
from ..method.sizes import tensor_bytes
from .base import Selector
from .config import SelectorConfig


class FeatureBuffer:
    """N x D pooled features (one row per image) with their domain index: what replaces image replay.

    Only learning reads the buffer (it is the largest part of a store: 0.88 MiB per domain for ViT-B), so a
    store opened for inference may defer it (`deferred`): it is read and verified on first use."""

    def __init__(self, dim: int, features: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        self.dim = dim
        self._loader = None
        self._count = 0
        self._set(features if features is not None else torch.zeros(0, dim),
                  labels if labels is not None else torch.zeros(0, dtype=torch.long))

    @classmethod
    def deferred(cls, dim: int, count: int, loader) -> "FeatureBuffer":
        """A buffer of `count` features that `loader()` -> (features, labels) reads on first use."""
        buffer = cls(dim)
        buffer._loader, buffer._count = loader, int(count)
        return buffer

    def _set(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        if features.shape[1:] != (self.dim,) or len(labels) != len(features):
            raise ValueError(f"buffer of shape {tuple(features.shape)} with {len(labels)} labels "
                             f"does not match dim {self.dim}")
        self._features, self._labels = features, labels

    def load(self) -> "FeatureBuffer":
        """Read a deferred buffer now (errors surface here, before any work that needs it)."""
        if self._loader is not None:
            features, labels = self._loader()
            if len(labels) != self._count:
                raise ValueError(f"buffer holds {len(labels)} features, expected {self._count}")
            self._set(features, labels)
            self._loader = None
        return self

    @property
    def is_loaded(self) -> bool:
        return self._loader is None

    @property
    def features(self) -> torch.Tensor:
        """N x D float32 pooled features."""
        return self.load()._features

    embeddings = renamed_attribute("embeddings", "features")

    @property
    def labels(self) -> torch.Tensor:
        return self.load()._labels

    def add(self, features: torch.Tensor, label: int) -> None:
        features = features.detach().float().cpu().reshape(-1, self.dim)
        self._set(torch.cat([self.features, features]),
                  torch.cat([self.labels, torch.full((len(features),), label, dtype=torch.long)]))

    def keep_first(self, count: int) -> None:
        """Drop every row after the first `count` (undoes `add`s: a failed learn step's rows)."""
        self._set(self.features[:count], self.labels[:count])

    def __len__(self) -> int:
        return self._count if self._loader is not None else len(self._labels)

    @property
    def num_bytes(self) -> int:
        """Bytes in memory once loaded (float32 features, int64 labels)."""
        return len(self) * (self.dim * 4 + 8)


class SelectorNet(nn.Module):
    """B x D -> B x K logits."""

    def __init__(self, dim: int, num_domains: int):
        super().__init__()
        hidden = max(dim // 4, 1)
        self.features = nn.Sequential(
            nn.Linear(dim, dim), nn.BatchNorm1d(dim),
            nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, num_domains)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def grow(self, num_domains: int, generator: torch.Generator | None = None) -> None:
        """Add output rows for new domains; existing rows are kept bit for bit."""
        old = self.head
        if num_domains < old.out_features:
            raise ValueError("the selector cannot shrink")
        if num_domains == old.out_features:
            return
        new = nn.Linear(old.in_features, num_domains)
        bound = 1.0 / old.in_features**0.5
        new.weight.uniform_(-bound, bound, generator=generator)
        new.bias.uniform_(-bound, bound, generator=generator)
        new.weight[: old.out_features] = old.weight
        new.bias[: old.out_features] = old.bias
        self.head = new.to(old.weight.device)

    @property
    def num_bytes(self) -> int:
        return tensor_bytes(self.state_dict())


def train_selector(net: SelectorNet, buffer: FeatureBuffer, config: SelectorConfig, seed: int,
                   progress: bool = True, new_from: int | None = None) -> list[float]:
    """Cross-entropy on the buffer, continuing from `net`'s weights; the schedule is in the module docstring.

    new_from: labels >= new_from are the domains learned since the last retrain (default: the highest label);
    they matter only once the budget applies. Returns the mean loss per epoch (per `epochs`-th of the budget).
    Batches of one sample are merged into the previous batch (BatchNorm).
    """
    generator = torch.Generator().manual_seed(seed)
    device = next(net.parameters()).device
    x, y = buffer.features.to(device), buffer.labels.to(device)
    batches_per_epoch = -(-len(y) // config.batch_size)
    if config.max_steps is None or config.epochs * batches_per_epoch <= config.max_steps:
        epochs = (_epoch_batches(len(y), config.batch_size, generator) for _ in range(config.epochs))
    else:
        epochs = _budget_batches(buffer.labels, config, generator, new_from)
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr)
    losses = []
    net.train()
    shown = bar(epochs, total=config.epochs, desc="selector", progress=progress, leave=False)
    for batches in shown:
        total, seen = 0.0, 0
        for batch in batches:
            if len(batch) < 2:
                continue
            batch = batch.to(device)
            loss = F.cross_entropy(net(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            seen += len(batch)
        losses.append(total / max(seen, 1))
        shown.set_postfix(loss=f"{losses[-1]:.4f}")
    net.eval()
    return losses


def _epoch_batches(count: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One reference epoch: a permutation of the whole buffer in batches (a last batch of one is merged)."""
    batches = list(torch.randperm(count, generator=generator).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2] = torch.cat([batches[-2], batches.pop()])
    return batches


def _budget_batches(labels: torch.Tensor, config: SelectorConfig, generator: torch.Generator,
                    new_from: int | None) -> list[list[torch.Tensor]]:
    """`max_steps` batches: each new-domain sample `epochs` times (at most half the budget), the rest old samples
    drawn uniformly with replacement; shuffled together and cut into `epochs` groups for the loss report."""
    new_from = int(labels.max()) if new_from is None else new_from
    new = torch.nonzero(labels >= new_from).flatten()
    old = torch.nonzero(labels < new_from).flatten()
    slots = config.max_steps * config.batch_size
    repeats = [new[torch.randperm(len(new), generator=generator)] for _ in range(config.epochs)]
    chosen = torch.cat(repeats)[: slots if len(old) == 0 else slots // 2]
    if len(old):
        picks = torch.randint(len(old), (slots - len(chosen),), generator=generator)
        chosen = torch.cat([chosen, old[picks]])
    chosen = chosen[torch.randperm(len(chosen), generator=generator)]
    batches = list(chosen.split(config.batch_size))
    size = -(-len(batches) // config.epochs)
    return [batches[i:i + size] for i in range(0, len(batches), size)]


class MlpSelector(Selector):
    """The paper's selector as a `Selector`: `SelectorNet` retrained on the `FeatureBuffer` after each domain
    (`train_selector`, seeded; its files are the net's weights and the buffer). No open set: the
    score is the softmax probability of the chosen domain. Its input (and buffer) is the pooled columns
    `config.features` names: the grid mean (the paper's), or mean and spread."""

    kind = "mlp"

    def __init__(self, config: SelectorConfig, dim: int, net: SelectorNet | None = None,
                 buffer: FeatureBuffer | None = None):
        self.config, self.dim, self.width = config, dim, config.width(dim)
        self.net, self.buffer = net, buffer if buffer is not None else FeatureBuffer(self.width)
        self.device = torch.device("cpu")

    @property
    def num_domains(self) -> int:
        return 0 if self.net is None else self.net.head.out_features

    def add_domain(self, pooled: torch.Tensor, seed: int = 0, progress: bool = False,
                   groups: Sequence[str | None] | None = None) -> dict:  # (no open set: groups change nothing)
        label = self.num_domains if self.net is not None else 0
        features = pooled[:, : self.width]
        if self.net is None:
            self.net = SelectorNet(self.width, 1).to(self.device).eval()
        self.buffer.add(features, label)
        self.net.grow(label + 1, torch.Generator().manual_seed(seed + label))
        self.net.to(self.device)
        if label == 0:
            return {}
        return {"selector_losses": train_selector(self.net, self.buffer, self.config, seed=seed + label,
                                                  progress=progress)}

    @torch.no_grad()
    def choose(self, pooled: torch.Tensor, fallback: bool = True) -> tuple[list[int], list[float]]:
        count = pooled.shape[0]
        if self.num_domains == 0:
            return [-1] * count, [0.0] * count
        if self.num_domains == 1:
            return [0] * count, [1.0] * count
        logits = self.net(pooled[:, : self.width].to(self.device).float())
        probs = logits.softmax(dim=1)
        chosen = logits.argmax(dim=1)
        return chosen.tolist(), probs.gather(1, chosen[:, None])[:, 0].tolist()

    def remove_domain(self, index: int, seed: int = 0) -> None:
        """Drop the domain's buffer rows and retrain from scratch on the rest: its weights mixed every domain, so
        nothing short of a new network holds nothing derived from the removed one."""
        keep = self.buffer.labels != index
        labels = self.buffer.labels[keep]
        self.buffer = FeatureBuffer(self.width, self.buffer.features[keep], labels - (labels > index).long())
        self.retrain(self.num_domains - 1, seed)

    def merge(self, other: "MlpSelector", seed: int = 0) -> None:
        """Append `other`'s domains: the union of both buffers (its labels after ours), retrained from scratch."""
        if not isinstance(other, MlpSelector) or other.dim != self.dim or other.width != self.width:
            raise ValueError("only mlp selectors of the same width merge")
        shift = self.num_domains
        self.buffer = FeatureBuffer(self.width, torch.cat([self.buffer.features, other.buffer.features]),
                                      torch.cat([self.buffer.labels, other.buffer.labels + shift]))
        self.retrain(shift + other.num_domains, seed)

    def retrain(self, domains: int, seed: int = 0) -> None:
        """A fresh network for `domains` domains (initialised from `seed`, whatever the global RNG holds), trained
        on the whole buffer with the configured schedule: the same result from the same buffer, every time."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = SelectorNet(self.width, domains).to(self.device).eval()
        if domains > 1:
            train_selector(self.net, self.buffer, self.config, seed=seed, progress=False, new_from=0)

    def snapshot(self):
        weights = None if self.net is None else {k: v.clone() for k, v in self.net.state_dict().items()}
        rows = len(self.buffer) if self.buffer.is_loaded else None
        return weights, self.buffer, rows

    def restore(self, snap) -> None:
        weights, self.buffer, rows = snap
        if weights is None:
            self.net = None
        else:
            head = self.net.head
            domains = len(weights["head.weight"])
            if head.out_features != domains:
                self.net.head = nn.Linear(head.in_features, domains).to(head.weight.device)
            self.net.load_state_dict(weights)
        if rows is not None:
            self.buffer.keep_first(rows)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.net.state_dict())

    def to(self, device) -> "MlpSelector":
        self.device = torch.device(device)
        if self.net is not None:
            self.net.to(self.device)
        return self

    @property
    def num_bytes(self) -> int:
        return 0 if self.net is None else self.net.num_bytes
