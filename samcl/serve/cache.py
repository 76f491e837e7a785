"""The server's per-image cache: what `SamclPredictor.set_image` holds, for many images, within a byte budget.

    cache = ImageCache(budget=512 << 20)
    cache.put(image_id, CachedImage(tokens, geometry, (h, w)))
    entry = cache.get(image_id)                 # None once evicted: the client uploads the image again
    entry.choices[identity] = (index, score)    # the selector's pick, per loaded store (manifest sha256)

An entry holds the image's prefix tokens (blocks 0..s, one image's own copy), its resize geometry and the
selector's choice under each store it was segmented under, keyed by the store's identity (its manifest's
sha256; a `learn` retrains the selector, so a new generation chooses again from the same tokens: the frozen
base makes the tokens valid for ever). The decoded
pixels are not kept. Least recently used entries go first; an entry larger than the whole budget is not kept.
Thread-safe: the event loop reads it, the model thread writes it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..sizes import tensor_bytes


@dataclass
class CachedImage:
    """One image's prefix tokens (no batch dimension), resize geometry, (height, width), and choices."""

    tokens: Any
    geometry: Any
    size: tuple[int, int]
    choices: dict[str, tuple[int, float | None]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.tokens)


class ImageCache:
    """image id -> `CachedImage`, least recently used first out, total `nbytes` within `budget`."""

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self._entries: OrderedDict[str, CachedImage] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> CachedImage | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: str, entry: CachedImage) -> bool:
        """Keep `entry` (evicting the least recently used as needed); False if it alone exceeds the budget."""
        size = entry.nbytes
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.used -= old.nbytes
            if size > self.budget:
                return False
            while self._entries and self.used + size > self.budget:
                _, evicted = self._entries.popitem(last=False)
                self.used -= evicted.nbytes
            self._entries[key] = entry
            self.used += size
            return True

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def stats(self) -> dict:
        with self._lock:
            return {"images": len(self._entries), "bytes": self.used, "budget": self.budget}
