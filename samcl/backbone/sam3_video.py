"""SAM 3's tracker with its video memory: transformers' ``Sam3TrackerVideoModel`` under the same split execution
as `Sam3Backbone`, the design of `Sam2VideoBackbone`:

    backbone = load_backbone("<an HF sam3_tracker_video folder>", video=True)
    backbone.video                                   # the Sam3TrackerVideoModel (memory attention, ...)
    backbone.model                                   # a Sam3TrackerModel made of the same modules

The image parts (ViT, neck, prompt encoder, mask decoder) are the same module objects in `video` and `model`, so
everything samcl does on images runs unchanged; the decoder's map gets the "no memory" embedding as the video
model's own image path adds it (the neck's last level dropped first: `drops_last_level`).

`video_features` hands samcl's encoder output to transformers' video code in the layout of
``Sam3TrackerVideoModel.get_image_features`` (the first three neck levels, the 4x and 2x ones projected by the
decoder's ``conv_s0`` / ``conv_s1``, with their sine position encodings, each flattened to HW x B x C; no "no
memory" embedding: the video model adds it itself on conditioning frames). The inference session and its feature
cache are the same as SAM 2's, so `samcl.inference.video` tracks with either.
"""

from __future__ import annotations

import torch
from transformers import Sam3TrackerConfig, Sam3TrackerModel, Sam3TrackerVideoModel

from .base import Adapter, load_hf_model
from .sam2_video import image_view
from .sam3 import Sam3Backbone

#: The modules an image Sam3TrackerModel shares with the video model (everything the image model has).
SHARED = ("shared_image_embedding", "vision_encoder", "prompt_encoder", "mask_decoder", "no_memory_embedding")


def image_config_of(video_config) -> Sam3TrackerConfig:
    """The Sam3TrackerConfig of a Sam3TrackerVideoConfig's image parts."""
    return Sam3TrackerConfig(vision_config=video_config.vision_config.to_dict(),
                             prompt_encoder_config=video_config.prompt_encoder_config.to_dict(),
                             mask_decoder_config=video_config.mask_decoder_config.to_dict())


class Sam3VideoBackbone(Sam3Backbone, model_type="sam3_tracker_video", model_class=Sam3TrackerVideoModel,
                        label="SAM 3 tracker video"):
    """`Sam3Backbone` on the image parts of a frozen ``Sam3TrackerVideoModel`` (`video`), which tracks."""

    drops_last_level = True

    def __init__(self, video: Sam3TrackerVideoModel):
        super().__init__(image_view(video, image_config_of(video.config), image_class=Sam3TrackerModel,
                                    shared=SHARED))
        video.eval().requires_grad_(False)
        self.video = video  # registered as a submodule: .to(device) moves the memory parts too

    @classmethod
    def from_config_dict(cls, path, config) -> Sam3VideoBackbone:
        """An HF-format SAM 3 tracker video directory (config.json model_type "sam3_tracker_video"), as it is."""
        model_type = config.get("model_type") if isinstance(config, dict) else None
        if model_type != cls.model_type:
            raise ValueError(f"{path}: model_type is {model_type!r}, expected {cls.model_type!r}")
        return cls(load_hf_model(Sam3TrackerVideoModel, path, cls.label, config))

    # ----------------------------------------------------------------- the hand-over to the video model
    def video_features(self, tokens: torch.Tensor, start_block: int, adapter: Adapter | None = None) -> dict:
        """Tokens after block `start_block - 1` -> {"vision_feats", "vision_pos_embeds"}: what
        ``Sam3TrackerVideoModel._prepare_vision_features`` reads from the session's cache (see the module doc)."""
        levels = self._neck(self._run_blocks(tokens, start_block, adapter), adapter, no_memory=False)
        encoding = self.video.vision_encoder.neck.position_encoding
        position = [encoding(level.shape, level.device, level.dtype) for level in levels]
        decoder = self.video.mask_decoder
        levels[0], levels[1] = decoder.conv_s0(levels[0]), decoder.conv_s1(levels[1])
        return {"vision_feats": [_flat(level) for level in levels], "vision_pos_embeds": [_flat(p) for p in position]}

    @property
    def memory_window(self) -> int:
        """How many frames back the video model ever reads a tracked (non-conditioning) frame's outputs."""
        config = self.video.config
        return max(config.num_maskmem - 1, config.max_object_pointers_in_encoder - 1)


def _flat(feature: torch.Tensor) -> torch.Tensor:
    """B x C x H x W -> HW x B x C (transformers' video layout)."""
    return feature.flatten(2).permute(2, 0, 1)
