"""The selector kinds: statistics selectors that do not depend on learning order and forget exactly, the open-set
fallback to base and its switch, few-shot routing, and stores written before selector kinds existed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import toy_samples

from samcl import SAMCL, SelectorConfig, TrainConfig
from samcl.data import Sample
from samcl.selector import make_selector
from samcl.store import upgrade

FAST = TrainConfig(epochs=1, batch_size=2, progress=False)
STATS = ("ncm", "fecam", "ranpac")
COLOURS = {"red": (200, 30, 30), "blue": (30, 30, 200), "green": (30, 190, 40)}


def gaussian_domains(count: int, dim: int = 24, n: int = 30, seed: int = 0) -> list[torch.Tensor]:
    """`count` domains of N x 2D pooled features (separable, not trivially so)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 2 * dim, generator=g) + 2.0 * torch.randn(1, 2 * dim, generator=g) for _ in range(count)]


def fitted(kind: str, domains: list[torch.Tensor], dim: int = 24):
    selector = make_selector(SelectorConfig(kind=kind, proj_dim=16), dim)
    for x in domains:
        selector.add_domain(x)
    return selector


@pytest.mark.parametrize("kind", STATS)
def test_two_learning_orders_route_the_same(kind):
    train, test = gaussian_domains(4, seed=0), gaussian_domains(4, seed=0)
    test = [x + 0.3 * torch.randn_like(x) for x in test]
    order = [2, 0, 3, 1]
    one, two = fitted(kind, train), fitted(kind, [train[k] for k in order])
    x = torch.cat(test)
    first, _ = one.choose(x, fallback=False)
    second, _ = two.choose(x, fallback=False)
    assert first == [order[k] for k in second]
    assert sum(c == k // 30 for k, c in enumerate(first)) / len(first) > 0.9  # and it routes well


@pytest.mark.parametrize("kind", STATS)
def test_removing_a_class_equals_never_learning_it(kind):
    domains = gaussian_domains(4, seed=1)
    forgot = fitted(kind, domains)
    forgot.remove_domain(1)
    never = fitted(kind, [domains[0], domains[2], domains[3]])
    for key, tensor in never.to_tensors().items():
        assert torch.equal(tensor, forgot.to_tensors()[key]), key
    x = torch.cat(gaussian_domains(4, seed=2))
    assert forgot.choose(x) == never.choose(x)


def test_merging_selectors_and_classes():
    domains = gaussian_domains(4, seed=3)
    left, right = fitted("fecam", domains[:2]), fitted("fecam", domains[2:])
    left.merge(right)
    whole = fitted("fecam", domains)
    for key, tensor in whole.to_tensors().items():
        assert torch.equal(tensor, left.to_tensors()[key]), key
    left.merge_domains(0, 1)  # domain 1's images become domain 0's: the statistics of both together
    together = fitted("fecam", [torch.cat(domains[:2])] + domains[2:])
    assert torch.allclose(left.stats[0].mean, together.stats[0].mean, atol=1e-6)
    assert torch.allclose(left.stats[0].scatter, together.stats[0].scatter, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError):
        left.merge(fitted("ncm", domains[:1]))


def pooled(backbone, samples) -> torch.Tensor:
    with torch.no_grad():
        pixels = torch.stack([backbone.preprocess(s.image)[0] for s in samples])
        return backbone.pool_stats(backbone.prefix(pixels, backbone.default_selector_block))


def unlike_samples(n: int, seed: int) -> list[Sample]:
    """Grey stripes with a dark square: unlike the solid colour fields of COLOURS."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image = np.zeros((56, 88, 3), np.uint8) + (np.arange(88) % 6 < 3)[None, :, None] * 220
        image = np.clip(image + rng.integers(0, 30, image.shape), 0, 255).astype(np.uint8)
        mask = np.zeros((56, 88), bool)
        mask[10:30, 20:50] = True
        image[mask] = 40
        out.append(Sample(f"u{i}", image, mask, np.array([[30.0, 20.0]] * 3), np.ones(3, np.int64)))
    return out


def test_twelve_images_per_domain_route_and_unlike_goes_to_base(tiny_backbone):
    """Visibly different domains from 12 training images each: >= 95 % routed right; a never-learned domain unlike
    all of them goes to base (the fallback), and without the fallback to some learned domain."""
    selector = make_selector(SelectorConfig(), tiny_backbone.hidden_size)  # the default kind
    for k, colour in enumerate(COLOURS.values()):
        selector.add_domain(pooled(tiny_backbone, toy_samples(12, colour, seed=k)))
    right = total = 0
    for k, colour in enumerate(COLOURS.values()):
        chosen, _ = selector.choose(pooled(tiny_backbone, toy_samples(20, colour, seed=100 + k)))
        right, total = right + sum(c == k for c in chosen), total + len(chosen)
    assert right / total >= 0.95
    unlike = pooled(tiny_backbone, unlike_samples(10, 5))
    chosen, scores = selector.choose(unlike)
    assert sum(c == -1 for c in chosen) >= 9 and max(scores) < 0.01
    assert -1 not in selector.choose(unlike, fallback=False)[0]


@pytest.fixture(scope="module")
def stats_store(tmp_path_factory, tiny_backbone):
    path = tmp_path_factory.mktemp("kinds") / "set"
    samcl = SAMCL.create(tiny_backbone, path, selector=SelectorConfig(kind="fecam"))
    for k, (name, colour) in enumerate(list(COLOURS.items())[:2]):
        samcl.learn(name, toy_samples(12, colour, seed=k), FAST)
    return path, samcl


def test_fallback_switch(stats_store, tiny_backbone):
    path, samcl = stats_store
    images = [s.image for s in unlike_samples(2, 9)] + [toy_samples(1, COLOURS["blue"], seed=50)[0].image]
    prompts = [__import__("samcl").Prompt.of([[30, 20]])] * 3
    results = samcl.segment(images, prompts)
    assert [r.domain for r in results] == ["base", "base", "blue"]
    assert results[2].domain_score > results[0].domain_score
    assert all(r.domain != "base" for r in samcl.segment(images, prompts, fallback=False))
    closed = SAMCL.open(path, base=tiny_backbone, fallback=False)
    assert closed.module_set.selector_config.kind == "fecam"
    assert [r.domain for r in closed.segment(images, prompts)][:2] != ["base", "base"]
    reopened = SAMCL.open(path, base=tiny_backbone)  # stored statistics route exactly as in memory
    again = reopened.segment(images, prompts)
    assert [r.domain_score for r in again] == [r.domain_score for r in results]


def test_store_without_selector_kind_opens_and_segments_identically(tmp_path, tiny_backbone):
    """A store as written before selector kinds existed (its manifest names no kind: the MLP on the grid mean)."""
    path = tmp_path / "old"
    samcl = SAMCL.create(tiny_backbone, path, selector=SelectorConfig(kind="mlp", samples_per_domain=6, epochs=3))
    samcl.learn("red", toy_samples(6, COLOURS["red"], 0), FAST)
    samcl.learn("blue", toy_samples(6, COLOURS["blue"], 1), FAST)
    manifest = json.loads((path / "manifest.json").read_text())
    for key in ("kind", "features", "proj_dim", "shrink", "ridge", "frr"):
        manifest["selector"].pop(key, None)
        manifest["selector"]["config"].pop(key, None)
    manifest["format_version"] = 1  # the format that left those keys out (version 2 writes every one)
    (path / "manifest.json").write_text(json.dumps(manifest))
    images = [s.image for s in toy_samples(3, COLOURS["red"], 7) + toy_samples(3, COLOURS["blue"], 8)]
    prompts = [__import__("samcl").Prompt.of([[20, 20]])] * len(images)
    before = samcl.segment(images, prompts)
    old = SAMCL.open(path, base=tiny_backbone)
    assert old.module_set.selector_config.kind == "mlp" and old.module_set.selector_config.features == "mean"
    after = old.segment(images, prompts)
    assert [r.domain for r in after] == [r.domain for r in before]
    for a, b in zip(after, before):
        assert np.array_equal(a.masks, b.masks) and np.array_equal(a.scores, b.scores)


def test_per_domain_shrinkage_keeps_many_domains_apart():
    """100 domains of one shared (anisotropic) shape, 24 images each in 48 dimensions: the Ledoit-Wolf intensity
    pulls each domain's noisy covariance to the pooled one; a fixed 16-sample shrink leaves it noisy."""
    def accuracy(shrink):
        g = torch.Generator().manual_seed(3)
        shape = torch.randn(48, 48, generator=g) / 48 ** 0.5 * torch.linspace(0.2, 2.0, 48)
        selector = make_selector(SelectorConfig(kind="fecam", shrink=shrink), 24)
        centres = [0.4 * torch.randn(1, 48, generator=g) for _ in range(100)]
        for centre in centres:
            selector.add_domain(centre + torch.randn(24, 48, generator=g) @ shape)
        test = torch.cat([centre + torch.randn(10, 48, generator=g) @ shape for centre in centres])
        chosen, _ = selector.choose(test, fallback=False)
        again = type(selector).from_tensors(selector.config, 24, selector.to_tensors())
        assert again.choose(test) == selector.choose(test)  # beta is stored: the reloaded set routes the same
        return sum(c == i // 10 for i, c in enumerate(chosen)) / len(chosen)

    per_domain, fixed = accuracy(None), accuracy(16.0)
    assert per_domain > 0.95 and per_domain > fixed + 0.08, (per_domain, fixed)


def test_tolerance_bound_keeps_false_rejects_under_the_target():
    from samcl.selector.calibration import tolerance_factor

    # Natrella's closed form against the exact noncentral-t factors (n = 12 and 48, 99 % content, 95 % confidence)
    assert tolerance_factor(12, 0.01, 0.95) == pytest.approx(3.7471, rel=0.015)
    assert tolerance_factor(48, 0.01, 0.95) == pytest.approx(2.8759, rel=0.015)

    def rejected(**kw):
        g = torch.Generator().manual_seed(5)
        selector = make_selector(SelectorConfig(kind="fecam", frr=0.01, **kw), 24)
        test = []
        for _ in range(30):  # 48 training images per domain, 200 new images of the same domain
            centre = 2.0 * torch.randn(1, 48, generator=g)
            selector.add_domain(centre + torch.randn(48, 48, generator=g))
            test.append(centre + torch.randn(200, 48, generator=g))
        chosen, _ = selector.choose(torch.cat(test))
        return sum(c == -1 for c in chosen) / len(chosen)

    bounded, plain = rejected(), rejected(tolerance=0.0)
    assert bounded <= 0.01 and bounded < plain, (bounded, plain)


def test_fecam_config_from_before_the_tolerance_bound_keeps_its_rule():
    old = {"kind": "fecam", "features": "mean_std", "block": None, "samples_per_domain": 300, "epochs": 25,
           "lr": 0.01, "batch_size": 24, "max_steps": 2000, "proj_dim": 128, "shrink": 16.0, "ridge": 0.001,
           "frr": 0.01}  # what the manifest of a store made before it holds
    upgraded = upgrade({"format_version": 1, "selector": {"kind": "fecam", "config": old}})  # format version 1
    config = SelectorConfig.from_manifest(upgraded["selector"]["config"])
    assert (config.tolerance, config.shrink, config.proj_dim) == (0.0, 16.0, 128)
    domains = gaussian_domains(3, seed=4)
    selector = make_selector(config, 24)
    for x in domains:
        selector.add_domain(x)
    assert "beta" not in selector.to_tensors()  # the tensors such a store holds, and nothing more
    x = torch.cat(gaussian_domains(3, seed=5)) * 1.5
    chosen, scores = selector.choose(x)
    closed, _ = selector.choose(x, fallback=False)
    assert chosen == [-1 if s < 0.01 else k for k, s in zip(closed, scores)]  # the plain quantile, as before
    assert -1 in chosen


def test_fecam_store_from_before_the_tolerance_bound_opens_and_segments_identically(tmp_path, tiny_backbone):
    """A fecam store as written before the per-domain shrinkage and the tolerance bound (its manifest has a fixed
    `shrink`, `proj_dim` 128 and no `tolerance`; its tensors no `beta`)."""
    path = tmp_path / "old"
    samcl = SAMCL.create(tiny_backbone, path, selector=SelectorConfig(kind="fecam", shrink=16.0, proj_dim=128,
                                                                      tolerance=0.0))
    for k, (name, colour) in enumerate(list(COLOURS.items())[:2]):
        samcl.learn(name, toy_samples(12, colour, seed=k), FAST)
    manifest = json.loads((path / "manifest.json").read_text())
    for section in (manifest["selector"], manifest["selector"].get("config", {})):
        section.pop("tolerance", None)
    manifest["format_version"] = 1  # the format that left it out (version 2 writes every key)
    (path / "manifest.json").write_text(json.dumps(manifest))
    images = [s.image for s in unlike_samples(2, 9) + toy_samples(2, COLOURS["red"], 7)]
    prompts = [__import__("samcl").Prompt.of([[20, 20]])] * len(images)
    before = samcl.segment(images, prompts)
    old = SAMCL.open(path, base=tiny_backbone)
    config = old.module_set.selector_config
    assert (config.kind, config.shrink, config.proj_dim, config.tolerance) == ("fecam", 16.0, 128, 0.0)
    after = old.segment(images, prompts)
    assert [(r.domain, r.domain_score) for r in after] == [(r.domain, r.domain_score) for r in before]
    for a, b in zip(after, before):
        assert np.array_equal(a.masks, b.masks) and np.array_equal(a.scores, b.scores)


def test_mlp_on_mean_and_spread_reads_both_and_reopens(tmp_path, tiny_backbone):
    """`features="mean_std"` for the MLP: its network and buffer take 2D columns (not silently the mean alone), and
    the store reopens with the same widths and routing."""
    path = tmp_path / "mlp-std"
    samcl = SAMCL.create(tiny_backbone, path, selector=SelectorConfig(kind="mlp", features="mean_std",
                                                                      samples_per_domain=6, epochs=3))
    for k, (name, colour) in enumerate(list(COLOURS.items())[:2]):
        samcl.learn(name, toy_samples(6, colour, seed=k), FAST)
    selector = samcl.module_set.selector
    width = 2 * tiny_backbone.hidden_size
    assert selector.net.features[0].in_features == width and selector.buffer.features.shape[1] == width
    images = [s.image for s in toy_samples(2, COLOURS["red"], 7) + toy_samples(2, COLOURS["blue"], 8)]
    prompts = [__import__("samcl").Prompt.of([[20, 20]])] * len(images)
    before = samcl.segment(images, prompts)
    again = SAMCL.open(path, base=tiny_backbone)
    assert again.module_set.selector_config.features == "mean_std"
    assert [(r.domain, r.domain_score) for r in again.segment(images, prompts)] == \
        [(r.domain, r.domain_score) for r in before]


@pytest.mark.parametrize("kind", STATS)
def test_domains_of_one_and_two_images(kind):
    """Domains of one and two images have no covariance of their own (they take the pooled one; for two images the
    Ledoit-Wolf variance is 0 and would keep a singular covariance) and no open-set fit; neither breaks routing."""
    g = torch.Generator().manual_seed(0)
    one, many = torch.randn(1, 48, generator=g), torch.randn(10, 48, generator=g) + 3
    two = torch.randn(2, 48, generator=g) - 3
    selector = make_selector(SelectorConfig(kind=kind), 24)
    for x in (one, many, two):
        selector.add_domain(x)
    chosen, scores = selector.choose(torch.cat([one, many[:2], two]))
    assert chosen == [0, 1, 1, 2, 2] and all(0 <= s <= 1 for s in scores)


def test_merged_classes_keep_the_fit_looser_at_the_configured_frr():
    from samcl.selector.calibration import Calibration

    wide, narrow = Calibration(0.0, 1.0), Calibration(1.0, 0.1)  # log-distance quantiles cross at z = 1 / 0.9
    assert wide.looser(narrow, frr=0.01) == wide  # z(0.99) = 2.33: the wide fit reaches farther
    assert wide.looser(narrow, frr=0.4) == narrow  # z(0.6) = 0.25: the narrow fit's quantile is higher


def test_frames_of_one_video_are_held_out_together_so_new_videos_of_the_domain_are_not_sent_to_base():
    """A domain learned from 12 videos of 10 near-identical frames: folds that split a video measure each held-out
    frame against statistics fitted on its own video's other frames, and the cut sends most new videos of the domain
    to base; folds by video (`Sample.group`) keep them under a few percent."""
    def rejected(grouped: bool) -> float:
        g = torch.Generator().manual_seed(3)
        selector = make_selector(SelectorConfig(kind="fecam", frr=0.01), 24)
        test = []
        for _ in range(4):  # domains
            centre = 2.0 * torch.randn(1, 48, generator=g)

            def videos(n):
                return (centre + torch.randn(n, 1, 48, generator=g) + 0.2 * torch.randn(n, 10, 48, generator=g))

            groups = [f"video{v}" for v in range(12) for _ in range(10)] if grouped else None
            selector.add_domain(videos(12).reshape(120, 48), groups=groups)
            test.append(videos(30).reshape(300, 48))
        chosen, _ = selector.choose(torch.cat(test))
        return sum(c == -1 for c in chosen) / len(chosen)

    by_video, by_frame = rejected(True), rejected(False)
    assert by_video <= 0.05 and by_frame >= 0.3, (by_video, by_frame)


def test_frames_learned_from_clips_carry_their_clip_as_group_into_the_selector(tiny_backbone, monkeypatch):
    from samcl.data import synthetic
    from samcl.data.synthetic.video import clip_samples, generate_clips
    from samcl.selector.stats import StatsSelector

    samples = clip_samples(generate_clips(synthetic.GENERAL, 2, 0, "train"))
    assert len({s.group for s in samples}) == 2 and all(s.name.startswith(s.group) for s in samples)
    seen = []
    real = StatsSelector.add_domain
    monkeypatch.setattr(StatsSelector, "add_domain",
                        lambda self, pooled, seed=0, progress=False, groups=None: seen.append((len(pooled), groups))
                        or real(self, pooled, seed, progress, groups=groups))
    samcl = SAMCL.create(tiny_backbone, selector=SelectorConfig(kind="fecam"))
    samcl.learn("clips", samples, FAST, without_module=True)
    samcl.learn("images", toy_samples(6, COLOURS["blue"], seed=1), FAST)
    assert seen[0] == (len(samples), [s.group for s in samples]) and seen[1] == (6, None)


def test_folder_frames_grouped_by_their_video_name_reach_the_selector_and_a_bad_pattern_is_one_line(
        tmp_path, tiny_backbone, monkeypatch, capsys):
    from helpers import write_split

    from samcl.cli import main
    from samcl.data import FolderDataset
    from samcl.selector.stats import StatsSelector

    samples = [Sample(f"clip{v}_{t:03d}", s.image, s.mask, s.points) for v in range(2) for t, s in
               enumerate(toy_samples(3, COLOURS["red"], seed=v))]
    split = write_split(tmp_path / "frames" / "train", samples, with_points=False)
    data = FolderDataset(split, group_by=r"(.+)_\d+$")
    monkeypatch.setattr(type(data), "__getitem__", lambda self, i: pytest.fail("read an image"))
    assert [data.group_of(i) for i in range(len(data))] == ["clip0"] * 3 + ["clip1"] * 3
    monkeypatch.undo()
    assert FolderDataset(split, group_by=r"(.+)_\d+$")[4].group == "clip1" and FolderDataset(split)[4].group is None
    seen = []
    real = StatsSelector.add_domain
    monkeypatch.setattr(StatsSelector, "add_domain", lambda self, pooled, seed=0, progress=False, groups=None:
                        seen.append(groups) or real(self, pooled, seed, progress, groups=groups))
    store = tmp_path / "store"
    common = ["learn", str(store), "--domain", "red", "--data", str(split), "--epochs", "1", "--without-module"]
    assert main([*common, "--group-by", r"(.+)_\d+$"]) == 0 and seen == [["clip0"] * 3 + ["clip1"] * 3]
    capsys.readouterr()
    for pattern, problem in (("(.+", "--group-by (.+: not a regular expression"),
                             (r".+_\d+$", "needs a group"), (r"(x.+)_\d+$", "does not match --group-by")):
        assert main(["learn", str(tmp_path / "other"), "--domain", "red", "--data", str(split), "--group-by",
                     pattern]) == 2
        err = capsys.readouterr().err.strip()
        assert problem in err and err.count("\n") == 0, err
    assert not (tmp_path / "other").exists()
