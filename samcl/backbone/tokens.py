"""Batch operations on what a backbone's prefix and suffix return, without knowing its shape.

SAM's prefix returns one B x H x W x D tensor and its suffix one B x C x h x w tensor; SAM 2's return named
tuples of tensors (the current tokens plus the finished stages' outputs; the image embedding plus the
high-resolution features). Code outside `backbone/` (trainer caches, per-image decoding) only needs to pick
samples, stack them and count bytes, so it goes through these helpers. Every tensor has the batch first.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

Batch = Any  # a tensor, or a (named) tuple of Batch


def map_batch(fn: Callable[..., torch.Tensor], *batches: Batch) -> Batch:
    """Apply `fn` to corresponding tensors of same-shaped batch structures, keeping the structure."""
    first = batches[0]
    if isinstance(first, torch.Tensor):
        return fn(*batches)
    if isinstance(first, tuple):
        parts = [map_batch(fn, *items) for items in zip(*batches)]
        return type(first)(*parts) if hasattr(first, "_fields") else tuple(parts)
    raise TypeError(f"not a tensor or a tuple of tensors: {type(first).__name__}")


def take(batch: Batch, index: int | slice) -> Batch:
    """Sample `index` (int: drops the batch dimension; slice: keeps it)."""
    return map_batch(lambda t: t[index], batch)


def stack(samples: list[Batch]) -> Batch:
    """Per-sample structures (as `take(batch, i)`) -> one batch."""
    return map_batch(lambda *ts: torch.stack(ts), *samples)

