"""Opening a store and segmenting one image reads each file once and hashes the base at most once per weights
file (path, size, mtime); a store created from Python records its base like one created by the CLI."""

from __future__ import annotations

import builtins
import io
import os
from collections import Counter
from pathlib import Path

import pytest
import transformers.modeling_utils
from helpers import toy_samples

from samcl import SAMCL, Prompt, SelectorConfig, TrainConfig, load_backbone
from samcl.backbone import base as backbone_base

FAST = TrainConfig(epochs=1, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_backbone):
    root = tmp_path_factory.mktemp("open-once")
    tiny_backbone.model.save_pretrained(root / "base")
    samcl = SAMCL.create(load_backbone(root / "base"), root / "set", selector=SelectorConfig(kind="mlp", samples_per_domain=4,
                                                                                            epochs=300))
    samcl.learn("red", toy_samples(4, (200, 30, 30), 0), FAST)
    samcl.learn("blue", toy_samples(4, (30, 30, 200), 1), FAST)
    return root


@pytest.fixture
def watched(monkeypatch, tmp_path_factory):
    """Counts every open of a file (Python's open, and the safetensors reader transformers uses) and every
    hash of a base's weights."""
    opened, hashed = Counter(), []
    real_open, real_safe_open = builtins.open, transformers.modeling_utils.safe_open
    real_identity = backbone_base.model_identity

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            opened[str(Path(file).resolve())] += 1
        return real_open(file, *args, **kwargs)

    def counting_safe_open(file, *args, **kwargs):
        opened[str(Path(file).resolve())] += 1
        return real_safe_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(transformers.modeling_utils, "safe_open", counting_safe_open)
    monkeypatch.setattr(backbone_base, "model_identity",
                        lambda *a, **k: (hashed.append(1), real_identity(*a, **k))[1])
    return opened, hashed


def open_and_segment(root: Path) -> str:
    samcl = SAMCL.open(root / "set")  # the base recorded by SAMCL.create, as the CLI would
    image = toy_samples(1, (200, 30, 30), 9)[0]
    return samcl.segment([image.image], [Prompt.of(points=image.points)])[0].domain


def test_store_created_from_python_records_its_base(saved):
    assert open_and_segment(saved) == "red"


def test_open_and_segment_reads_each_file_once_and_hashes_nothing(saved, watched):
    opened, hashed = watched
    open_and_segment(saved)
    ours = {path: count for path, count in opened.items() if path.startswith(str(saved))}
    assert ours, "no file of the store or the base was seen: the counting is broken"
    assert any(p.endswith("manifest.json") for p in ours) and any(p.endswith("config.json") for p in ours)
    assert any(p.endswith("model.safetensors") for p in ours)
    assert all(count == 1 for count in ours.values()), ours
    assert not hashed, "the base's weights were hashed although the store recorded them for this very file"


def test_a_changed_weights_file_is_hashed_again_once(saved, watched):
    opened, hashed = watched
    weights = saved / "base" / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same bytes, another mtime
    try:
        assert open_and_segment(saved) == "red"  # still the same weights: the hash matches
        assert len(hashed) == 1
    finally:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_sharded_base_records_every_shard(tmp_path, tiny_backbone):
    """A base saved in shards: the recorded source covers the index and every shard, so touching one shard
    makes the next open hash the weights again instead of trusting the store's record."""
    tiny_backbone.model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    shards = sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1
    source = load_backbone(tmp_path / "sharded").source
    files = [tmp_path / "sharded" / "model.safetensors.index.json", *shards]
    assert source["size"] == sum(f.stat().st_size for f in files)
    stat = shards[-1].stat()
    os.utime(shards[-1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load_backbone(tmp_path / "sharded").source != source
