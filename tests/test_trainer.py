import numpy as np
import torch
from helpers import toy_samples

from samcl import TrainConfig
from samcl.learning import train_module
from samcl.learning.trainer import segmentation_loss
from samcl.method import config_for
from samcl.cli.errors import error_line


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
    assert diverged.value.field == "TrainConfig.lr" and error_line(diverged.value).endswith("learning rate (--lr)")
    assert (tmp_path / "S" / "manifest.json").read_bytes() == manifest and samcl.domains == ["red"]
    assert all(torch.isfinite(t).all() for m in samcl.module_set.modules.values() for t in m.state_tensors().values())


def _geometries(backbone, samples):
    from samcl.backbone.preprocess import ResizeGeometry

    return [ResizeGeometry.for_image(*s.mask.shape, input_size=backbone.image_size) for s in samples]


def test_reference_prompts_are_the_papers_points_for_the_same_seed(tiny_backbone):
    """The reference regime draws exactly what the trainer drew before the mix existed: points_per_image
    positives from each mask, from the stream (seed, epoch, sample index)."""
    from samcl.learning.trainer import train_step_prompts
    from samcl.method.prompts import sample_points

    samples = toy_samples(3, (200, 30, 30), 0)
    geometries = _geometries(tiny_backbone, samples)
    config = TrainConfig(prompts="reference", seed=7)
    batch = train_step_prompts(samples, [2, 0], [geometries[2], geometries[0]], config, 4)
    expected = torch.stack([geometries[i].coords_to_input(sample_points(samples[i].mask, 3,
                                                                        np.random.default_rng([7, 4, i])))
                            for i in (2, 0)])
    assert torch.equal(batch.points, expected)
    assert batch.labels is None and batch.boxes is None and batch.shapes == [(3, False)] * 2


def test_no_prompt_paints_zero_heat_and_padding_changes_no_sample(tiny_backbone):
    """In a batch of mixed prompts, each sample's heat is its heat alone (padding paints nothing; a sample
    without a box gets none), and a sample with no prompt has zero heat."""
    from samcl.learning.trainer import PromptBatch
    from samcl.method.prompts import TrainingPrompt

    samples = toy_samples(3, (200, 30, 30), 0)
    geometries = _geometries(tiny_backbone, samples)
    prompts = [TrainingPrompt("negatives", np.array([[30.0, 20.0], [5.0, 5.0]], np.float32), np.array([1, 0])),
               TrainingPrompt("none"), TrainingPrompt("box", box=np.array([10.0, 10.0, 40.0, 30.0], np.float32))]
    heat = PromptBatch.collate(prompts, geometries).heat(tiny_backbone)
    assert heat[1].abs().sum() == 0 and heat[0].abs().sum() > 0 and heat[2].abs().sum() > 0
    for j in (0, 2):
        alone = PromptBatch.collate([prompts[j]], [geometries[j]]).heat(tiny_backbone)
        assert torch.equal(heat[j], alone[0])


def test_a_mixed_batch_decodes_each_prompt_as_it_would_alone(tiny_backbone):
    """Samples of different prompt shapes are decoded in groups without padding: each sample's logits equal
    its own decoding (inference decodes one image's prompt alone), in batch order."""
    from samcl.learning.trainer import PromptBatch
    from samcl.method.prompts import TrainingPrompt

    samples = toy_samples(4, (200, 30, 30), 0)
    geometries = _geometries(tiny_backbone, samples)
    prompts = [TrainingPrompt("points", np.array([[30.0, 20.0]], np.float32), np.array([1])),
               TrainingPrompt("none"),
               TrainingPrompt("box_points", np.array([[30.0, 20.0], [31.0, 22.0]], np.float32), np.array([1, 1]),
                              np.array([10.0, 10.0, 40.0, 30.0], np.float32)),
               TrainingPrompt("points", np.array([[12.0, 25.0]], np.float32), np.array([1]))]
    rows, cols = tiny_backbone.grid
    embeddings = torch.randn(4, tiny_backbone.model.config.vision_config.output_channels, rows, cols,
                             generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        low, iou = PromptBatch.collate(prompts, geometries).decode(tiny_backbone, embeddings)
        for j, prompt in enumerate(prompts):
            one = PromptBatch.collate([prompt], [geometries[j]])
            points = None if prompt.points is None else one.points
            alone_low, alone_iou = tiny_backbone.decode(embeddings[j:j + 1], points,
                                                        None if points is None else one.labels, one.boxes)
            assert torch.allclose(low[j], alone_low[0], atol=1e-5) and torch.allclose(iou[j], alone_iou[0], atol=1e-5)


def test_a_module_learns_with_the_mix(tiny_backbone):
    """One epoch on three small images with every kind of prompt: a finite loss and a trained module."""
    samples = toy_samples(3, (200, 30, 30), 0)
    config = TrainConfig(epochs=2, batch_size=2, seed=0, progress=False, mix_negatives=0.2, mix_box=0.2,
                         mix_box_points=0.2, mix_none=0.2)
    assert config.prompts == "mix"
    module, stats, _ = train_module(tiny_backbone, config_for(tiny_backbone.site), samples,
                                    tiny_backbone.default_selector_block, config, torch.device("cpu"))
    assert np.isfinite(stats["loss_last"]) and stats["steps"] == 4
    assert any(t.abs().sum() > 0 for n, t in module.state_tensors().items() if n.startswith("b."))


def test_mix_shares_over_one_are_refused():
    import pytest

    with pytest.raises(ValueError, match="mix_negatives \\+ mix_box \\+ mix_box_points \\+ mix_none 1.55"):
        TrainConfig(mix_box=0.6, mix_none=0.6)
    assert TrainConfig(mix_negatives=0.25, mix_box=0.25, mix_box_points=0.25, mix_none=0.25).mix_weights["points"] == 0
