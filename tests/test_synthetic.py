"""The synthetic domain suite: deterministic, well-formed, and written in the reference layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from samcl.data import Sample, synthetic

N = 3


@pytest.fixture(scope="module")
def samples() -> dict[str, list[Sample]]:
    return {domain: synthetic.generate(domain, N, seed=7) for domain in synthetic.ALL_DOMAINS}


def test_domain_lists_are_consistent():
    assert synthetic.GENERAL not in synthetic.TARGET_DOMAINS
    assert len(synthetic.TARGET_DOMAINS) >= 5
    assert len(synthetic.UNSEEN_DOMAINS) >= 1
    assert not set(synthetic.TARGET_DOMAINS) & set(synthetic.UNSEEN_DOMAINS)
    assert synthetic.ALL_DOMAINS == (synthetic.GENERAL, *synthetic.TARGET_DOMAINS, *synthetic.UNSEEN_DOMAINS)


@pytest.mark.parametrize("domain", synthetic.ALL_DOMAINS)
def test_same_seed_gives_identical_bytes(domain, samples):
    again = synthetic.generate(domain, N, seed=7)
    for a, b in zip(samples[domain], again):
        assert a.name == b.name
        assert a.image.tobytes() == b.image.tobytes()
        assert a.mask.tobytes() == b.mask.tobytes()
        assert a.points.tobytes() == b.points.tobytes()


def test_prefix_of_a_longer_run_is_the_shorter_run(samples):
    longer = synthetic.generate("cells", N + 2, seed=7)
    assert all(a.image.tobytes() == b.image.tobytes() for a, b in zip(samples["cells"], longer))


def test_seeds_and_splits_are_independent_streams(samples):
    first = samples["polyps"][0]
    assert first.image.tobytes() != synthetic.generate("polyps", 1, seed=8)[0].image.tobytes()
    test = synthetic.generate("polyps", 1, seed=7, split="test")[0]
    assert test.image.tobytes() != first.image.tobytes()
    assert test.name != first.name


@pytest.mark.parametrize("domain", synthetic.ALL_DOMAINS)
def test_samples_are_well_formed(domain, samples):
    sizes = set()
    for sample in samples[domain]:
        h, w = sample.size
        assert sample.image.dtype == np.uint8 and sample.image.shape == (h, w, 3)
        assert sample.mask.dtype == bool and sample.mask.shape == (h, w)
        assert synthetic.MIN_SIDE <= h <= synthetic.MAX_SIDE and synthetic.MIN_SIDE <= w <= synthetic.MAX_SIDE
        assert h != w
        sizes.add((h, w))
        assert 0 < sample.mask.sum() < h * w
        assert sample.points.shape == (synthetic.NUM_POINTS, 2)
        assert sample.labels.tolist() == [1] * synthetic.NUM_POINTS
        for x, y in sample.points:
            assert sample.mask[int(y), int(x)], "every fixed point lies inside the mask"
    assert len(sizes) > 1, "image sizes vary per sample"


def test_general_instances_are_disjoint_visible_masks():
    for name, image, masks in synthetic.generate_general_instances(3, seed=1):
        assert name.startswith("general")
        assert masks and all(m.shape == image.shape[:2] for m in masks)
        assert (np.sum(masks, axis=0) <= 1).all()


def test_write_domain_round_trips_through_the_reference_layout(tmp_path):
    folder = synthetic.write_domain(tmp_path, "skin_lesions", n_train=2, n_test=1, seed=3)
    assert folder == tmp_path / "skin_lesions"
    for split, n in (("train", 2), ("test", 1)):
        expected = synthetic.generate("skin_lesions", n, seed=3, split=split)
        points = json.loads((folder / split / "masks" / "points.json").read_text())
        assert sorted(points) == sorted(f"{s.name}.jpg" for s in expected)
        for sample in expected:
            image = np.asarray(Image.open(folder / split / "images" / f"{sample.name}.png"))
            assert image.tobytes() == sample.image.tobytes()
            mask = np.asarray(Image.open(folder / split / "masks" / f"{sample.name}.jpg").convert("L"))
            assert ((mask > 127) == sample.mask).all()
            assert np.array(points[f"{sample.name}.jpg"]).tolist() == sample.points.tolist()


def test_jpeg_masks_need_thresholding(tmp_path):
    folder = synthetic.write_domain(tmp_path, "cells", n_train=1, n_test=0, seed=0)
    mask = np.asarray(Image.open(next((folder / "train" / "masks").glob("*.jpg"))).convert("L"))
    assert ((mask > 0) & (mask < 255)).any()


def test_unknown_domain_is_an_error_that_names_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="camouflage"):
        synthetic.generate("kvasir", 1, seed=0)
    with pytest.raises(ValueError, match="known domains"):
        synthetic.write_domain(tmp_path, "kvasir", 1, 1, seed=0)
    with pytest.raises(ValueError, match="split"):
        synthetic.generate("cells", 1, seed=0, split="val")
