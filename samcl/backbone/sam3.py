"""SAM 3's tracker (ViT image encoder with rotary attention + FPN neck) on transformers' `Sam3TrackerModel`: the
only code that knows its internals.

Split execution for SAMCL, the same interface as `SamBackbone` and `Sam2Backbone`:

    prefix(pixels, stop)        patch embedding + pre-norm + blocks 0..stop -> B x H x W x D tokens
    pool(tokens)                mean over the grid                          -> B x D (the selector's pooled features)
    pool_stats(tokens)          mean and std over the grid                  -> B x 2D
    suffix(tokens, start, ad)   blocks start.. (adapted ones get SLoRA) + FPN neck (+ heat injection) -> Sam2Embeddings
    decode(embeddings, ...)     prompt encoder + mask decoder (SAM 2's)     -> low-res logits, IoU

SAM 3's image encoder is a plain ViT (32 blocks of width 1024 at 1008 px, 14 px patches: a 72 x 72 grid; windowed
attention with 24 x 24 windows except in blocks 7, 15, 23, 31) with 2-D axial rotary position encoding inside each
block's attention, followed by a single-map FPN neck (scale factors 4, 2, 1 and 0.5 of the grid). The tracker's
prompt encoder and mask decoder are SAM 2's: the decoder reads the stride-14 map and the 4x and 2x upsampled
levels (projected by its `conv_s0` / `conv_s1`).

Where the AugModule goes, as on SAM's ViT: every block but the first can be adapted; the selector block is the
middle block (16 of 32) and the blocks after it are adapted by default; the attention delta is added to the
attention output (`run_adapted_block`, rotary attention in `attention`), LoRA on qkv splits its 3D term over the
q, k and v projections (a LoRA on the fused projection, which SAM 3 keeps as three); the heat is injected around
the neck: into the token map entering it and onto its stride-14 output (the image embeddings).

The "no memory" embedding: transformers' `Sam3TrackerModel` adds it to the neck's *last* output and keeps the
first three levels, so with SAM 3's four scale factors the decoder's map goes without it, while
`Sam3TrackerVideoModel` drops the 0.5 level first and adds it to the stride-14 map. Each
backbone follows its own transformers class (`drops_last_level`), so samcl's output equals the class it wraps.

Input convention (transformers' `Sam3ImageProcessor`: 1008 x 1008, bilinear, `IMAGENET_STANDARD_MEAN` / `_STD`
= 0.5): the image is stretched to the square input without keeping the aspect ratio, resized as a uint8 image
(bilinear, antialiased, rounded back to uint8: `resize_uint8`, torchvision's resize on a CPU), then scaled to
[0, 1] and normalized with mean 0.5 and std 0.5; no padding. The processor needs torchvision, so this is its
reimplementation.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Sam3TrackerConfig, Sam3TrackerModel
from transformers.models.sam3.modeling_sam3 import (
    apply_rotary_pos_emb_2d,
    window_partition,
    window_unpartition,
)

from ..io import to_rgb_array
from .base import Adapter, FrozenBackbone, run_adapted_block
from .preprocess import StretchGeometry
from .sam import SamBackbone
from .sam2 import Sam2Backbone, Sam2Embeddings, _pair

#: Sam3ImageProcessor's pixel statistics (RGB in [0, 1]): transformers' IMAGENET_STANDARD_MEAN / _STD.
PIXEL_MEAN = (0.5, 0.5, 0.5)
PIXEL_STD = (0.5, 0.5, 0.5)
#: The model_type of each sub-config, which a config dict must name for transformers to build it.
SUB_TYPES = {"vision_config": "sam3_vision_model", "backbone_config": "sam3_vit_model"}


def attention(layer: nn.Module, x: torch.Tensor, qkv_delta: torch.Tensor | None = None) -> torch.Tensor:
    """A Sam3ViTLayer's attention (transformers' `Sam3ViTRoPEAttention`: q, k, v projections, 2-D rotary encoding
    of q and k at the layer's positions, scaled dot product, output projection) through PyTorch's fused kernel.
    x: B x H x W x D (a window or the whole grid, as the layer partitions it); qkv_delta: B x H x W x 3D added to
    the q, k and v projections (their thirds, in that order), or None."""
    attn = layer.attention
    batch, rows, cols, _ = x.shape
    shape = (batch, rows * cols, attn.num_attention_heads, attn.head_dim)
    query, key, value = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    if qkv_delta is not None:
        d_query, d_key, d_value = qkv_delta.to(query.dtype).chunk(3, dim=-1)
        query, key, value = query + d_query, key + d_key, value + d_value
    query, key, value = (t.reshape(shape).transpose(1, 2) for t in (query, key, value))
    cos, sin = layer.rotary_emb(x, layer.position_ids)
    query, key = apply_rotary_pos_emb_2d(query, key, cos=cos, sin=sin)
    out = F.scaled_dot_product_attention(query, key, value, scale=attn.scaling)
    return attn.o_proj(out.transpose(1, 2).reshape(batch, rows, cols, -1))


class Sam3Backbone(FrozenBackbone, family="sam3", model_type="sam3_tracker", model_class=Sam3TrackerModel,
                   label="SAM 3 tracker"):
    """A frozen `Sam3TrackerModel` (ViT, neck, prompt encoder, mask decoder; no video memory) with split
    execution and adapter hooks."""

    #: Whether the neck's last (lowest-resolution) level is dropped before the "no memory" embedding is added
    #: (`Sam3TrackerVideoModel`); False: added to the last level as it comes (`Sam3TrackerModel`).
    drops_last_level = False

    def __init__(self, model: Sam3TrackerModel):
        super().__init__(model)
        vision = model.config.vision_config
        vit = vision.backbone_config
        size, patch = _pair(vit.image_size), _pair(vit.patch_size)
        if size[0] != size[1] or patch[0] != patch[1]:
            raise ValueError(f"SAM 3 with a non-square input {size} or patch {patch} is not supported")
        self.image_size, self.patch_size = size[0], patch[0]
        self.grid = (self.image_size // self.patch_size,) * 2
        self.num_blocks = int(vit.num_hidden_layers)
        self.hidden_size = int(vit.hidden_size)
        self.neck_channels = int(vision.fpn_hidden_size)
        self.feature_sizes = [tuple(s) for s in vision.backbone_feature_sizes]
        expected = [(self.grid[0] * 4, self.grid[1] * 4), (self.grid[0] * 2, self.grid[1] * 2), self.grid]
        if self.feature_sizes != expected or list(vision.scale_factors[:3]) != [4.0, 2.0, 1.0]:
            raise ValueError(f"SAM 3's mask decoder reads the 4x, 2x and 1x levels of the {self.grid} grid: the "
                             f"config has feature sizes {self.feature_sizes}, scale factors {vision.scale_factors}")

    # ----------------------------------------------------------------- building and loading
    @classmethod
    def from_config(cls, config: Sam3TrackerConfig | dict, seed: int = 0) -> Sam3Backbone:
        """Random weights from a config (tests); a dict may leave out its sub-configs' model_type."""
        if isinstance(config, dict):
            config = cls.model_class.config_class(**with_sub_types(config))
        torch.manual_seed(seed)
        return cls(cls.model_class(config))

    # ----------------------------------------------------------------- choices derived from the config
    @property
    def default_selector_block(self) -> int:
        """The middle block (16 of 32 for SAM 3's ViT), as on SAM's ViT."""
        return self.num_blocks // 2

    #: As on SAM's ViT: every block but the first can be adapted; by default those after the selector block
    #: (17..31 for SAM 3), with neck injection (into the token map entering the neck, onto its stride-14 output).
    site = SamBackbone.site

    # ----------------------------------------------------------------- preprocessing
    def preprocess(self, image, stretch: bool = True) -> tuple[torch.Tensor, StretchGeometry]:
        """PIL image or array -> (3 x S x S normalized tensor; geometry for coordinates and masks), as
        Sam3ImageProcessor (see the module doc). SAM 3 always stretches (`stretch` is accepted for the interface)."""
        rgb = to_rgb_array(image)
        geometry = StretchGeometry.for_image(rgb.shape[0], rgb.shape[1], self.image_size)
        tensor = resize_uint8(np.array(rgb, dtype=np.uint8), (self.image_size, self.image_size))
        mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1) * 255
        std = torch.tensor(PIXEL_STD).view(3, 1, 1) * 255
        return (tensor.float() - mean) / std, geometry

    # ----------------------------------------------------------------- split execution
    def prefix(self, pixel_values: torch.Tensor, stop_block: int) -> torch.Tensor:
        """B x 3 x S x S -> tokens after block `stop_block` (inclusive): B x H x W x D."""
        vit = self.model.vision_encoder.backbone
        hidden = vit.embeddings(pixel_values.to(self.encoder_dtype))  # patches + tiled position embeddings
        hidden = vit.layer_norm(hidden.view(hidden.shape[0], *self.grid, -1))
        for block in range(stop_block + 1):
            hidden = self._run_block(vit.layers[block], hidden, block, None)
        return hidden

    pool = staticmethod(SamBackbone.pool)
    pool_stats = classmethod(SamBackbone.pool_stats.__func__)

    def suffix(self, tokens: torch.Tensor, start_block: int, adapter: Adapter | None = None) -> Sam2Embeddings:
        """Tokens after block `start_block - 1` -> the decoder's inputs, adapted where `adapter` says, with the
        heat around the neck: neck(x + U_D(H)), U_out(H) added to its stride-14 output."""
        levels = self._neck(self._run_blocks(tokens, start_block, adapter), adapter)
        decoder = self.model.mask_decoder
        return Sam2Embeddings(levels[2], (decoder.conv_s0(levels[0]), decoder.conv_s1(levels[1])))

    def _run_blocks(self, hidden: torch.Tensor, start: int, adapter: Adapter | None) -> torch.Tensor:
        layers = self.model.vision_encoder.backbone.layers
        for block in range(start, self.num_blocks):
            hidden = self._run_block(layers[block], hidden, block, adapter)
        return hidden

    def _neck(self, hidden: torch.Tensor, adapter: Adapter | None, no_memory: bool = True) -> list[torch.Tensor]:
        """Final tokens B x H x W x D -> the three levels the decoder reads (4x, 2x, 1x; B x C x h x w, in the
        decoder's dtype), with the heat injection, and the "no memory" embedding where the model adds it (only
        when `no_memory`: the video model adds it itself)."""
        into, out = adapter.neck_deltas() if adapter is not None else (None, None)
        if into is not None:
            hidden = hidden + into.view(hidden.shape).to(hidden.dtype)
        layers = list(self.model.vision_encoder.neck.fpn_layers)
        kept = len(layers) - 1 if self.drops_last_level else len(layers)  # what the model adds the embedding to
        spatial = hidden.permute(0, 3, 1, 2)
        levels = [layer(spatial).to(self.dtype) for layer in layers[:len(self.feature_sizes)]]
        if out is not None:
            batch, _, rows, cols = levels[2].shape
            levels[2] = levels[2] + out.view(batch, rows, cols, -1).permute(0, 3, 1, 2).to(levels[2].dtype)
        if no_memory and kept == len(levels):
            levels[-1] = levels[-1] + self.model.no_memory_embedding.view(1, -1, 1, 1)
        return levels

    def run_block(self, block: int, hidden: torch.Tensor, adapter: Adapter | None = None) -> torch.Tensor:
        """ViT block `block` alone: B x H x W x D tokens in and out, adapted where `adapter` says."""
        return self._run_block(self.model.vision_encoder.backbone.layers[block], hidden, block, adapter)

    @staticmethod
    def _run_block(layer: nn.Module, hidden: torch.Tensor, block: int, adapter: Adapter | None) -> torch.Tensor:
        """One Sam3ViTLayer with the adapter's attention delta (and qkv delta, for LoRA on qkv); rotary attention
        through the fused kernel (`attention`), also where no adapter acts (the prefix, the base)."""
        def attend(x: torch.Tensor) -> torch.Tensor:
            qkv_delta = adapter.qkv_delta(block, x) if adapter is not None and adapter.adapts_qkv(block) else None
            return attention(layer, x, qkv_delta)

        return run_adapted_block(layer, hidden, block, adapter, attend, window_partition, window_unpartition)

    # ----------------------------------------------------------------- prompts and decoding
    decode = Sam2Backbone.decode  # the tracker's prompt encoder and mask decoder are SAM 2's


def resize_uint8(rgb: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """H x W x 3 uint8 -> 3 x h x w uint8, bilinear and antialiased, as transformers' torchvision backend resizes
    an image on a CPU (torchvision's `resize_image`): the image as a channels-last 1 x 3 x H x W tensor, resized
    as uint8 where the CPU has AVX2 (PyTorch's uint8 kernel), else in float32, rounded and cast back."""
    height, width = rgb.shape[:2]
    tensor = torch.from_numpy(rgb).permute(2, 0, 1)
    if (height, width) == tuple(size):
        return tensor
    tensor = tensor.as_strided((1, 3, height, width), (tensor.numel(), 1, width * 3, 3))
    native = "AVX2" in torch.backends.cpu.get_cpu_capability()
    resized = F.interpolate(tensor if native else tensor.float(), size, mode="bilinear", align_corners=False,
                            antialias=True)
    return (resized if native else resized.round_().to(torch.uint8))[0]


def with_sub_types(config: dict) -> dict:
    """A copy of a Sam3Tracker(Video)Config dict with its vision sub-configs' model_type filled in."""
    config = json.loads(json.dumps(config))
    vision = config.setdefault("vision_config", {})
    vision.setdefault("model_type", SUB_TYPES["vision_config"])
    vision.setdefault("backbone_config", {}).setdefault("model_type", SUB_TYPES["backbone_config"])
    return config
