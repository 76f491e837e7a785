"""The one prefix cache: the frozen encoder prefix (blocks 0..s, s = the selector block) of images seen again.

The base never changes, so an image's prefix tokens never change either. The engine keeps them for test images
that the protocol evaluates after every step, the trainer for training images across epochs. Entries are kept
within a byte budget that counts everything an entry holds (tokens, and the trainer's input-frame mask at its
real size); what does not fit is computed, used and dropped.

    cache = PrefixCache(backbone, stop_block=6, device=device, budget=256 << 20)
    entries = cache.lookup(keys, load)      # load(key) -> (image, mask or None), called for misses only
    tokens = cache.stack(entries)           # B x ... prefix tokens of the batch, in `keys` order

Keys are any hashable; `Identity(obj)` keys an object by identity and holds it, so its id is never reused while
the entry lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import torch

from .backbone import tokens as batch_ops
from .backbone.preprocess import mask_to_input
from .sizes import tensor_bytes


class Identity:
    """A key that compares by object identity and keeps the object alive (images are arrays: unhashable)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other) -> bool:
        return isinstance(other, Identity) and other.obj is self.obj


@dataclass
class Prefix:
    """One image's prefix: tokens (the backbone's structure, no batch dimension), its resize geometry, its
    pooled selector features (2D: grid mean, then grid std, on the CPU), and its mask in the model-input frame (bool) when one was given."""

    tokens: Any
    geometry: Any
    pooled: torch.Tensor
    mask: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        return tensor_bytes([self.tokens, self.pooled] + ([self.mask] if self.mask is not None else []))


class PrefixCache:
    """Prefix outputs by key, within `budget` bytes (0: nothing is kept, every lookup computes)."""

    def __init__(self, backbone, stop_block: int, device, budget: int = 0, stretch: bool = False):
        self.backbone, self.stop_block, self.device = backbone, stop_block, device
        self.stretch = stretch  # images stretched to the square input (the authors' frame, for imported sets)
        self.budget = budget
        self.entries: dict[Hashable, Prefix] = {}
        self.used = 0

    @torch.no_grad()
    def lookup(self, keys: Sequence[Hashable], load: Callable[[Hashable], tuple]) -> list[Prefix]:
        """The prefixes of `keys`; misses run through the prefix in one batch. load(key) -> (image, mask|None)."""
        found = {j: self.entries[key] for j, key in enumerate(keys) if key in self.entries}
        missing = [j for j in range(len(keys)) if j not in found]
        if missing:
            for j, prefix in zip(missing, self._compute([load(keys[j]) for j in missing])):
                found[j] = prefix
                if self.used + prefix.nbytes <= self.budget and keys[j] not in self.entries:
                    # its own copy: a view would keep the whole batch's tokens alive beyond the budget
                    kept = Prefix(batch_ops.map_batch(torch.clone, prefix.tokens), prefix.geometry, prefix.pooled,
                                  prefix.mask)
                    self.entries[keys[j]] = kept
                    self.used += kept.nbytes
        return [found[j] for j in range(len(keys))]

    def _compute(self, items: list[tuple]) -> list[Prefix]:
        tensors, geometries = zip(*(self.backbone.preprocess(image, stretch=self.stretch)
                                           for image, _ in items))
        tokens = self.backbone.prefix(torch.stack(tensors).to(self.device), self.stop_block)
        pooled = self.backbone.pool_stats(tokens).cpu()
        out = []
        for k, ((_, mask), geometry) in enumerate(zip(items, geometries)):
            frame = None if mask is None else (mask_to_input(mask, geometry) > 0.5).to(self.device)  # 1 byte a pixel
            out.append(Prefix(batch_ops.take(tokens, k), geometry, pooled[k], frame))
        return out

    @staticmethod
    def stack(prefixes: Sequence[Prefix]):
        """The batch's prefix tokens (B first), in order."""
        return batch_ops.stack([p.tokens for p in prefixes])
