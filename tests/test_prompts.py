import numpy as np
import torch
from heat_checks import assert_heat_lands_on_its_token

from samcl.backbone.preprocess import ResizeGeometry
from samcl.method import AugModule, HeatConfig, config_for, render_heat, sample_points
from samcl.method.prompts import sample_rng


def test_point_heat_peaks_at_its_own_token_not_transposed():
    heat = render_heat(torch.tensor([[[45.0, 13.0]]]), None, None, (8, 8), 8.0, HeatConfig(1.0, 5))
    row, col = divmod(int(heat[0].argmax()), 8)
    assert (row, col) == (1, 5)  # y = 13 px -> row 1, x = 45 px -> column 5


def test_negative_points_and_boxes_reach_the_heat():
    points = torch.tensor([[[4.0, 4.0], [60.0, 60.0]]])
    heat = render_heat(points, torch.tensor([[1, 0]]), torch.tensor([[32.0, 0.0, 63.0, 20.0]]), (8, 8), 8.0)
    assert heat[0, 0, 0] > 0.9 and heat[0, 7, 7] < -0.9
    assert torch.all(heat[0, 0:2, 4:8] >= 0.99)  # inside the box
    empty = render_heat(None, None, None, (8, 8), 8.0)
    assert empty.shape == (1, 8, 8) and empty.abs().sum() == 0


def test_padding_labels_paint_nothing():
    heat = render_heat(torch.tensor([[[4.0, 4.0]]]), torch.tensor([[-10]]), None, (8, 8), 8.0)
    assert heat.abs().sum() == 0


def test_point_heat_lands_on_its_tokens_in_windowed_and_global_blocks(tiny_backbone):
    """Running each adapted block with a point's heat vs with no heat changes exactly the token under the
    point, in windowed blocks (window 3 does not divide the 8 x 8 grid: padded windows) and global blocks."""
    backbone = tiny_backbone
    grid, patch = backbone.grid, backbone.patch_size
    point = torch.tensor([[[6 * patch + 2.0, 2 * patch + 3.0]]])  # column 6, row 2
    sharp = HeatConfig(sigma=0.3, kernel_size=1)
    heat = render_heat(point, None, None, grid, patch, sharp)
    config = config_for(backbone.site, adapted_blocks=tuple(range(1, backbone.num_blocks)))
    layers = backbone.model.vision_encoder.layers
    assert any(layers[b].window_size > 0 for b in config.adapted_blocks)
    assert any(layers[b].window_size == 0 for b in config.adapted_blocks)
    module = AugModule(config, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for name, tensor in module.named_tensors().items():
            if name.startswith("b."):
                tensor.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    assert_heat_lands_on_its_token(backbone, config, module, heat, (2, 6))


def test_sample_points_are_inside_and_seeded():
    mask = np.zeros((30, 50), bool)
    mask[10:20, 30:40] = True
    a = sample_points(mask, 3, sample_rng(1, 0, 5))
    b = sample_points(mask, 3, sample_rng(1, 0, 5))
    assert np.array_equal(a, b)
    assert mask[a[:, 1].astype(int), a[:, 0].astype(int)].all()


def test_coordinates_under_resize_and_pad_for_non_square_images():
    geometry = ResizeGeometry.for_image(height=50, width=200, input_size=64)
    assert geometry.resized == (16, 64)
    coords = geometry.coords_to_input(np.array([[100.0, 25.0], [199.0, 49.0]]))
    assert torch.allclose(coords, torch.tensor([[32.0, 8.0], [63.68, 15.68]]), atol=1e-4)
    logits = torch.zeros(1, 1, 16, 16)
    logits[..., :4, :] = 5.0  # the top quarter of the input frame = the whole resized image
    full = geometry.logits_to_original(logits)
    assert full.shape == (1, 1, 50, 200)
    assert (full[0, 0, :40] > 0).all()


def _blob(height=60, width=80, box=(20, 40, 15, 35)):
    mask = np.zeros((height, width), bool)
    mask[box[0]:box[1], box[2]:box[3]] = True
    return mask


MIX = {"points": 0.3, "negatives": 0.25, "box": 0.15, "box_points": 0.1, "none": 0.2}


def test_the_mix_draws_every_kind_in_its_configured_shares():
    from samcl.method.prompts import MIX_KINDS, mix_prompt

    mask, draws = _blob(), 4000
    kinds = [mix_prompt(mask, sample_rng(0, 0, i), MIX, 3).kind for i in range(draws)]
    for kind in MIX_KINDS:
        share, expected = kinds.count(kind) / draws, MIX[kind]
        assert abs(share - expected) < 4 * np.sqrt(expected * (1 - expected) / draws), kind
    assert {mix_prompt(mask, sample_rng(0, 0, i), {**MIX, "none": 0.0, "points": 0.5}, 3).kind
            for i in range(400)} == set(MIX_KINDS) - {"none"}  # a zero share is never drawn


def test_mix_prompts_have_the_parts_of_their_kind():
    from samcl.method.prompts import mix_prompt

    mask = _blob()
    for i in range(300):
        prompt = mix_prompt(mask, sample_rng(3, 1, i), MIX, 3)
        has_points = prompt.kind in ("points", "negatives", "box_points")
        assert (prompt.points is not None) == has_points and (prompt.box is not None) == ("box" in prompt.kind)
        if has_points:
            positives = prompt.points[prompt.labels == 1].astype(int)
            assert 1 <= len(positives) <= 3 and mask[positives[:, 1], positives[:, 0]].all()
            negatives = (prompt.labels == 0).sum()
            assert 1 <= negatives <= 2 if prompt.kind == "negatives" else negatives == 0


def test_negative_points_fall_outside_the_mask_near_ones_in_the_band():
    from samcl.method.prompts import band_width, near_band, sample_negatives

    mask = _blob()
    width = band_width(mask)
    band = near_band(mask)
    assert not (band & mask).any() and band.any()
    rows, cols = np.nonzero(band)
    assert rows.min() >= 20 - width and rows.max() < 40 + width and cols.min() >= 15 - width and cols.max() < 35 + width
    for i in range(50):
        near = sample_negatives(mask, 2, sample_rng(0, 0, i), near=True).astype(int)
        far = sample_negatives(mask, 2, sample_rng(0, 1, i), near=False).astype(int)
        assert band[near[:, 1], near[:, 0]].all()
        assert not mask[far[:, 1], far[:, 0]].any()
    full = np.ones((10, 10), bool)
    assert sample_negatives(full, 1, sample_rng(0), near=True).shape == (0, 2)  # no background: no negative


def test_jittered_boxes_move_at_most_20_pixels_and_stay_in_the_image():
    from samcl.method.prompts import jitter_box, mask_box

    mask = _blob(300, 400, (50, 250, 10, 390))  # a large object: 10 % of its side exceeds 20 pixels
    tight = mask_box(mask)
    assert np.array_equal(tight, [10, 50, 389, 249])
    boxes = np.stack([jitter_box(mask, sample_rng(0, 0, i)) for i in range(500)])
    moved = np.abs(boxes - tight)
    assert moved.max() <= 20 + 1e-4 and moved.max() > 15 and moved.mean() > 5  # it does jitter, within bounds
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 399).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 3] <= 299).all() and (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
    small = np.stack([jitter_box(_blob(), sample_rng(1, 0, i)) for i in range(500)]) - mask_box(_blob())
    assert np.abs(small[:, [0, 2]]).std() < 0.15 * 20 and np.abs(small[:, [1, 3]]).std() < 0.15 * 20  # 10 % of side
