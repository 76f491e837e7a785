"""Stores written by earlier samcl versions open, segment and learn as they did: the fixtures in tests/fixtures were
written in format version 1 by tests/fixtures/make_store_fixtures.py (its docstring says with which code), with
that code's answers for five images recorded beside each store."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import toy_samples

from samcl import SAMCL, TrainConfig
from samcl.store import FORMAT_VERSION, ModuleStore

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_store_fixtures import KINDS, probe_images  # noqa: E402


def fixture_copy(kind: str, tmp_path: Path, name: str = "store") -> Path:
    return Path(shutil.copytree(FIXTURES / f"store-v1-{kind}", tmp_path / name))


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_version_1_store_segments_as_the_code_that_wrote_it(kind, tmp_path):
    samcl = SAMCL.open(fixture_copy(kind, tmp_path))
    recorded = json.loads((FIXTURES / f"store-v1-{kind}.answers.json").read_text())
    for (image, prompt), answer in zip(probe_images(), recorded):
        result = samcl.segment([image], [prompt])[0]
        assert result.domain == answer["domain"]
        if answer["selector_score"] is None:
            assert result.domain_score is None
        else:
            assert result.domain_score == pytest.approx(answer["selector_score"], rel=1e-3, abs=1e-5)
        assert float(result.scores[0]) == pytest.approx(answer["score"], abs=1e-4)
        mask = np.unpackbits(np.frombuffer(bytes.fromhex(answer["mask"]), np.uint8))[: result.masks[0].size]
        agree = (mask.astype(bool) == result.masks[0].reshape(-1)).mean()
        assert agree >= 0.999, agree  # float rounding of another CPU may flip a pixel on the edge, no more


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_version_1_store_learns_as_one_written_now(kind, tmp_path):
    """Learning into the old store and into the same set saved by this samcl gives the same module, selector
    and routing."""
    old = fixture_copy(kind, tmp_path, "old")
    resaved = fixture_copy(kind, tmp_path, "resaved")
    store = ModuleStore(resaved)
    with store.lock():
        store.save(store.load())  # rewritten in this samcl's format
    config = TrainConfig(epochs=1, batch_size=2, progress=False)
    learned = []
    for path in (old, resaved):
        torch.manual_seed(0)
        samcl = SAMCL.open(path)
        samcl.learn("green", toy_samples(6, (30, 200, 30), 2), config)
        learned.append(SAMCL.open(path))
    a, b = learned
    assert a.domains == b.domains == ["red", "blue", "green"]
    written = json.loads((old / "manifest.json").read_text())
    assert written["format_version"] == FORMAT_VERSION == 3 and written["selector"]["config"]["tolerance"] == 0.95
    assert all("heat_mode" in d["config"] for d in written["domains"])  # version 2 and later write every key
    for name in a.domains:
        for key, tensor in a.module_set.modules[name].state_tensors().items():
            assert torch.equal(tensor, b.module_set.modules[name].state_tensors()[key]), (name, key)
    for key, tensor in a.module_set.selector.to_tensors().items():
        assert torch.equal(tensor, b.module_set.selector.to_tensors()[key]), key
    images, prompts = zip(*probe_images())
    assert [r.domain for r in a.segment(list(images), list(prompts))] == \
           [r.domain for r in b.segment(list(images), list(prompts))]


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_manifest_written_is_its_schema_dump_and_reads_back_as_the_same_model(kind, tmp_path):
    """One schema per saved thing: save validates the manifest through `Manifest` and writes its `to_dict`; reading
    the file gives the model that was written, and a domain's manifest record is the in-memory `DomainEntry`."""
    from samcl.store import DomainEntry, Manifest
    from samcl.store.schema import DomainRecord, ManifestSchema

    store = ModuleStore(fixture_copy(kind, tmp_path))
    with store.lock():
        written = store.save(store.load())
    on_disk = json.loads((store.path / "manifest.json").read_text())
    assert isinstance(written, Manifest) and written.to_dict() == on_disk
    assert list(on_disk) == list(written.to_dict())  # the key order too
    read = store.read_manifest()
    assert read == written and read.to_dict() == on_disk
    assert all(isinstance(d, DomainEntry) for d in read.domains) and DomainRecord is DomainEntry
    assert ManifestSchema is Manifest
    assert [d.to_dict() for d in store.load(manifest=read).domains] == on_disk["domains"]
