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
from test_sam2_checkpoint import _sam2_modeling, build_meta_sam2, randomize

#: Meta's sizes of the tiny video test model: tests/test_sam2.py's Hiera, a 128-wide FPN and decoder (the
#: object pointer is split into 2 memory tokens of 64, as the official 256 / 64) and transformers' fixed memory
#: width of 64 (its cross-attention's kv_in_dim is hard-coded to 64).
TINY_VIDEO = dict(embed_dim=16, num_heads=1, stages=(1, 2, 5, 1), global_att_blocks=(4, 7), window_spec=(4, 4, 6, 3),
                  window_pos_embed_bkg_spatial_size=(4, 4), d_model=128, image_size=128, mem_dim=64,
                  feedforward=256)
TINY_VIDEO_OVERRIDES = dict(num_heads=1, global_attention_blocks=(4, 7), window_size_per_stage=(4, 4, 6, 3),
                            image_size=128)


def build_meta_video_predictor(d_model: int = 256, **sizes):
    """Meta's SAM2VideoPredictor as build_sam2_video_predictor makes it from configs/sam2.1 (see the module doc):
    test_sam2_checkpoint's SAM2Base with the video predictor's own arguments."""
    _sam2_modeling()  # Meta's modules loaded as the image tests load them, before the predictor's own import
    predictor = importlib.import_module("sam2.sam2_video_predictor")
    return build_meta_sam2(d_model=d_model, memory_in_dim=d_model, model_class=predictor.SAM2VideoPredictor,
                           fill_hole_area=0, binarize_mask_from_pts_for_mem_enc=True, **sizes)


def randomized_meta_video_predictor(seed: int = 0, sizes: dict = TINY_VIDEO):
    """Every parameter from seeded noise (as tests/test_sam2_checkpoint.py's image model), so no weight sits at a
    value (zero, one) that could hide a mapping or wiring error."""
    torch.manual_seed(seed)
    return randomize(build_meta_video_predictor(**sizes))
