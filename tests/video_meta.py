"""Meta's SAM2VideoPredictor at any size, built from its modules (no hydra, no torchvision), for the video tests.

Meta's `build_sam2_video_predictor` composes configs/sam2.1/sam2.1_hiera_*.yaml with hydra and adds
`binarize_mask_from_pts_for_mem_enc=true`, `fill_hole_area=8` and the decoder's dynamic multimask arguments.
Here the same modules are built directly, as tests/test_sam2_checkpoint.py builds Meta's image model, with two
differences that are said where they apply: `fill_hole_area=0` (hole filling needs Meta's CUDA extension and
transformers' Sam2VideoModel has none), and the memory widths tied to the model width (`in_dim`, the mask
downsampler's `embed_dim`), which Meta's configs leave at their default 256 = d_model.
Meta's `load_video_frames` (decord or JPEG folders through PIL + its own resize) is stood in for by the frames
already preprocessed the way samcl preprocesses SAM 2 images, so both sides see the same pixels.
"""

from __future__ import annotations

import importlib

import torch
from test_sam2_checkpoint import _sam2_modeling

#: Meta's sizes of the tiny video test model: tests/test_sam2.py's Hiera, a 128-wide FPN and decoder (the
#: object pointer is split into 2 memory tokens of 64, as the official 256 / 64) and transformers' fixed memory
#: width of 64 (its cross-attention's kv_in_dim is hard-coded to 64).
TINY_VIDEO = dict(embed_dim=16, num_heads=1, stages=(1, 2, 5, 1), global_att_blocks=(4, 7), window_spec=(4, 4, 6, 3),
                  window_pos_embed_bkg_spatial_size=(4, 4), d_model=128, image_size=128, mem_dim=64,
                  feedforward=256)
TINY_VIDEO_OVERRIDES = dict(num_heads=1, global_attention_blocks=(4, 7), window_size_per_stage=(4, 4, 6, 3),
                            image_size=128)


def build_meta_video_predictor(embed_dim, num_heads, stages, global_att_blocks, window_spec,
                               window_pos_embed_bkg_spatial_size, d_model=256, image_size=1024, mem_dim=64,
                               feedforward=2048):
    """Meta's SAM2VideoPredictor as build_sam2_video_predictor makes it from configs/sam2.1 (see the module doc)."""
    m = _sam2_modeling()
    predictor = importlib.import_module("sam2.sam2_video_predictor")
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
        mask_downsampler=memory.MaskDownSampler(embed_dim=d_model, kernel_size=3, stride=2, padding=1),
        fuser=memory.Fuser(layer=memory.CXBlock(dim=d_model, kernel_size=7, padding=3, layer_scale_init_value=1e-6,
                                                use_dwconv=True), num_layers=2), in_dim=d_model)
    return predictor.SAM2VideoPredictor(
        fill_hole_area=0, image_encoder=encoder,
        memory_attention=attention.MemoryAttention(d_model=d_model, pos_enc_at_input=True, layer=layer, num_layers=4),
        memory_encoder=memory_encoder, num_maskmem=7, image_size=image_size, sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0, use_mask_input_as_output_without_sam=True, directly_add_no_mem_embed=True,
        no_obj_embed_spatial=True, use_high_res_features_in_sam=True, multimask_output_in_sam=True,
        iou_prediction_use_sigmoid=True, use_obj_ptrs_in_encoder=True, add_tpos_enc_to_obj_ptrs=True,
        proj_tpos_enc_in_obj_ptrs=True, use_signed_tpos_enc_to_obj_ptrs=True, only_obj_ptrs_in_the_past_for_eval=True,
        pred_obj_scores=True, pred_obj_scores_mlp=True, fixed_no_obj_ptr=True, multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True, multimask_min_pt_num=0, multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True, binarize_mask_from_pts_for_mem_enc=True,
        sam_mask_decoder_extra_args=dict(dynamic_multimask_via_stability=True, dynamic_multimask_stability_delta=0.05,
                                         dynamic_multimask_stability_thresh=0.98),
    ).eval()


def randomized_meta_video_predictor(seed: int = 0, sizes: dict = TINY_VIDEO):
    """Every parameter from seeded noise (as tests/test_sam2_checkpoint.py's image model), so no weight sits at a
    value (zero, one) that could hide a mapping or wiring error."""
    torch.manual_seed(seed)
    model = build_meta_video_predictor(**sizes)
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
