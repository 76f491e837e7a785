"""SAM 2 (Hiera image encoder + FPN neck) on transformers' `Sam2Model`: the only code that knows its internals.

Split execution for SAMCL, the same interface as `SamBackbone`:

    prefix(pixels, stop)        patch embedding + Hiera blocks 0..stop    -> HieraTokens
    pool(tokens)                mean over the grid                        -> B x D (the paper's selector input)
    pool_stats(tokens)          mean and std over the grid                -> B x 2D (the selectors' input)
    suffix(tokens, start, ad)   blocks start.. (adapted ones get SLoRA) + FPN neck -> Sam2Embeddings
    decode(embeddings, ...)     prompt encoder + mask decoder             -> low-res logits, IoU

Hiera is multi-scale: every stage halves the grid (the first block of a stage pools its queries) and the
mask decoder reads the FPN features of the stride-4 and stride-8 stages besides the stride-16 image
embedding. So the prefix's output carries the outputs of the stages it finished (`HieraTokens.stages`), and
the suffix continues from there: no block runs twice.

Where the AugModule goes (the reference for Hiera-Tiny: blocks 6..9 at dim 384, selector block 5, no neck
injection), derived from the config for any size:
- the *embedding stage* is the stage at the image embedding's stride (stride 16: stage
  `num_feature_levels - 1`, stage 2 of [1, 2, 7, 2] for Hiera-T, blocks 3..9);
- the selector block is that stage's first global-attention block (5 of 3..9 for Hiera-T; 7 for Hiera-S,
  12 for Hiera-B+, 23 for Hiera-L: close to the stage's middle, and a global block mixes every window so its
  mean-pooled output describes the whole image), or the stage's middle block if it has no global block;
- the adapted blocks are the stage's blocks after the selector block (6..9). The stage's first block is a
  query-pooling block (it changes grid and width) and is never adapted; nor are later stages (stride 32),
  whose grid differs from the heat's.
- SAM 2's neck is a multi-scale FPN without a single token map to inject into: no neck injection.

The heat lies on the embedding stage's token grid (64 x 64 for 1024 px, 16 px per cell). Hiera blocks keep
tokens unpartitioned between blocks (B x H x W x D) and window-partition only inside attention; the adapter
delta is per token, so adding it to the attention output after un-partitioning equals adding it inside each
window at the token's own position, for windowed and global blocks alike.

Input convention (Meta's `SAM2Transforms`, transformers' `Sam2ImageProcessor`): the image is resized to the
square input *without* keeping the aspect ratio (bilinear, antialiased), scaled to [0, 1] and normalized with
ImageNet mean/std; no padding. Coordinates scale per axis; logits go back to the original size in one bilinear
resize (`StretchGeometry`).
"""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Sam2Config, Sam2Model
from transformers.models.sam2.modeling_sam2 import window_partition, window_unpartition

from ..io import to_rgb_array
from .base import AdaptationSite, Adapter, FrozenBackbone, run_adapted_block
from .preprocess import StretchGeometry

#: SAM 2's pixel statistics (RGB in [0, 1]): ImageNet's, as Meta's SAM2Transforms.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)
HIERA_MODEL_TYPE = "sam2_hiera_det_model"


class HieraTokens(NamedTuple):
    """The prefix's output. hidden: B x H x W x D after the last block run; stages: the outputs of the stages
    finished so far (B x H_s x W_s x D_s, stride 4, 8, ...), which the neck and the decoder need later."""

    hidden: torch.Tensor
    stages: tuple[torch.Tensor, ...]

    @property
    def device(self) -> torch.device:
        return self.hidden.device


class Sam2Embeddings(NamedTuple):
    """What the decoder needs. image: B x C x h x w (stride 16, with the no-memory embedding added, as
    `Sam2Model.get_image_embeddings`); high_res: the stride-4 and stride-8 FPN features already projected by
    the decoder's `conv_s0` / `conv_s1` (B x C/8 x 4h x 4w, B x C/4 x 2h x 2w)."""

    image: torch.Tensor
    high_res: tuple[torch.Tensor, ...]


class Sam2Backbone(FrozenBackbone, family="sam2", model_type="sam2", model_class=Sam2Model, label="SAM 2"):
    """A frozen `Sam2Model` (image encoder, prompt encoder, mask decoder; no video memory) with split
    execution and adapter hooks."""

    def __init__(self, model: Sam2Model):
        super().__init__(model)
        vision = model.config.vision_config
        hiera = vision.backbone_config
        sizes = _pair(hiera.image_size)
        if sizes[0] != sizes[1]:
            raise ValueError(f"SAM 2 with a non-square input {sizes} is not supported")
        self.image_size = sizes[0]
        if vision.num_feature_levels != 3:
            raise ValueError(f"SAM 2's mask decoder needs 3 feature levels, the config has {vision.num_feature_levels}")
        self.stage_of_block = [s for s, count in enumerate(hiera.blocks_per_stage) for _ in range(count)]
        self.stage_ends = tuple(int(e) for e in np.cumsum(hiera.blocks_per_stage) - 1)
        self.num_blocks = len(self.stage_of_block)
        self.image_embedding_stage = vision.num_feature_levels - 1
        self.grid = _stage_grid(hiera, self.image_embedding_stage)
        self.hidden_size = int(hiera.embed_dim_per_stage[self.image_embedding_stage])
        self.neck_channels = 0  # no neck injection (see the module docstring)

    # ----------------------------------------------------------------- building and loading
    @classmethod
    def from_config(cls, config: Sam2Config | dict, seed: int = 0) -> "Sam2Backbone":
        """Random weights from a config (tests, benchmarks)."""
        if isinstance(config, dict):
            config = json.loads(json.dumps(config))
            backbone = config.setdefault("vision_config", {}).setdefault("backbone_config", {})
            backbone.setdefault("model_type", HIERA_MODEL_TYPE)
            config = Sam2Config(**config)
        torch.manual_seed(seed)
        return cls(Sam2Model(config))

    # ----------------------------------------------------------------- choices derived from the config
    @property
    def image_embedding_stage_blocks(self) -> range:
        """Blocks of the stage at the image embedding's stride (3..9 for Hiera-T)."""
        first = self.stage_ends[self.image_embedding_stage - 1] + 1 if self.image_embedding_stage else 0
        return range(first, self.stage_ends[self.image_embedding_stage] + 1)

    @property
    def default_selector_block(self) -> int:
        """The embedding stage's first global-attention block (5 for Hiera-T), else its middle block."""
        blocks = self.image_embedding_stage_blocks
        hiera = self.model.config.vision_config.backbone_config
        global_blocks = [b for b in blocks[1:-1] if b in hiera.global_attention_blocks]
        return global_blocks[0] if global_blocks else blocks[len(blocks) // 2]

    @property
    def site(self) -> AdaptationSite:
        """The embedding stage's blocks after its query-pooling first block (on the heat's grid) can be adapted;
        by default those after the selector block (6..9 for Hiera-T). No neck injection."""
        stage = self.image_embedding_stage_blocks
        return AdaptationSite(dim=self.hidden_size, grid=self.grid, stride=self.heat_stride,
                              blocks=tuple(range(stage.start + 1, stage.stop)),
                              default_blocks=tuple(range(self.default_selector_block + 1, stage.stop)),
                              selector_block=self.default_selector_block)

    @property
    def heat_stride(self) -> float:
        """Model-input pixels per heat-grid cell (16 for SAM 2: the embedding stage's stride)."""
        return self.image_size / self.grid[1]

    # ----------------------------------------------------------------- preprocessing
    def preprocess(self, image, stretch: bool = True) -> tuple[torch.Tensor, StretchGeometry]:
        """PIL image or array -> (3 x S x S normalized tensor; geometry for coordinates and masks). SAM 2 always
        stretches the image to the square input (`stretch` is SAM's choice, accepted for the same interface)."""
        rgb = to_rgb_array(image)
        geometry = StretchGeometry.for_image(rgb.shape[0], rgb.shape[1], self.image_size)
        tensor = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1) / 255.0
        size = (self.image_size, self.image_size)
        if tuple(tensor.shape[1:]) != size:  # as torchvision's Resize on a float tensor
            tensor = F.interpolate(tensor[None], size, mode="bilinear", align_corners=False, antialias=True)[0]
        mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
        std = torch.tensor(PIXEL_STD).view(3, 1, 1)
        return (tensor - mean) / std, geometry

    # ----------------------------------------------------------------- split execution
    def prefix(self, pixel_values: torch.Tensor, stop_block: int) -> HieraTokens:
        """B x 3 x S x S -> tokens after block `stop_block` (inclusive), with the finished stages' outputs."""
        hiera = self.model.vision_encoder.backbone
        hidden = hiera.patch_embed(pixel_values.to(self.encoder_dtype))
        hidden = hidden + hiera._get_pos_embed(hidden.shape[1:3])
        return self._run_blocks(HieraTokens(hidden, ()), 0, stop_block + 1, None)

    @staticmethod
    def pool(tokens: HieraTokens) -> torch.Tensor:
        """-> B x D (mean of the current hidden tokens over the grid)."""
        return tokens.hidden.float().mean(dim=(1, 2))

    @classmethod
    def pool_stats(cls, tokens: HieraTokens) -> torch.Tensor:
        """-> B x 2D: the grid mean (exactly `pool`), then the std over the grid."""
        return torch.cat([cls.pool(tokens), tokens.hidden.var(dim=(1, 2), unbiased=False).sqrt()], dim=1)

    def suffix(self, tokens: HieraTokens, start_block: int, adapter: Adapter | None = None) -> Sam2Embeddings:
        """Tokens after block `start_block - 1` -> the decoder's inputs, adapted where `adapter` says."""
        if adapter is not None and any(d is not None for d in adapter.neck_deltas()):
            raise ValueError("SAM 2 has no neck injection: the AugModule config must have neck_channels=0")
        tokens = self._run_blocks(tokens, start_block, self.num_blocks, adapter)
        model = self.model
        fpn, _ = model.vision_encoder.neck(tokens.stages)  # low -> high resolution
        levels = fpn[-model.vision_encoder.num_feature_levels:][::-1]  # high -> low: stride 4, 8, 16
        levels = [level.to(self.dtype) for level in levels]  # the decoder's dtype (bfloat16 encoder: float32)
        decoder = model.mask_decoder
        image = levels[-1] + model.no_memory_embedding.view(1, -1, 1, 1)
        return Sam2Embeddings(image, (decoder.conv_s0(levels[0]), decoder.conv_s1(levels[1])))

    def _run_blocks(self, tokens: HieraTokens, start: int, stop: int, adapter: Adapter | None) -> HieraTokens:
        if start > 0 and len(tokens.stages) != sum(end < start for end in self.stage_ends):
            raise ValueError(f"tokens carry {len(tokens.stages)} finished stages, block {start} needs "
                             f"{sum(end < start for end in self.stage_ends)}")
        hidden, stages = tokens.hidden, list(tokens.stages)
        layers = self.model.vision_encoder.backbone.blocks
        for block in range(start, stop):
            hidden = self._run_block(layers[block], hidden, block, adapter)
            if block in self.stage_ends:
                stages.append(hidden)
        return HieraTokens(hidden, tuple(stages))

    def run_block(self, block: int, hidden: torch.Tensor, adapter: Adapter | None = None) -> torch.Tensor:
        """Hiera block `block` alone: B x H x W x C tokens in and out, adapted where `adapter` says."""
        return self._run_block(self.model.vision_encoder.backbone.blocks[block], hidden, block, adapter)

    @staticmethod
    def _run_block(layer: nn.Module, hidden: torch.Tensor, block: int, adapter: Adapter | None) -> torch.Tensor:
        """One Sam2MultiScaleBlock, with the adapter's delta added to the attention output. Query-pooling
        blocks (grid and width change) run as they are: they are never adapted."""
        if adapter is None or layer.query_stride or layer.dim != layer.dim_out:
            return layer(hidden)
        return run_adapted_block(layer, hidden, block, adapter, lambda x: layer.attn(hidden_states=x),
                                 window_partition, window_unpartition)

    # ----------------------------------------------------------------- prompts and decoding
    def decode(self, embeddings: Sam2Embeddings, points: torch.Tensor | None = None,
               labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
               multimask_output: bool = False, *, mask_input: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """points B x N x 2 and labels B x N (model-input pixels; label -10 = padding); boxes B x 4; mask_input
        B x 1 x 4h x 4w low-res logits (a previous prediction) or None.
        Returns low-res logits B x M x 4h x 4w and predicted IoU B x M (M = 3 or 1; with one mask, SAM 2
        falls back to the best of the three when the single mask is unstable, as Meta's image predictor)."""
        model = self.model
        image = embeddings.image
        batch = image.shape[0]
        positional = model.get_image_wide_positional_embeddings().repeat(batch, 1, 1, 1)
        if points is not None and labels is None:
            labels = torch.ones(points.shape[:2], dtype=torch.long, device=points.device)
        if points is None and boxes is None and mask_input is None:  # no prompt: one "not a point" (label -1), as Sam2Model
            points = torch.zeros(batch, 1, 2, dtype=image.dtype, device=image.device)
            labels = -torch.ones(batch, 1, dtype=torch.long, device=image.device)
        sparse, dense = model.prompt_encoder(
            input_points=None if points is None else points[:, None].to(image.dtype),
            input_labels=None if labels is None else labels[:, None].long(),
            input_boxes=None if boxes is None else boxes[:, None].to(image.dtype),
            input_masks=None if mask_input is None else mask_input.to(image.dtype),
        )
        if sparse is None:  # a mask alone: no sparse token
            sparse = dense.new_zeros(batch, 1, 0, dense.shape[1])
        logits, iou, _, _ = model.mask_decoder(
            image_embeddings=image, image_positional_embeddings=positional, sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, multimask_output=multimask_output,
            high_resolution_features=list(embeddings.high_res),
        )
        return logits[:, 0], iou[:, 0]


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, (int, float)) else (int(value[0]), int(value[1]))


def _stage_grid(hiera, stage: int) -> tuple[int, int]:
    """Token grid of a Hiera stage: the patch convolution's output, halved (floor, as max-pooling) by each
    query-pooling stage up to `stage`."""
    size, kernel, stride, padding = (_pair(getattr(hiera, k)) for k in
                                     ("image_size", "patch_kernel_size", "patch_stride", "patch_padding"))
    grid = [(size[i] + 2 * padding[i] - kernel[i]) // stride[i] + 1 for i in range(2)]
    query = _pair(hiera.query_stride)
    for _ in range(min(stage, hiera.num_query_pool_stages)):
        grid = [grid[i] // query[i] for i in range(2)]
    return grid[0], grid[1]
