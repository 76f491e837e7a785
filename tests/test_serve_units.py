"""The serve package's pure parts: COCO RLE, the per-image LRU cache, the loopback rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samcl.serve.cache import CachedImage, ImageCache
from samcl.serve.codec import coco_rle, rle_to_mask, run_lengths
from samcl.serve.config import is_loopback


def test_rle_is_cocos_compressed_form():
    mask = np.array([[0, 1], [1, 1]], bool)  # column-major: 0 1 1 1 -> runs 1, 3
    assert run_lengths(mask) == [1, 3]
    assert coco_rle(mask) == {"size": [2, 2], "counts": "13"}
    assert coco_rle(np.ones((2, 3), bool))["counts"] == "06"  # starts with an empty run of zeros
    # each run after the second is stored as its difference to the run two before: 6,3,2,3-3,2-2,3-3,6-2
    square = np.zeros((5, 5), bool)
    square[1:4, 1:4] = True
    assert coco_rle(square)["counts"] == "6320004"
    # a negative difference (1 - 10 = -9) ends on a group with its sign bit set: chr(48 + (-9 & 31)) = "G"
    column = np.array([0] + [1] * 10 + [0] + [1], bool)[:, None]
    assert coco_rle(column)["counts"] == "1:1G"


@pytest.mark.parametrize("seed", range(6))
def test_rle_round_trips(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
    mask = rng.random(shape) < [0.0, 1.0, 0.5, 0.05, 0.95, 0.3][seed]
    assert np.array_equal(rle_to_mask(coco_rle(mask)), mask)


def entry(nbytes: int) -> CachedImage:
    return CachedImage(torch.zeros(nbytes, dtype=torch.uint8), None, (1, 1))


def test_cache_evicts_least_recently_used_within_its_byte_budget():
    cache = ImageCache(budget=250)
    assert cache.put("a", entry(100)) and cache.put("b", entry(100))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", entry(100))
    assert "b" not in cache and "a" in cache and "c" in cache and cache.used == 200
    assert not cache.put("huge", entry(251)) and "huge" not in cache
    cache.put("a", entry(50))  # replacing an entry counts its new size only
    assert cache.used == 150 and cache.stats() == {"images": 2, "bytes": 150, "budget": 250}


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.5", "example.org"]))
