"""Module Selector: an MLP on pooled middle-block embeddings, and the embedding buffer it trains on.

Classifier (as the reference): D -> D (BN) -> D/4 (BN, ReLU) -> D/4 (BN, ReLU) -> K, cross-entropy, SGD
lr 0.01 without momentum, batch 24, 25 epochs on the whole buffer after each new domain, continuing from
its previous weights. The output layer grows by one row per class and keeps the old rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


@dataclass(frozen=True)
class SelectorConfig:
    """block: encoder block whose pooled output is the embedding (None: the backbone's middle block).
    samples_per_domain: N_e embeddings kept per class in the buffer."""

    block: int | None = None
    samples_per_domain: int = 300
    epochs: int = 25
    lr: float = 0.01
    batch_size: int = 24

    def to_dict(self) -> dict:
        return asdict(self)


class EmbeddingBuffer:
    """N x D pooled embeddings with their class index: what replaces image replay."""

    def __init__(self, dim: int, embeddings: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        self.dim = dim
        self.embeddings = embeddings if embeddings is not None else torch.zeros(0, dim)
        self.labels = labels if labels is not None else torch.zeros(0, dtype=torch.long)
        if self.embeddings.shape[1:] != (dim,) or len(self.labels) != len(self.embeddings):
            raise ValueError(f"buffer of shape {tuple(self.embeddings.shape)} with {len(self.labels)} labels "
                             f"does not match dim {dim}")

    def add(self, embeddings: torch.Tensor, label: int) -> None:
        embeddings = embeddings.detach().float().cpu().reshape(-1, self.dim)
        self.embeddings = torch.cat([self.embeddings, embeddings])
        self.labels = torch.cat([self.labels, torch.full((len(embeddings),), label, dtype=torch.long)])

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_bytes(self) -> int:
        return self.embeddings.numel() * self.embeddings.element_size() + self.labels.numel() * 8


class SelectorNet(nn.Module):
    """B x D -> B x K logits."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        hidden = max(dim // 4, 1)
        self.features = nn.Sequential(
            nn.Linear(dim, dim), nn.BatchNorm1d(dim),
            nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def grow(self, num_classes: int, generator: torch.Generator | None = None) -> None:
        """Add output rows for new classes; existing rows are kept bit for bit."""
        old = self.head
        if num_classes < old.out_features:
            raise ValueError("the selector cannot shrink")
        if num_classes == old.out_features:
            return
        new = nn.Linear(old.in_features, num_classes)
        bound = 1.0 / old.in_features**0.5
        new.weight.uniform_(-bound, bound, generator=generator)
        new.bias.uniform_(-bound, bound, generator=generator)
        new.weight[: old.out_features] = old.weight
        new.bias[: old.out_features] = old.bias
        self.head = new.to(old.weight.device)

    @property
    def num_bytes(self) -> int:
        tensors = list(self.state_dict().values())
        return sum(t.numel() * t.element_size() for t in tensors)


def train_selector(net: SelectorNet, buffer: EmbeddingBuffer, config: SelectorConfig, seed: int,
                   progress: bool = True) -> list[float]:
    """Cross-entropy on the whole buffer for `config.epochs` epochs, continuing from `net`'s weights.

    Returns the mean loss per epoch. Batches of one sample are merged into the previous batch (BatchNorm).
    """
    generator = torch.Generator().manual_seed(seed)
    device = next(net.parameters()).device
    x, y = buffer.embeddings.to(device), buffer.labels.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr)
    losses = []
    net.train()
    bar = tqdm(range(config.epochs), desc="selector", disable=not progress, leave=False)
    for _ in bar:
        order = torch.randperm(len(y), generator=generator).to(device)
        batches = list(order.split(config.batch_size))
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches[-2] = torch.cat([batches[-2], batches.pop()])
        total = 0.0
        for batch in batches:
            if len(batch) < 2:
                continue
            loss = F.cross_entropy(net(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        losses.append(total / max(len(y), 1))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    net.eval()
    return losses
