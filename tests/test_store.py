import json

import pytest
import torch
from conftest import tiny_sam_config
from helpers import assert_same_tensors, toy_samples

from samcl import SAMCL, Prompt, SamclError, SelectorConfig, TrainConfig
from samcl.backbone import SamBackbone
from samcl.store import ModuleStore

FAST = TrainConfig(epochs=1, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def learned_store(tmp_path_factory, tiny_backbone):
    path = tmp_path_factory.mktemp("store") / "set"
    samcl = SAMCL.create(tiny_backbone, path, selector=SelectorConfig(kind="mlp", samples_per_domain=6, epochs=3))
    samcl.learn("red", toy_samples(6, (200, 30, 30), 0), FAST)
    samcl.learn("blue", toy_samples(6, (30, 30, 200), 1), FAST)
    return path, samcl


def test_store_round_trip_is_bit_exact(learned_store, tiny_backbone):
    path, samcl = learned_store
    reopened = SAMCL.open(path, base=tiny_backbone)
    assert reopened.domains == ["red", "blue"]
    assert_same_tensors(samcl, reopened)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == 3 and [d["name"] for d in manifest["domains"]] == ["red", "blue"]
    assert all(d["bytes"] == d["parameters"] * 4 for d in manifest["domains"])
    assert not list(path.rglob("*.pt")) and not list(path.rglob("*.pkl"))


def test_wrong_base_is_a_clear_error(learned_store):
    path, _ = learned_store
    other = SamBackbone.from_config(tiny_sam_config(), seed=123)
    with pytest.raises(SamclError, match="different base model"):
        SAMCL.open(path, base=other)


def test_tampered_module_is_named(learned_store, tmp_path, tiny_backbone):
    import shutil

    path, _ = learned_store
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    victim = copy / manifest["domains"][1]["file"]
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(SamclError, match=victim.name):
        SAMCL.open(copy, base=tiny_backbone)


def test_newer_format_is_refused(learned_store, tmp_path):
    import shutil

    path, _ = learned_store
    copy = tmp_path / "newer"
    shutil.copytree(path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SamclError, match="newer samcl"):
        ModuleStore(copy).read_manifest()


def test_duplicate_domain_leaves_store_unchanged(learned_store, tiny_backbone):
    path, _ = learned_store
    before = (path / "manifest.json").read_bytes()
    samcl = SAMCL.open(path, base=tiny_backbone)
    with pytest.raises(SamclError, match="already"):
        samcl.learn("red", toy_samples(4, (200, 30, 30), 5), FAST)
    assert (path / "manifest.json").read_bytes() == before


def test_a_domain_without_module_and_predictor_select(learned_store, tiny_backbone, tmp_path):
    samcl = SAMCL.create(tiny_backbone, tmp_path / "b", selector=SelectorConfig(kind="mlp", samples_per_domain=6, epochs=20))
    samcl.learn("general", toy_samples(6, (120, 120, 120), 3), FAST, without_module=True)
    samcl.learn("red", toy_samples(6, (200, 30, 30), 0), FAST)
    assert [d.kind for d in samcl.module_set.domains] == ["no_module", "module"]
    predictor = samcl.predictor()
    sample = toy_samples(1, (200, 30, 30), 9)[0]
    predictor.set_image(sample.image)
    masks, scores, low_res = predictor.predict(sample.points, sample.labels, multimask_output=True)
    assert masks.shape == (3, *sample.mask.shape) and scores.shape == (3,)
    assert predictor.domain in ("red", "base")
    predictor.set_image(sample.image, force="base")
    assert predictor.domain == "base"


def test_a_version_2_store_with_a_base_kind_domain_opens_as_no_module(tiny_backbone, tmp_path):
    samcl = SAMCL.create(tiny_backbone, tmp_path / "b", selector=SelectorConfig(kind="ncm"))
    samcl.learn("general", toy_samples(6, (120, 120, 120), 3), FAST, without_module=True)
    samcl.learn("red", toy_samples(6, (200, 30, 30), 0), FAST)
    images = [s.image for s in toy_samples(2, (120, 120, 120), 7) + toy_samples(2, (200, 30, 30), 8)]
    before = [(r.domain, r.domain_score) for r in samcl.segment(images, [Prompt.of()] * 4)]
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [d["kind"] for d in manifest["domains"]] == ["no_module", "module"]
    manifest["format_version"], manifest["domains"][0]["kind"] = 2, "base"  # what samcl 0.x wrote
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    old = SAMCL.open(tmp_path / "b", base=tiny_backbone)
    assert [d.kind for d in old.module_set.domains] == ["no_module", "module"]
    assert [(r.domain, r.domain_score) for r in old.segment(images, [Prompt.of()] * 4)] == before


def test_failed_learn_leaves_the_in_memory_set_unchanged(learned_store, tiny_backbone, monkeypatch):
    path, _ = learned_store
    samcl = SAMCL.open(path, base=tiny_backbone)
    before = ([d.name for d in samcl.module_set.domains], samcl.module_set.buffer.features.clone(),
              {k: v.clone() for k, v in samcl.module_set.selector.to_tensors().items()})
    def disk_full(*args, **kwargs):  # the last step of a learn: everything in memory has changed by now
        raise SamclError("store: cannot write (No space left on device)")

    monkeypatch.setattr(samcl.store, "save", disk_full)
    with pytest.raises(SamclError, match="No space"):
        samcl.learn("green", toy_samples(4, (30, 200, 30), 7), FAST)
    monkeypatch.undo()
    assert [d.name for d in samcl.module_set.domains] == before[0] and "green" not in samcl.module_set.modules
    assert torch.equal(samcl.module_set.buffer.features, before[1])
    for key, tensor in samcl.module_set.selector.to_tensors().items():
        assert torch.equal(tensor, before[2][key])
    samcl.learn("green", toy_samples(4, (30, 200, 30), 7), FAST)  # and the set still learns afterwards
    assert samcl.domains[-1] == "green"


def test_store_without_its_manifest_is_refused_and_kept(tmp_path, tiny_backbone):
    """A copy whose manifest.json is gone (or a folder holding only modules/) still proves a store was there:
    learning into it is refused with the reason, and not one file is deleted."""
    import shutil

    from helpers import toy_samples

    from samcl import SamclError

    fast = TrainConfig(epochs=1, batch_size=2, progress=False)
    samcl = SAMCL.create(tiny_backbone, tmp_path / "S", selector=SelectorConfig(kind="mlp", samples_per_domain=4, epochs=2))
    samcl.learn("red", toy_samples(4, (200, 30, 30), 0), fast)
    samcl.learn("blue", toy_samples(4, (30, 30, 200), 1), fast)
    for variant in ("no-manifest", "modules-only"):
        copy = tmp_path / variant
        shutil.copytree(tmp_path / "S", copy)
        (copy / "manifest.json").unlink()
        if variant == "modules-only":
            for path in copy.iterdir():
                if path.is_file():
                    path.unlink()
        before = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*"))
        again = SAMCL.create(tiny_backbone, copy, selector=SelectorConfig(kind="mlp", samples_per_domain=4, epochs=2))
        with pytest.raises(SamclError, match="holds samcl store files .* but no manifest.json"):
            again.learn("cells", toy_samples(4, (30, 200, 30), 2), fast)
        assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*")) == before


def test_domain_names_match_in_full_and_base_is_reserved(tmp_path, tiny_backbone):
    """'abc\\n' is not 'abc' (a `$` would match before the newline), and 'base' names SAM without a module."""
    from helpers import toy_samples

    samcl = SAMCL.create(tiny_backbone, tmp_path / "S", selector=SelectorConfig(samples_per_domain=4, epochs=2))
    samples = toy_samples(4, (200, 30, 30), 0)
    for name, problem in [("abc\n", "use letters, digits"), ("base", "reserved"), ("-x", "use letters, digits"),
                          ("a" * 65, "use letters, digits")]:
        with pytest.raises(SamclError, match=problem):
            samcl.learn(name, samples, TrainConfig(epochs=1, batch_size=2, progress=False))
    assert not (tmp_path / "S").exists()
