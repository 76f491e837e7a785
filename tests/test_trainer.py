import numpy as np
import torch
from helpers import toy_samples

from samcl import TrainConfig
from samcl.learning import train_module
from samcl.learning.trainer import segmentation_loss
from samcl.method import config_for


def _train(backbone, seed):
    config = config_for(backbone.site)
    return train_module(backbone, config, toy_samples(6, (200, 30, 30), 0), backbone.default_selector_block,
                        TrainConfig(epochs=2, batch_size=2, seed=seed, progress=False), torch.device("cpu"))


def test_training_is_deterministic_with_a_seed(tiny_backbone):
    a, stats_a, _ = _train(tiny_backbone, 3)
    b, stats_b, _ = _train(tiny_backbone, 3)
    c, _, _ = _train(tiny_backbone, 4)
    for name, tensor in a.state_tensors().items():
        assert torch.equal(tensor, b.state_tensors()[name])
    assert stats_a["loss_first"] == stats_b["loss_first"]
    assert any(not torch.equal(t, c.state_tensors()[n]) for n, t in a.state_tensors().items())
    assert any(t.abs().sum() > 0 for n, t in a.state_tensors().items() if n.startswith("b."))


def test_cosine_schedule_spans_the_whole_run(tiny_backbone):
    _, stats, _ = _train(tiny_backbone, 0)
    rates = stats["lr"]
    assert len(rates) == stats["steps"] == 6
    assert rates[0] == TrainConfig().lr
    assert all(later <= earlier for earlier, later in zip(rates, rates[1:]))  # no restart within the run
    assert rates[-1] < 0.1 * rates[0]


def test_loss_is_averaged_over_the_batch():
    torch.manual_seed(0)
    logits, target = torch.randn(1, 16, 16), (torch.rand(1, 16, 16) > 0.5).float()
    iou = torch.rand(1)
    config = TrainConfig()
    one = segmentation_loss(logits, iou, target, config)
    two = segmentation_loss(logits.repeat(2, 1, 1), iou.repeat(2), target.repeat(2, 1, 1), config)
    assert torch.allclose(one, two)


def test_empty_masks_are_skipped_with_a_warning(tiny_backbone, recwarn):
    samples = toy_samples(4, (200, 30, 30), 0)
    samples[1].mask = np.zeros_like(samples[1].mask)
    _, stats, _ = train_module(tiny_backbone, config_for(tiny_backbone.site), samples,
                               tiny_backbone.default_selector_block,
                               TrainConfig(epochs=1, batch_size=1, progress=False), torch.device("cpu"))
    assert stats["samples"] == 3
    assert any("empty mask" in str(w.message) for w in recwarn)


def test_every_sample_is_used_every_epoch():
    """3 samples, batch 2: two steps per epoch (the last one short), not one with a sample dropped; under two
    processes a last batch too small to give each a sample joins the previous one."""
    from samcl.learning.trainer import batch_bounds

    assert batch_bounds(3, 2) == [(0, 2), (2, 3)]
    assert batch_bounds(4, 2) == [(0, 2), (2, 4)]
    assert batch_bounds(5, 4, world=2) == [(0, 5)]
    assert batch_bounds(6, 4, world=2) == [(0, 4), (4, 6)]
    assert batch_bounds(1, 2) == [(0, 1)]


def test_a_diverging_learn_fails_and_saves_nothing(tmp_path, tiny_backbone):
    """A learning rate so large that the weights overflow: the loss turns NaN; learn fails with the reason, and
    the store keeps what it had."""
    import pytest
    import torch
    from helpers import toy_samples

    from samcl import SAMCL, SamclError, SelectorConfig

    samcl = SAMCL.create(tiny_backbone, tmp_path / "S", selector=SelectorConfig(kind="mlp", samples_per_domain=4, epochs=2))
    samcl.learn("red", toy_samples(4, (200, 30, 30), 0), TrainConfig(epochs=1, batch_size=2, progress=False))
    manifest = (tmp_path / "S" / "manifest.json").read_bytes()
    with pytest.raises(SamclError, match="diverged: the loss became nan") as diverged:
        samcl.learn("blue", toy_samples(4, (30, 30, 200), 1),
                    TrainConfig(epochs=2, batch_size=2, lr=1e30, progress=False))
    assert "smaller learning rate (TrainConfig.lr)" in str(diverged.value)  # the library speaks of its config
    assert diverged.value.cli.endswith("try a smaller --lr")  # the command, of its flag
    assert (tmp_path / "S" / "manifest.json").read_bytes() == manifest and samcl.domains == ["red"]
    assert all(torch.isfinite(t).all() for m in samcl.module_set.modules.values() for t in m.state_tensors().values())
