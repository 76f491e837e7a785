"""The serve package's pure parts: COCO RLE, the LRU prefix cache it keeps uploads in, the loopback rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samcl.inference import PrefixCache, PreparedImage
from samcl.serve import is_loopback
from samcl.serve.codec import coco_rle, rle_to_mask, run_lengths


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


def entry(nbytes: int) -> PreparedImage:
    return PreparedImage(torch.zeros(nbytes, dtype=torch.uint8), None, torch.zeros(0), (1, 1))


def test_cache_evicts_least_recently_used_within_its_byte_budget():
    cache = PrefixCache(None, 0, "cpu", budget=250, evict="lru")
    cache.put("a", entry(100))
    cache.put("b", entry(100))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", entry(100))
    assert "b" not in cache and "a" in cache and "c" in cache and cache.used == 200
    cache.put("huge", entry(251))
    assert "huge" not in cache and cache.used == 200  # larger than the whole budget: not kept
    cache.discard("a")
    cache.put("a", entry(50))  # a new entry counts its own size
    assert cache.used == 150 and cache.stats() == {"images": 2, "bytes": 150, "budget": 250}


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.5", "example.org"]))


def test_decode_many_equals_decode_per_image():
    """The server decodes a batch grouped by prompt shape; each result is the image's own `decode`."""
    from samcl import SAMCL, Prompt, load_backbone
    from samcl.inference import InputPrompt, PrefixCache

    engine = SAMCL.create(load_backbone("builtin:tiny-sam"), device="cpu").engine
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (50 + 9 * i, 70, 3), dtype=np.uint8) for i in range(5)]
    prompts = [Prompt.of([[10, 12]]), Prompt.of([[3, 4], [20, 30]], [1, 0]), Prompt.of([[5, 6]]),
               Prompt.of(None, None, [2, 3, 40, 45]), Prompt.of([[7, 8]], [1], [1, 1, 30, 30])]
    with torch.no_grad():
        prepared = engine.prepare(images)
        geometries = [p.geometry for p in prepared]
        inputs = [InputPrompt.of(p, g, engine.device) for p, g in zip(prompts, geometries)]
        embeddings = engine.suffix(PrefixCache.stack(prepared), [-1] * 5, inputs)
        each = [embeddings[j:j + 1] for j in range(5)]
        many = engine.decode_many(each, inputs, geometries, False, ["base"] * 5)
        for j, result in enumerate(many):
            alone = engine.decode(embeddings[j:j + 1], inputs[j], geometries[j], False, "base")
            assert np.array_equal(result.masks, alone.masks) and result.masks.shape[1:] == images[j].shape[:2]
            assert np.allclose(result.scores, alone.scores, atol=1e-5)
            assert torch.allclose(result.low_res, alone.low_res, atol=1e-4)
