"""The one prefix cache: the frozen encoder prefix (blocks 0..s, s = the selector block) of images seen again.

The base never changes, so an image's prefix never changes either. The inference engine keeps prepared images
for every front end (`SAMCL.segment`, the predictor, the server's uploaded images, the protocol's test images,
evaluated after every step); the trainer keeps training images across epochs. Entries are kept within a byte
budget that counts everything an entry holds (tokens, pooled features, the trainer's input-frame mask, an embedding
the engine attached later).

    cache = PrefixCache(backbone, stop_block=6, device=device, budget=256 << 20, evict="lru")
    entries = cache.lookup(keys, load)      # load(key) -> (image, mask or None), called for misses only
    tokens = cache.stack(entries)           # B x ... prefix tokens of the batch, in `keys` order

Eviction: "lru" (inference: the least recently used entries make room for new ones) or "keep" (training: what is
kept stays, what does not fit is computed, used and dropped; an epoch visits every image in turn, which least
recently used eviction would turn into no hit at all).

Keys are any hashable; `ByObject(obj)` keys an object by identity and holds it, so its id is never reused while
the entry lives.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import torch

from ..backbone import tokens as batch_ops
from ..backbone.preprocess import mask_to_input
from .._renamed import renamed_attribute
from ..method.sizes import tensor_bytes

EVICTION = ("lru", "keep")
#: Heated embeddings kept per image (an annotator's objects on one image, each by its first click).
HEATED_PER_IMAGE = 8


class ByObject:
    """A key that compares by object identity and keeps the object alive (images are arrays: unhashable)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other) -> bool:
        return isinstance(other, ByObject) and other.obj is self.obj


@dataclass(eq=False)  # compared by identity: it holds tensors
class PreparedImage:
    """One image ready for prompts.

    Arguments:
      tokens: the prefix output (the backbone's structure, no batch dimension; SAM: H x W x D).
      geometry: its resize geometry (original pixels <-> model input).
      pooled (torch.Tensor): 2D float32 on the CPU, the selector's features (grid mean, then grid std).
      size (tuple[int, int]): the original height and width.
      mask (torch.Tensor | None): S x S bool, the training mask in the model-input frame (the trainer's).
      unprompted_embedding: the image embedding of the base model (SAM without a module: no heat, so it does not
        depend on the prompt), once the engine computed it.
      heated (dict | None): embeddings with a module, by (domain, heat prompt key), the most recent last (the
        refinement strategies' reuse, `samcl.inference.refine`); at most `HEATED_PER_IMAGE`.
    """

    tokens: Any
    geometry: Any
    pooled: torch.Tensor
    size: tuple[int, int]
    mask: torch.Tensor | None = None
    unprompted_embedding: Any = None
    heated: OrderedDict | None = None
    base_embedding = renamed_attribute("base_embedding", "unprompted_embedding")

    @property
    def nbytes(self) -> int:
        held = [self.tokens, self.pooled, self.mask, self.unprompted_embedding, *(self.heated or {}).values()]
        return tensor_bytes([t for t in held if t is not None])


class PrefixCache:
    """Prepared images by key, within `budget` bytes (0: nothing is kept, every lookup computes)."""

    def __init__(self, backbone, stop_block: int, device, budget: int = 0, stretch: bool = False,
                 evict: str = "keep"):
        if evict not in EVICTION:
            raise ValueError(f"evict {evict!r}: expected one of {', '.join(EVICTION)}")
        self.backbone, self.stop_block, self.device = backbone, stop_block, device
        self.stretch = stretch  # images stretched to the square input (the authors' frame, for imported sets)
        self.budget, self.evict = budget, evict
        self.entries: OrderedDict[Hashable, PreparedImage] = OrderedDict()
        self._key_of: dict[int, Hashable] = {}  # id(entry) -> its key
        self.used = 0
        self._lock = threading.RLock()  # the server's event loop looks entries up while its model thread adds them

    def __contains__(self, key: Hashable) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def stats(self) -> dict:
        with self._lock:
            return {"images": len(self.entries), "bytes": self.used, "budget": self.budget}

    def get(self, key: Hashable) -> PreparedImage | None:
        """The entry of `key` (now the most recently used), or None."""
        with self._lock:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
            return entry

    @torch.no_grad()
    def lookup(self, keys: Sequence[Hashable], load: Callable[[Hashable], tuple]) -> list[PreparedImage]:
        """The prepared images of `keys`; misses run through the prefix in one batch. load(key) -> (image,
        mask | None)."""
        found = {j: entry for j, key in enumerate(keys) if (entry := self.get(key)) is not None}
        missing = [j for j in range(len(keys)) if j not in found]
        if missing:
            for j, prepared in zip(missing, self.compute([load(keys[j]) for j in missing])):
                found[j] = self.put(keys[j], prepared)
        return [found[j] for j in range(len(keys))]

    def put(self, key: Hashable, prepared: PreparedImage) -> PreparedImage:
        """Keep `prepared` under `key` if the budget allows (its own copy of the tokens: a view would keep the
        whole batch's tokens alive); returns what the caller should use."""
        with self._lock:
            if key in self.entries:
                return self.get(key)
            kept = PreparedImage(batch_ops.map_batch(torch.clone, prepared.tokens), prepared.geometry,
                                 prepared.pooled, prepared.size, prepared.mask, prepared.unprompted_embedding)
            if not self._make_room(kept.nbytes):
                return prepared
            self.entries[key] = kept
            self._key_of[id(kept)] = key
            self.used += kept.nbytes
            return kept

    def attach_unprompted(self, prepared: PreparedImage, embedding) -> None:
        """Keep `embedding` (the image's unprompted embedding: the base model's) on `prepared`, counted in the budget
        when the cache holds `prepared` (evicting others first, lru); dropped again when it does not fit."""
        prepared.unprompted_embedding = embedding
        with self._lock:
            key = self._key_of.get(id(prepared))
            if key is None:
                return  # not cached: the caller's object holds it (the predictor's image)
            added = tensor_bytes(embedding)
            self.entries.move_to_end(key)
            if self._make_room(added, protect=key):
                self.used += added
            else:
                prepared.unprompted_embedding = None

    def attach_heated(self, prepared: PreparedImage, key: Hashable, embedding) -> None:
        """Keep `embedding` (the image's embedding with a module and a heat prompt, by `key`) on `prepared`: the
        oldest of its others go beyond `HEATED_PER_IMAGE`; counted in the budget when the cache holds `prepared`
        (other images evicted first, lru), dropped again when it does not fit."""
        with self._lock:
            cached = self._key_of.get(id(prepared))
            before = prepared.nbytes
            heated = prepared.heated = prepared.heated if prepared.heated is not None else OrderedDict()
            heated[key] = embedding
            heated.move_to_end(key)
            while len(heated) > HEATED_PER_IMAGE:
                heated.popitem(last=False)
            if cached is None:
                return  # not cached: the caller's object holds it (the predictor's image)
            self.used -= before
            self.entries.move_to_end(cached)
            if not self._make_room(prepared.nbytes, protect=cached):
                heated.pop(key)
            self.used += prepared.nbytes

    def drop_heated(self) -> None:
        """Forget every kept embedding with a module (the modules changed); the prefixes stay."""
        with self._lock:
            for entry in self.entries.values():
                if entry.heated:
                    self.used -= entry.nbytes
                    entry.heated = None
                    self.used += entry.nbytes

    def _make_room(self, size: int, protect: Hashable | None = None) -> bool:
        if size > self.budget:
            return False
        while self.used + size > self.budget and self.evict == "lru" and len(self.entries) > (protect is not None):
            oldest = next(iter(self.entries))
            if oldest == protect:
                break
            self.discard(oldest)
        return self.used + size <= self.budget

    def discard(self, key: Hashable) -> None:
        with self._lock:
            entry = self.entries.pop(key, None)
            if entry is not None:
                self.used -= entry.nbytes
                self._key_of.pop(id(entry), None)

    @torch.no_grad()
    def compute(self, items: list[tuple]) -> list[PreparedImage]:
        """(image, mask | None) pairs -> their prepared images, in one prefix pass, kept nowhere."""
        tensors, geometries = zip(*(self.backbone.preprocess(image, stretch=self.stretch)
                                    for image, _ in items))
        return self.from_pixels(torch.stack(tensors), geometries, [_size(image) for image, _ in items],
                                [mask for _, mask in items])

    @torch.no_grad()
    def from_pixels(self, pixels: torch.Tensor, geometries: Sequence, sizes: Sequence[tuple[int, int]],
                    masks: Sequence | None = None) -> list[PreparedImage]:
        """B x 3 x S x S model inputs (normalized, padded) with their geometries and original sizes (and H x W
        training masks or None) -> their prepared images, in one prefix pass, kept nowhere."""
        tokens = self.backbone.prefix(pixels.to(self.device), self.stop_block)
        pooled = self.backbone.pool_stats(tokens).float().cpu()  # once, here: routing reads it from the entry
        out = []
        for k, geometry in enumerate(geometries):
            mask = None if masks is None else masks[k]
            frame = None if mask is None else (mask_to_input(mask, geometry) > 0.5).to(self.device)  # 1 byte a pixel
            out.append(PreparedImage(batch_ops.take(tokens, k), geometry, pooled[k], tuple(sizes[k]), frame))
        return out

    @staticmethod
    def stack(prefixes: Sequence[PreparedImage]):
        """The batch's prefix tokens (B first), in order."""
        return batch_ops.stack([p.tokens for p in prefixes])


def _size(image) -> tuple[int, int]:
    """(height, width) of an array or a PIL image."""
    if hasattr(image, "shape"):
        return int(image.shape[0]), int(image.shape[1])
    width, height = image.size
    return int(height), int(width)
