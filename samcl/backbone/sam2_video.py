"""SAM 2 with its video memory: transformers' ``Sam2VideoModel`` under the same split execution as `Sam2Backbone`.

    backbone = load_backbone("sam2.1_hiera_tiny.pt", video=True)   # or an HF-format sam2_video directory
    backbone.video                                                 # the Sam2VideoModel (memory attention, ...)
    backbone.model                                                 # a Sam2Model made of the same modules

The image parts (Hiera, FPN neck, prompt encoder, mask decoder) are *the same module objects* in `video` and in
`model`, so everything samcl does on images (prefix, selector, suffix with module rows, decode, identity) runs
unchanged, and a store created on the image model of these weights opens on this backbone (same identity).

`video_features` is the one place that hands samcl's encoder output to transformers' video code: the three FPN
levels and their position encodings in the layout of ``Sam2VideoModel.get_image_features`` (stride 4 and 8
projected by the decoder's ``conv_s0`` / ``conv_s1``, each flattened to HW x B x C, no "no memory" embedding:
the video model adds it itself on conditioning frames). `samcl.inference.video` puts them into the inference
session's feature cache, so the model's memory attention, memory encoder and object pointers run on the
adapted features without any change to transformers' code.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Sam2Config, Sam2Model, Sam2VideoModel

from .base import Adapter, load_hf_model
from .sam2 import HieraTokens, Sam2Backbone

#: The modules an image Sam2Model shares with the video model (everything the image model has).
SHARED = ("shared_image_embedding", "vision_encoder", "prompt_encoder", "mask_decoder", "no_memory_embedding")


def image_config_of(video_config) -> Sam2Config:
    """The Sam2Config of a Sam2VideoConfig's image parts (what an image-only load of the same weights has)."""
    return Sam2Config(vision_config=video_config.vision_config.to_dict(),
                      prompt_encoder_config=video_config.prompt_encoder_config.to_dict(),
                      mask_decoder_config=video_config.mask_decoder_config.to_dict())


def image_view(video, config=None, *, image_class=Sam2Model, shared=SHARED):
    """An `image_class` model (Sam2Model; SAM 3's tracker passes its own) whose every module and parameter is the
    video model's own (no copy, no memory); `config`: its image config (default: the video config's image parts)."""
    with torch.device("meta"):
        image = image_class(config or image_config_of(video.config))
    for name in shared:
        setattr(image, name, getattr(video, name))
    leftover = [name for name, tensor in image.state_dict().items() if tensor.is_meta]
    if leftover:
        raise ValueError(f"{image_class.__name__} has parts the video model lacks: {leftover[:3]}")
    return image.eval()


class Sam2VideoBackbone(Sam2Backbone, model_type="sam2_video", model_class=Sam2VideoModel,
                        label="SAM 2 video"):
    """`Sam2Backbone` on the image parts of a frozen ``Sam2VideoModel`` (`video`), which tracks."""

    def __init__(self, video: Sam2VideoModel, image_config: Sam2Config | None = None):
        super().__init__(image_view(video, image_config))
        video.eval().requires_grad_(False)
        self.video = video  # registered as a submodule: .to(device) moves the memory parts too

    @classmethod
    def from_config_dict(cls, path, config) -> "Sam2VideoBackbone":
        """An HF-format SAM 2 video directory (config.json model_type "sam2_video"), loaded as it is."""
        model_type = config.get("model_type") if isinstance(config, dict) else None
        if model_type != cls.model_type:
            raise ValueError(f"{path}: model_type is {model_type!r}, expected {cls.model_type!r}")
        return cls(load_hf_model(Sam2VideoModel, path, cls.label, config))

    # ----------------------------------------------------------------- the hand-over to the video model
    def video_features(self, tokens: HieraTokens, start_block: int, adapter: Adapter | None = None) -> dict:
        """Tokens after block `start_block - 1` -> {"vision_feats", "vision_pos_embeds"}: what
        ``Sam2VideoModel._prepare_vision_features`` reads from the session's cache (see the module doc)."""
        if adapter is not None and any(d is not None for d in adapter.neck_deltas()):
            raise ValueError("SAM 2 has no neck injection: the AugModule config must have neck_channels=0")
        tokens = self._run_blocks(tokens, start_block, self.num_blocks, adapter)
        encoder = self.video.vision_encoder
        fpn, position = encoder.neck(tokens.stages)
        levels = [level.to(self.dtype) for level in fpn[-encoder.num_feature_levels:][::-1]]
        position = [p.to(self.dtype) for p in position[-encoder.num_feature_levels:][::-1]]
        decoder = self.video.mask_decoder
        levels[0], levels[1] = decoder.conv_s0(levels[0]), decoder.conv_s1(levels[1])
        return {"vision_feats": [_flat(level) for level in levels],
                "vision_pos_embeds": [_flat(p) for p in position]}

    @property
    def memory_window(self) -> int:
        """How many frames back the video model ever reads a tracked (non-conditioning) frame's outputs: its
        memories (num_maskmem - 1 frames) and object pointers (max_object_pointers_in_encoder - 1 frames)."""
        config = self.video.config
        return max(config.num_maskmem - 1, config.max_object_pointers_in_encoder - 1)


def _flat(feature: torch.Tensor) -> torch.Tensor:
    """B x C x H x W -> HW x B x C (transformers' video layout)."""
    return feature.flatten(2).permute(2, 0, 1)


def is_video_backbone(backbone: nn.Module) -> bool:
    return isinstance(backbone, Sam2VideoBackbone)
