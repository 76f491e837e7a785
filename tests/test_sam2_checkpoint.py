"""Official SAM 2 / 2.1 checkpoints load into transformers' Sam2Model and match Meta's own forward pass.

Meta's code comes from the ``sam2`` sdist on PyPI, installed without its dependencies (it asks for torchvision
and builds a CUDA extension by default):

    SAM2_BUILD_CUDA=0 pip install -c constraints.txt --no-build-isolation --no-deps sam2 && pip install iopath

Its ``sam2/__init__.py`` initialises hydra and its predictor imports torchvision; the modeling code needs only
torch and iopath. So, as tests/meta_sam.py does for SAM, only the modeling modules are imported: an empty
``sam2`` package object pointing at the installed directory (its ``__init__`` not executed) lets the modules'
absolute ``sam2.modeling...`` imports resolve. Without the package these parity tests skip; the mapping tests
below them (round trip, Meta's key names recorded from the real model) always run.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from test_sam2 import tiny_sam2
from transformers import Sam2Config

from samcl import SamclError, load_backbone
from samcl.backbone import Sam2Backbone
from samcl.backbone.sam2_meta import (HIERA_VARIANTS, VIDEO_ONLY, HieraVariant, convert_sam2_state_dict,
                                      load_sam2_checkpoint, to_meta_state_dict)

TOLERANCE = 1e-4
#: Meta's sizes for the tiny test model (tests/test_sam2.py's config): what the weights do not say.
TINY = dict(embed_dim=16, num_heads=1, stages=(1, 2, 5, 1), global_att_blocks=(4, 7), window_spec=(4, 4, 6, 3),
            window_pos_embed_bkg_spatial_size=(4, 4), d_model=32, image_size=128, mem_dim=16)
TINY_OVERRIDES = dict(num_heads=1, global_attention_blocks=(4, 7), window_size_per_stage=(4, 4, 6, 3), image_size=128)
#: Meta's key names and shapes of that model (image parts), recorded from Meta's code by `_record_meta_keys`.
META_KEYS = Path(__file__).parent / "data" / "sam2_tiny_meta_keys.json"
#: Meta's configs/sam2.1/*.yaml: embed_dim, heads, stages, global blocks, windows, background size.
OFFICIAL = {
    "tiny": (96, 1, (1, 2, 7, 2), (5, 7, 9), (8, 4, 14, 7), (7, 7)),
    "small": (96, 1, (1, 2, 11, 2), (7, 10, 13), (8, 4, 14, 7), (7, 7)),
    "base_plus": (112, 2, (2, 3, 16, 3), (12, 16, 20), (8, 4, 14, 7), (14, 14)),
    "large": (144, 2, (2, 6, 36, 4), (23, 33, 43), (8, 4, 16, 8), (7, 7)),
}


# ---------------------------------------------------------------------------------------------- Meta's model
def _sam2_modeling() -> dict[str, ModuleType]:
    if "sam2" not in sys.modules:
        package = importlib.util.find_spec("sam2")
        if package is None or package.origin is None:
            pytest.skip("Meta's sam2 is not installed "
                        "(SAM2_BUILD_CUDA=0 pip install --no-build-isolation --no-deps sam2)")
        if importlib.util.find_spec("iopath") is None:
            pytest.skip("Meta's sam2 modeling needs iopath (pip install iopath)")
        root = Path(package.origin).parent
        stub = ModuleType("sam2")
        stub.__path__, stub.__file__ = [str(root)], str(root / "__init__.py")
        sys.modules["sam2"] = stub
    names = ("sam2_base", "backbones.hieradet", "backbones.image_encoder", "position_encoding",
             "memory_attention", "memory_encoder", "sam.transformer")
    return {name: importlib.import_module(f"sam2.modeling.{name}") for name in names}


def build_meta_sam2(embed_dim, num_heads, stages, global_att_blocks, window_spec, window_pos_embed_bkg_spatial_size,
                    d_model=256, image_size=1024, mem_dim=64, *, feedforward: int = 2048, memory_in_dim: int = 256,
                    model_class=None, **extra) -> torch.nn.Module:
    """Meta's SAM2Base as configs/sam2.1/sam2.1_hiera_*.yaml builds it (memory parts included, at any size).

    `feedforward`: the memory attention's MLP width; `memory_in_dim`: the memory encoder's input width (its mask
    downsampler's too; Meta's default 256); `model_class`: SAM2Base or a subclass (tests/video_meta.py's
    SAM2VideoPredictor), given `extra` constructor arguments."""
    m = _sam2_modeling()
    sine = m["position_encoding"].PositionEmbeddingSine
    trunk = m["backbones.hieradet"].Hiera(
        embed_dim=embed_dim, num_heads=num_heads, stages=stages, global_att_blocks=global_att_blocks,
        window_spec=window_spec, window_pos_embed_bkg_spatial_size=window_pos_embed_bkg_spatial_size)
    neck = m["backbones.image_encoder"].FpnNeck(
        position_encoding=sine(num_pos_feats=d_model, normalize=True, temperature=10000), d_model=d_model,
        backbone_channel_list=trunk.channel_list, fpn_top_down_levels=[2, 3], fpn_interp_model="nearest")
    encoder = m["backbones.image_encoder"].ImageEncoder(trunk=trunk, neck=neck, scalp=1)
    rope = m["sam.transformer"].RoPEAttention
    feat = [image_size // 16] * 2
    attention = m["memory_attention"]
    layer = attention.MemoryAttentionLayer(
        activation="relu", dim_feedforward=feedforward, dropout=0.1, pos_enc_at_attn=False, d_model=d_model,
        self_attention=rope(rope_theta=10000.0, feat_sizes=feat, embedding_dim=d_model, num_heads=1,
                            downsample_rate=1, dropout=0.1),
        pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False,
        cross_attention=rope(rope_theta=10000.0, feat_sizes=feat, rope_k_repeat=True, embedding_dim=d_model,
                             num_heads=1, downsample_rate=1, dropout=0.1, kv_in_dim=mem_dim))
    memory = m["memory_encoder"]
    memory_encoder = memory.MemoryEncoder(
        out_dim=mem_dim, position_encoding=sine(num_pos_feats=mem_dim, normalize=True, temperature=10000),
        mask_downsampler=memory.MaskDownSampler(embed_dim=memory_in_dim, kernel_size=3, stride=2, padding=1),
        fuser=memory.Fuser(layer=memory.CXBlock(dim=d_model, kernel_size=7, padding=3, layer_scale_init_value=1e-6,
                                                use_dwconv=True), num_layers=2), in_dim=memory_in_dim)
    return (model_class or m["sam2_base"].SAM2Base)(
        image_encoder=encoder, memory_attention=attention.MemoryAttention(
            d_model=d_model, pos_enc_at_input=True, layer=layer, num_layers=4),
        memory_encoder=memory_encoder, num_maskmem=7, image_size=image_size, sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0, use_mask_input_as_output_without_sam=True, directly_add_no_mem_embed=True,
        no_obj_embed_spatial=True, use_high_res_features_in_sam=True, multimask_output_in_sam=True,
        iou_prediction_use_sigmoid=True, use_obj_ptrs_in_encoder=True, add_tpos_enc_to_obj_ptrs=True,
        proj_tpos_enc_in_obj_ptrs=True, use_signed_tpos_enc_to_obj_ptrs=True, only_obj_ptrs_in_the_past_for_eval=True,
        pred_obj_scores=True, pred_obj_scores_mlp=True, fixed_no_obj_ptr=True, multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True, multimask_min_pt_num=0, multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True,
        # what build_sam2(...) adds for image prediction (SAM2ImagePredictor)
        sam_mask_decoder_extra_args=dict(dynamic_multimask_via_stability=True, dynamic_multimask_stability_delta=0.05,
                                         dynamic_multimask_stability_thresh=0.98),
        **extra,
    ).eval()


def _randomized_meta_sam2(seed: int, sizes: dict) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomize(build_meta_sam2(**sizes))


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter from seeded noise (norm weights ~ 1 + N(0, 0.1^2), vectors and position embeddings
    ~ N(0, 0.1^2), matrices ~ N(0, 1/fan_in)), so no parameter is left at a value that could hide a bug."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape)
            if "norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.1 * noise)
            elif parameter.ndim == 1 or "pos_embed" in name or parameter[0].numel() == 1:
                parameter.copy_(0.1 * noise)
            else:
                parameter.copy_(noise / parameter[0].numel() ** 0.5)
    return model


def _meta_image_features(model, pixels: torch.Tensor) -> list[torch.Tensor]:
    """SAM2ImagePredictor.set_image: stride 4, 8 (projected by conv_s0 / conv_s1) and 16 (+ no_mem_embed)."""
    backbone_out = model.forward_image(pixels)
    _, feats, _, sizes = model._prepare_backbone_features(backbone_out)
    feats[-1] = feats[-1] + model.no_mem_embed
    return [f.permute(1, 2, 0).view(pixels.shape[0], -1, *size) for f, size in zip(feats, sizes)]


def _meta_predict(model, features, points, labels, box, multimask):
    """SAM2ImagePredictor._predict: box corners become points labelled 2 and 3, placed before the clicks."""
    if box is not None:
        box_points = box.reshape(-1, 2, 2)
        box_labels = torch.tensor([[2, 3]], dtype=torch.int).repeat(box.shape[0], 1)
        points = box_points if points is None else torch.cat([box_points, points], dim=1)
        labels = box_labels if labels is None else torch.cat([box_labels, labels], dim=1)
    sparse, dense = model.sam_prompt_encoder(points=(points, labels), boxes=None, masks=None)
    masks, iou, _, _ = model.sam_mask_decoder(
        image_embeddings=features[-1], image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
        repeat_image=False, high_res_features=features[:-1])
    return masks, iou


# ---------------------------------------------------------------------------------------------- parity
def test_parity_with_meta_sam2_small(tmp_path):
    _assert_parity(tmp_path, TINY, batch=2, load=lambda path: Sam2Backbone(load_sam2_checkpoint(path, **TINY_OVERRIDES)))


@pytest.mark.slow
def test_parity_with_meta_sam2_hiera_tiny(tmp_path):
    """The official Hiera-Tiny size at 1024 px, loaded through load_backbone like sam2.1_hiera_tiny.pt."""
    embed_dim, heads, stages, global_blocks, windows, background = OFFICIAL["tiny"]
    sizes = dict(embed_dim=embed_dim, num_heads=heads, stages=stages, global_att_blocks=global_blocks,
                 window_spec=windows, window_pos_embed_bkg_spatial_size=background)
    _assert_parity(tmp_path, sizes, batch=1, load=load_backbone)


def _assert_parity(tmp_path, sizes: dict, batch: int, load) -> None:
    """Random Meta SAM 2 saved as {"model": state_dict} like the official .pt files: samcl's loader and split
    execution give the same image features and low-res mask logits (<= 1e-4) for points, boxes, no prompt."""
    meta = _randomized_meta_sam2(0, sizes)
    path = tmp_path / "sam2.1_random.pt"
    torch.save({"model": meta.state_dict()}, path)
    backbone = load(path)
    size = backbone.image_size
    pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = _meta_image_features(meta, pixels)
        tokens = backbone.prefix(pixels, backbone.default_selector_block)
        ours = backbone.suffix(tokens, backbone.default_selector_block + 1)
        for mine, theirs in zip([*ours.high_res, ours.image], expected):
            assert mine.shape == theirs.shape and (mine - theirs).abs().max() <= TOLERANCE
        points = torch.tensor([[[0.3, 0.4], [0.7, 0.6], [0.5, 0.2]]]).repeat(batch, 1, 1) * size
        labels = torch.tensor([[1, 0, 1]]).repeat(batch, 1)
        box = torch.tensor([[0.2, 0.25, 0.8, 0.9]]).repeat(batch, 1) * size
        cases = [(points, labels, None, True), (points, labels, None, False), (points, labels, box, False),
                 (None, None, box, True), (points[:, :1], labels[:, :1], None, False)]
        for pts, lab, bx, multimask in cases:
            meta_masks, meta_iou = _meta_predict(meta, expected, pts, lab, bx, multimask)
            masks, iou = backbone.decode(ours, pts, lab, bx, multimask)
            assert masks.shape == meta_masks[:, :].shape
            assert (masks - meta_masks).abs().max() <= TOLERANCE, (bx is not None, multimask)
            assert (iou - meta_iou).abs().max() <= TOLERANCE


class _LinspaceOnCpu:
    """Meta's Hiera reads its drop-path rates with .item(), which meta tensors cannot do."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def linspace(*args, **kwargs):
        return torch.linspace(*args, **{**kwargs, "device": "cpu"})


@pytest.mark.parametrize("variant", sorted(OFFICIAL))
def test_official_variant_sizes_are_inferred(variant, monkeypatch):
    embed_dim, heads, stages, global_blocks, windows, background = OFFICIAL[variant]
    monkeypatch.setattr(_sam2_modeling()["backbones.hieradet"], "torch", _LinspaceOnCpu())
    with torch.device("meta"):  # shapes only, no memory
        state_dict = build_meta_sam2(embed_dim, heads, stages, global_blocks, windows, background).state_dict()
    config, converted = convert_sam2_state_dict(state_dict)
    hiera = config.vision_config.backbone_config
    assert tuple(hiera.blocks_per_stage) == stages and hiera.embed_dim_per_stage[0] == embed_dim
    assert hiera.num_attention_heads_per_stage == [heads * 2**s for s in range(4)]
    assert tuple(hiera.global_attention_blocks) == global_blocks and tuple(hiera.window_size_per_stage) == windows
    assert list(hiera.window_positional_embedding_background_size) == list(background)
    assert config.vision_config.backbone_feature_sizes == [[256, 256], [128, 128], [64, 64]]
    if variant == "tiny":  # transformers' Sam2Config defaults are facebook/sam2.1-hiera-tiny
        assert _sizes(config) == _sizes(Sam2Config())


def _sizes(config: Sam2Config) -> dict:
    drop = ("_name_or_path", "transformers_version", "architectures", "dtype", "id2label", "label2id")
    return json.loads(json.dumps({k: v for k, v in config.to_dict().items() if k not in drop}, default=str))


# ---------------------------------------------------------------------------------------------- mapping
def _tiny_hf_state_dict() -> dict[str, torch.Tensor]:
    return tiny_sam2(seed=0).model.state_dict()


def test_mapping_round_trips_and_uses_metas_key_names():
    """Package-free: Sam2Model -> Meta layout -> Sam2Model is the identity, and the Meta-layout keys and shapes
    are exactly those Meta's own SAM2Base has for this size (recorded in tests/data from Meta's code)."""
    hf = _tiny_hf_state_dict()
    meta = to_meta_state_dict(hf)
    recorded = json.loads(META_KEYS.read_text())
    assert {k: list(v.shape) for k, v in meta.items()} == recorded
    _, back = convert_sam2_state_dict(meta, **TINY_OVERRIDES)
    assert back.keys() == hf.keys()
    assert all(torch.equal(back[k], hf[k]) for k in hf)


def test_recorded_meta_keys_match_metas_model():
    """Keeps tests/data/sam2_tiny_meta_keys.json honest when Meta's package is there."""
    image_keys = {k: list(v.shape) for k, v in build_meta_sam2(**TINY).state_dict().items()
                  if not k.startswith(VIDEO_ONLY)}
    assert image_keys == json.loads(META_KEYS.read_text())


def test_video_only_keys_are_dropped_and_unknown_or_missing_keys_named():
    meta = to_meta_state_dict(_tiny_hf_state_dict())
    with_video = {**meta, "memory_attention.layers.0.norm1.weight": torch.ones(32), "maskmem_tpos_enc": torch.ones(1)}
    convert_sam2_state_dict(with_video, **TINY_OVERRIDES)  # no error: video-only parts are not the image model
    broken = dict(meta)
    broken["image_encoder.trunk.blocks.0.attn.extra"] = torch.zeros(1)
    del broken["sam_mask_decoder.iou_prediction_head.layers.1.bias"]
    with pytest.raises(ValueError, match=r"unknown keys: image_encoder\.trunk\.blocks\.0\.attn\.extra") as error:
        convert_sam2_state_dict(broken, **TINY_OVERRIDES)
    assert "missing keys: sam_mask_decoder.iou_prediction_head.layers.1.bias" in str(error.value)


def test_custom_size_without_overrides_is_an_error_not_a_guess(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"model": to_meta_state_dict(_tiny_hf_state_dict())}, path)
    with pytest.raises(SamclError, match=r"custom\.pt: .*not an official SAM 2 size: pass num_heads"):
        load_backbone(path)


def test_load_backbone_tells_sam2_checkpoints_from_sam(tmp_path, monkeypatch):
    """A .pt with a Hiera trunk becomes a Sam2Backbone (the tiny size registered as if it were official)."""
    monkeypatch.setitem(HIERA_VARIANTS, (16, (1, 2, 5, 1)), HieraVariant(1, (4, 7), (4, 4, 6, 3), image_size=128))
    hf = _tiny_hf_state_dict()
    path = tmp_path / "tiny.pt"
    torch.save({"model": to_meta_state_dict(hf)}, path)
    backbone = load_backbone(path)
    assert isinstance(backbone, Sam2Backbone) and backbone.identity()["family"] == "sam2"
    assert all(torch.equal(backbone.model.state_dict()[k], hf[k]) for k in hf)


def test_non_sam2_dict_names_the_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {"weight": torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match=r"other\.pt: not a SAM 2 checkpoint"):
        load_sam2_checkpoint(path)


def _record_meta_keys() -> None:  # pragma: no cover - run by hand to refresh tests/data
    keys = {k: list(v.shape) for k, v in build_meta_sam2(**TINY).state_dict().items() if not k.startswith(VIDEO_ONLY)}
    META_KEYS.parent.mkdir(exist_ok=True)
    lines = [f"{json.dumps(key)}: {json.dumps(shape)}" for key, shape in sorted(keys.items())]
    META_KEYS.write_text("{\n" + ",\n".join(lines) + "\n}\n")  # one key per line


if __name__ == "__main__":  # python tests/test_sam2_checkpoint.py: refresh the recorded key list
    _record_meta_keys()
