"""SAMCL on SAM 2 (transformers' Sam2Model): the same behavioural contract as on SAM, on a tiny Hiera."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_sam_config
from heat_checks import assert_heat_lands_on_its_token
from helpers import assert_same_tensors, cli_learn_red_and_blue, cli_runner, stack_params, toy_samples
from PIL import Image
from transformers import Sam2Config, Sam2Model

from samcl import SAMCL, Prompt, SamclError, SelectorConfig, TrainConfig, load_backbone
from samcl.backbone import Sam2Backbone, SamBackbone
from samcl.backbone.sam2 import StretchGeometry
from samcl.method import AugModule, AugModuleConfig, AugModuleSize, HeatConfig, Injection, config_for, render_heat

FAST = TrainConfig(epochs=1, batch_size=2, progress=False)


def tiny_sam2_config(image_size: int = 128) -> dict:
    """A Sam2Config dict for CPU tests. Stages [1, 2, 5, 1]: stride-16 stage = blocks 3..7 (8 x 8 tokens at
    128 px), block 3 pools queries, 4 and 7 global, 5 and 6 windowed with 6 x 6 windows that do not divide the
    grid (padded windows). Default selector block 4, adapted blocks 5..7."""
    grids = [image_size // 4, image_size // 8, image_size // 16]
    return {
        "vision_config": {
            "backbone_config": {
                "hidden_size": 16, "num_attention_heads": 1, "image_size": [image_size, image_size],
                "blocks_per_stage": [1, 2, 5, 1], "embed_dim_per_stage": [16, 32, 64, 128],
                "num_attention_heads_per_stage": [1, 2, 4, 8], "window_size_per_stage": [4, 4, 6, 3],
                "global_attention_blocks": [4, 7], "window_positional_embedding_background_size": [4, 4],
            },
            "backbone_channel_list": [128, 64, 32, 16], "backbone_feature_sizes": [[g, g] for g in grids],
            "fpn_hidden_size": 32,
        },
        "prompt_encoder_config": {"hidden_size": 32, "image_size": image_size, "patch_size": image_size // grids[2]},
        # the decoder sizes Meta's SAM2Base fixes for every variant (mlp 2048, 8 heads, IoU head 256), narrower
        "mask_decoder_config": {"hidden_size": 32},
    }


def tiny_sam2(seed: int = 0) -> Sam2Backbone:
    backbone = Sam2Backbone.from_config(tiny_sam2_config(), seed=seed)
    model = backbone.model
    with torch.no_grad():  # transformers zeroes these; non-zero ones make misplaced tokens show
        for name, param in model.named_parameters():
            if "pos_embed" in name or "no_memory" in name:
                param.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed))
        # one matrix in SAM 2 (Meta's pe_layer), two independently drawn copies in a fresh Sam2Model
        model.shared_image_embedding.positional_embedding.copy_(model.prompt_encoder.shared_embedding.positional_embedding)
    return backbone


@pytest.fixture(scope="module")
def backbone() -> Sam2Backbone:
    return tiny_sam2()


def _trained_like(config: AugModuleConfig, seed: int) -> AugModule:
    module = AugModule(config, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.2)
    return module


# ---------------------------------------------------------------------------------------------- choices
def test_hiera_tiny_choices_and_module_size_match_the_reference():
    """facebook/sam2.1-hiera-tiny (transformers' Sam2Config defaults): selector block 5, adapted blocks 6..9 at
    dim 384, no neck injection, heat on the 64 x 64 stride-16 grid; 21,036 parameters, 20,856 without the 180
    LayerNorm parameters (the reference's ~20.9k = 0.08 MB counts everything but LayerNorms)."""
    with torch.device("meta"):
        hiera_t = Sam2Backbone(Sam2Model(Sam2Config()))
    assert hiera_t.default_selector_block == 5
    config = config_for(hiera_t.site)
    assert config == AugModuleConfig(dim=384, adapted_blocks=(6, 7, 8, 9), neck_channels=0, rank=10)
    assert hiera_t.grid == (64, 64) and hiera_t.heat_stride == 16
    heat = hiera_t.heat_config
    assert (heat.sigma, heat.kernel_size) == (1.7, 9)  # the reference's kernel, unscaled on its 64-cell grid
    size = AugModuleSize.of(config)
    assert (size.parameters, size.layernorm_parameters, size.bytes) == (21_036, 180, 84_144)
    assert size.parameters - size.layernorm_parameters == 20_856


@pytest.mark.parametrize("stages, global_blocks, selector, adapted", [
    ((1, 2, 11, 2), (7, 10, 13), 7, range(8, 14)),  # Hiera-S
    ((2, 3, 16, 3), (12, 16, 20), 12, range(13, 21)),  # Hiera-B+
    ((2, 6, 36, 4), (23, 33, 43), 23, range(24, 44)),  # Hiera-L
])
def test_other_sizes_derive_their_choices_from_the_config(stages, global_blocks, selector, adapted):
    config = Sam2Config(vision_config={"backbone_config": {
        "model_type": "sam2_hiera_det_model", "blocks_per_stage": list(stages),
        "global_attention_blocks": list(global_blocks)}})
    with torch.device("meta"):
        backbone = Sam2Backbone(Sam2Model(config))
    assert backbone.default_selector_block == selector
    assert config_for(backbone.site).adapted_blocks == tuple(adapted)


def test_query_pooling_and_other_stage_blocks_cannot_be_adapted(backbone):
    assert config_for(backbone.site).adapted_blocks == (5, 6, 7)
    for blocks in [(3,), (2,), (8,), (5, 8)]:  # query pooling, stride 8, stride 32
        with pytest.raises(ValueError, match="adapted blocks must lie in 4..7"):
            config_for(backbone.site, adapted_blocks=blocks)


# ---------------------------------------------------------------------------------------------- behaviour
def test_fresh_module_reproduces_base(backbone):
    """A fresh module (zero up-projections) through prefix/suffix = Sam2Model.get_image_embeddings (<= 1e-5),
    and the decoder's output from it = Sam2Model's forward."""
    pixels = torch.randn(2, 3, backbone.image_size, backbone.image_size, generator=torch.Generator().manual_seed(0))
    block = backbone.default_selector_block
    config = config_for(backbone.site)
    points = torch.tensor([[[9.0, 30.0]], [[100.0, 12.0]]])
    with torch.no_grad():
        reference = backbone.model.get_image_embeddings(pixels)
        tokens = backbone.prefix(pixels, block)
        ours = backbone.suffix(tokens, block + 1, Injection(config, AugModule(config).params(),
                                                            backbone.heat(points, None, None)))
        for mine, theirs in zip([*ours.high_res, ours.image], reference):
            assert (mine - theirs).abs().max() <= 1e-5
        logits, iou = backbone.decode(ours, points, None, None, multimask_output=True)
        expected = backbone.model(image_embeddings=reference, input_points=points[:, None], multimask_output=True)
    assert (logits - expected.pred_masks[:, 0]).abs().max() <= 1e-5
    assert (iou - expected.iou_scores[:, 0]).abs().max() <= 1e-5


def test_trained_module_changes_output_and_stacking_matches_single(backbone):
    config = config_for(backbone.site)
    modules = [_trained_like(config, 1), _trained_like(config, 2)]
    pixels = torch.randn(3, 3, backbone.image_size, backbone.image_size, generator=torch.Generator().manual_seed(3))
    heat = backbone.heat(torch.tensor([[[20.0, 20.0]]] * 3), None, None)
    block = backbone.default_selector_block
    with torch.no_grad():
        tokens = backbone.prefix(pixels, block)
        base = backbone.suffix(tokens, block + 1).image
        mixed = backbone.suffix(tokens, block + 1, Injection(config, stack_params([modules[0], None, modules[1]],
                                                                                  config), heat)).image
        single = [backbone.suffix(tokens, block + 1, Injection(config, m.params(), heat)).image for m in modules]
    assert (mixed[0] - base[0]).abs().max() > 1e-3
    assert torch.allclose(mixed[0], single[0][0], atol=1e-5) and torch.allclose(mixed[2], single[1][2], atol=1e-5)
    assert torch.equal(mixed[1], base[1])


def test_point_heat_lands_on_its_tokens_in_windowed_and_global_blocks(backbone):
    """Each adapted block run with a point's heat vs with none changes exactly the token under the point, in
    windowed blocks (6 x 6 windows padded on the 8 x 8 grid) and in global ones."""
    grid, stride = backbone.grid, backbone.heat_stride
    point = torch.tensor([[[6 * stride + 2.0, 2 * stride + 3.0]]])  # column 6, row 2
    heat = render_heat(point, None, None, grid, stride, HeatConfig(sigma=0.3, kernel_size=1))
    config = config_for(backbone.site)
    layers = backbone.model.vision_encoder.backbone.blocks
    assert {layers[b].window_size > 0 for b in config.adapted_blocks} == {True, False}
    module = _trained_like(config, 0)
    assert_heat_lands_on_its_token(backbone, config, module, heat, (2, 6))


def test_preprocessing_stretches_to_the_square_input_like_sam2(backbone):
    image = np.zeros((50, 200, 3), np.uint8)
    image[..., 0] = 255
    pixels, geometry = backbone.preprocess(image)
    size = backbone.image_size
    assert pixels.shape == (3, size, size) and isinstance(geometry, StretchGeometry)
    assert torch.allclose(pixels[:, 7, 9], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225]))
    coords = geometry.coords_to_input(np.array([[100.0, 25.0]]))
    assert torch.allclose(coords, torch.tensor([[size / 2, size / 2]]))
    assert geometry.logits_to_original(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 50, 200)


# ---------------------------------------------------------------------------------------------- API, store, CLI
@pytest.fixture(scope="module")
def learned(tmp_path_factory, backbone):
    path = tmp_path_factory.mktemp("sam2-store") / "set"
    samcl = SAMCL.create(backbone, path, selector=SelectorConfig(kind="mlp", samples_per_domain=6, epochs=3))
    reports = [samcl.learn("red", toy_samples(6, (200, 30, 30), 0), FAST),
               samcl.learn("blue", toy_samples(6, (30, 30, 200), 1), FAST)]
    return path, samcl, reports


def test_learn_and_store_round_trip_is_bit_exact(learned, backbone):
    path, samcl, reports = learned
    assert all(r["stats"]["loss_first"] > 0 for r in reports)
    assert samcl.selector_block == 4 and samcl.module_set.buffer.dim == 64
    reopened = SAMCL.open(path, base=backbone)
    assert reopened.domains == ["red", "blue"] and reopened.aug_config == samcl.aug_config
    assert_same_tensors(samcl, reopened)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["backbone"]["family"] == "sam2" and manifest["backbone"]["architecture"] == "Sam2Model"


def test_segment_predictor_and_evaluate(learned):
    _, samcl, _ = learned
    samples = toy_samples(3, (30, 30, 200), 7)
    results = samcl.segment([s.image for s in samples], [Prompt.of(s.points) for s in samples],
                            multimask_output=True)
    for sample, result in zip(samples, results):
        assert result.masks.shape == (3, *sample.mask.shape) and result.scores.shape == (3,)
        assert result.domain in ("red", "blue")
    predictor = samcl.predictor()
    predictor.set_image(samples[0].image, force="blue")
    masks, scores, low_res = predictor.predict(samples[0].points, np.ones(3), box=np.array([5, 5, 60, 40]),
                                               multimask_output=False)
    assert masks.shape == (1, *samples[0].mask.shape) and low_res.shape == (1, 32, 32)
    forced = samcl.segment([samples[0].image], [Prompt.of(samples[0].points, box=[5, 5, 60, 40])], force="blue")[0]
    assert np.allclose(forced.low_res_logits, low_res, atol=1e-5)
    scores = samcl.evaluate(samples, truth="blue")
    assert scores["images"] == 3 and 0 <= scores["iou"] <= 1 and 0 <= scores["selector_accuracy"] <= 1


def test_predict_batch_equals_predict_per_image_as_sam2_image_predictor(learned):
    """SAM 2's `set_image_batch` / `predict_batch`: one prompt per image, each answer `predict`'s on that image
    alone; a mask input (the previous low-res logits) reaches SAM 2's decoder too."""
    _, samcl, _ = learned
    samples = toy_samples(2, (30, 30, 200), 9)
    predictor = samcl.predictor()
    predictor.set_image_batch([s.image for s in samples], force="blue")
    points = [s.points[:2] for s in samples]
    masks, _, low_res = predictor.predict_batch(points, [np.ones(2)] * 2, multimask_output=False)
    with pytest.raises(RuntimeError, match="predict_batch"):
        predictor.predict(points[0], np.ones(2))
    for j, sample in enumerate(samples):
        predictor.set_image(sample.image, force="blue")
        alone = predictor.predict(points[j], np.ones(2), multimask_output=False)
        assert masks[j].shape == (1, *sample.mask.shape)
        np.testing.assert_allclose(low_res[j], alone[2], atol=1e-5)
        fed = predictor.predict(points[j], np.ones(2), mask_input=alone[2], multimask_output=False)
        assert np.abs(fed[2] - alone[2]).max() > 0.05 * np.abs(alone[2]).max()  # random tiny weights: small logits


def test_store_refuses_a_backbone_of_another_family(learned, tmp_path):
    path, _, _ = learned
    with pytest.raises(SamclError, match="built on a 'sam2' backbone, the given base is 'sam'"):
        SAMCL.open(path, base=SamBackbone.from_config(tiny_sam_config()))
    sam_store = tmp_path / "sam-set"
    sam = SAMCL.create(SamBackbone.from_config(tiny_sam_config()), sam_store,
                       selector=SelectorConfig(kind="mlp", samples_per_domain=4, epochs=1))
    sam.learn("red", toy_samples(4, (200, 30, 30), 0), FAST, without_module=True)
    with pytest.raises(SamclError, match="built on a 'sam' backbone, the given base is 'sam2'"):
        SAMCL.open(sam_store, base=tiny_sam2())


def test_cli_learn_info_segment_eval_on_an_hf_sam2_directory(tmp_path, capsys):
    tiny_sam2(seed=1).model.save_pretrained(tmp_path / "tiny-sam2")
    assert isinstance(load_backbone(tmp_path / "tiny-sam2"), Sam2Backbone)
    run = cli_runner(capsys)
    store = cli_learn_red_and_blue(run, tmp_path, tmp_path / "tiny-sam2")
    info = json.loads(run("info", store, "--json"))
    assert info["backbone"]["family"] == "sam2" and [d["name"] for d in info["domains"]] == ["red", "blue"]
    assert info["augmodule"]["neck_channels"] == 0 and info["augmodule"]["adapted_blocks"] == [5, 6, 7]
    assert "sam2 / Sam2Model" in run("info", store)
    image = tmp_path / "blue" / "test" / "images" / "img000.png"
    answer = run("segment", store, image, "--point", "40,20", "--out", tmp_path / "mask.png", "--json")
    result = json.loads(answer)["results"][0]
    assert result["domain"] in ("red", "blue")
    width, height = Image.open(image).size
    assert np.asarray(Image.open(tmp_path / "mask.png")).shape == (height, width)
    scores = json.loads(run("eval", store, "--data", f"blue={tmp_path / 'blue'}", "--json"))["domains"]["blue"]
    assert scores["images"] == 2 and 0 <= scores["iou"] <= 1
