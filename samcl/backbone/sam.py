"""SAM (ViT image encoder) on transformers' `SamModel`: the only code that knows SAM's internals.

Split execution for SAMCL:

    prefix(pixels, stop)        patch embedding + blocks 0..stop          -> B x H x W x D tokens
    pool(tokens)                mean over the grid                        -> B x D (the selector's input)
    suffix(tokens, start, ad)   blocks start.. (adapted ones get SLoRA) + neck (+ heat injection)
    decode(embeddings, ...)     prompt encoder + mask decoder             -> low-res logits, IoU

Each block is computed once: the suffix starts where the prefix stopped.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from transformers import SamConfig, SamModel

from ..augmodule import AugModuleConfig
from ..prompts import render_heat
from .base import FrozenBackbone
from .preprocess import ResizeGeometry, normalize_and_pad, resize_longest, to_rgb_array

#: SAM's pixel statistics (RGB, 0-255), from Meta's Sam.pixel_mean / pixel_std.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class Adapter(Protocol):
    """What the suffix needs from an AugModule (see `samcl.augmodule.Injection`): a delta on an adapted block's
    attention output, the neck, and (for LoRA on the qkv projection, as PEFT places it) a delta on qkv."""

    def block_delta(self, block: int, x: torch.Tensor) -> torch.Tensor | None: ...
    def neck(self, hidden: torch.Tensor, neck: nn.Module) -> torch.Tensor: ...
    def adapts_qkv(self, block: int) -> bool: ...
    def qkv_delta(self, block: int, x: torch.Tensor) -> torch.Tensor: ...


@contextmanager
def qkv_adapter(attention: nn.Module, block: int, adapter: Adapter | None):
    """While attention runs, add `adapter.qkv_delta` to its qkv projection's output (a forward hook removed
    afterwards: the shared frozen model is never modified). A no-op unless the adapter adapts this block's qkv."""
    if adapter is None or not getattr(adapter, "adapts_qkv", lambda block: False)(block):
        yield
        return
    handle = attention.qkv.register_forward_hook(lambda _, args, out: out + adapter.qkv_delta(block, args[0]))
    try:
        yield
    finally:
        handle.remove()


class SamBackbone(FrozenBackbone):
    """A frozen `SamModel` with split execution and adapter hooks."""

    family = "sam"
    model_type = "sam"
    model_class = SamModel
    label = "SAM"
    supports_qkv_lora = True  # `_run_block` applies an adapter's qkv delta (LoRA on qkv, as PEFT places it)

    def __init__(self, model: SamModel):
        super().__init__(model)
        vision = model.config.vision_config
        self.image_size = int(vision.image_size)
        self.patch_size = int(vision.patch_size)
        self.grid = (self.image_size // self.patch_size,) * 2
        self.num_blocks = int(vision.num_hidden_layers)
        self.hidden_size = int(vision.hidden_size)
        self.neck_channels = int(vision.output_channels)

    # ----------------------------------------------------------------- building and loading
    @classmethod
    def from_config(cls, config: SamConfig | dict, seed: int = 0) -> "SamBackbone":
        """Random weights from a config (tests, benchmarks). Vision init std 0.02 (transformers' default is 1e-10)."""
        if isinstance(config, dict):
            config = SamConfig(**config)
        if config.vision_config.initializer_range < 1e-4:
            config.vision_config.initializer_range = 0.02
        torch.manual_seed(seed)
        return cls(SamModel(config))

    @classmethod
    def from_checkpoint(cls, path: Path) -> "SamBackbone":
        """One of Meta's official `.pth` checkpoints (sam_vit_b_01ec64.pth, ...)."""
        from .meta import load_meta_checkpoint

        return cls(load_meta_checkpoint(path))

    # ----------------------------------------------------------------- choices derived from the config
    @property
    def default_selector_block(self) -> int:
        """The middle block (6 of 12 for ViT-B, as the reference)."""
        return self.num_blocks // 2

    def augmodule_config(self, rank: int = 10, adapted_blocks: tuple[int, ...] | None = None) -> AugModuleConfig:
        """Defaults: every block after the selector block (7..11 for ViT-B), neck injection on."""
        if adapted_blocks is None:
            adapted_blocks = tuple(range(self.default_selector_block + 1, self.num_blocks))
        return AugModuleConfig(dim=self.hidden_size, adapted_blocks=tuple(adapted_blocks),
                               neck_channels=self.neck_channels, rank=rank)

    def heat(self, points: torch.Tensor | None, labels: torch.Tensor | None,
             boxes: torch.Tensor | None) -> torch.Tensor:
        """Prompt heat on the adapted blocks' token grid: model-input pixels in, B x rows x cols out."""
        return render_heat(points, labels, boxes, self.grid, self.patch_size, self.heat_config)

    # ----------------------------------------------------------------- preprocessing
    def preprocess(self, image) -> tuple[torch.Tensor, ResizeGeometry]:
        """PIL image or array -> (3 x S x S normalized, padded tensor; geometry for coordinates and masks)."""
        rgb = to_rgb_array(image)
        geometry = ResizeGeometry.for_image(rgb.shape[0], rgb.shape[1], self.image_size)
        return normalize_and_pad(resize_longest(rgb, geometry), geometry, PIXEL_MEAN, PIXEL_STD), geometry

    # ----------------------------------------------------------------- split execution
    def prefix(self, pixel_values: torch.Tensor, stop_block: int) -> torch.Tensor:
        """B x 3 x S x S -> tokens after block `stop_block` (inclusive): B x H x W x D."""
        encoder = self.model.vision_encoder
        hidden = encoder.patch_embed(pixel_values.to(self.dtype))
        if encoder.pos_embed is not None:
            hidden = hidden + encoder.pos_embed
        for block in range(stop_block + 1):
            hidden = encoder.layers[block](hidden)
        return hidden

    @staticmethod
    def pool(tokens: torch.Tensor) -> torch.Tensor:
        """B x H x W x D -> B x D (mean over the grid)."""
        return tokens.mean(dim=(1, 2))

    def suffix(self, tokens: torch.Tensor, start_block: int, adapter: Adapter | None = None) -> torch.Tensor:
        """Tokens after block `start_block - 1` -> image embeddings B x C x h x w, adapted where `adapter` says."""
        encoder = self.model.vision_encoder
        hidden = tokens
        for block in range(start_block, self.num_blocks):
            hidden = self._run_block(encoder.layers[block], hidden, block, adapter)
        if adapter is None:
            return encoder.neck(hidden)
        return adapter.neck(hidden, encoder.neck)

    @staticmethod
    def _run_block(layer: nn.Module, hidden: torch.Tensor, block: int, adapter: Adapter | None) -> torch.Tensor:
        """One SamVisionLayer, with the adapter's delta added to the attention output (per token, so
        adding it on the full grid equals adding it inside each window at the token's own position)."""
        residual = hidden
        normed = layer.layer_norm1(hidden)
        x = normed
        if layer.window_size > 0:
            rows, cols = x.shape[1], x.shape[2]
            x, padding = layer.window_partition(x, layer.window_size)
        with qkv_adapter(layer.attn, block, adapter):
            attn, _ = layer.attn(hidden_states=x)
        if layer.window_size > 0:
            attn = layer.window_unpartition(attn, layer.window_size, padding, (rows, cols))
        if adapter is not None:
            batch, rows, cols, dim = normed.shape
            delta = adapter.block_delta(block, normed.reshape(batch, rows * cols, dim))
            if delta is not None:
                attn = attn + delta.view(batch, rows, cols, dim)
        hidden = residual + attn
        return hidden + layer.mlp(layer.layer_norm2(hidden))

    # ----------------------------------------------------------------- prompts and decoding
    def decode(self, embeddings: torch.Tensor, points: torch.Tensor | None = None,
               labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
               multimask_output: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """embeddings B x C x h x w; points B x N x 2 and labels B x N (model-input pixels; label -10 = padding);
        boxes B x 4. Returns low-res logits B x M x 4h x 4w and predicted IoU B x M (M = 3 or 1)."""
        model = self.model
        batch = embeddings.shape[0]
        positional = model.get_image_wide_positional_embeddings().repeat(batch, 1, 1, 1)
        if points is not None and labels is None:
            labels = torch.ones(points.shape[:2], dtype=torch.long, device=points.device)
        sparse, dense = model.prompt_encoder(
            input_points=None if points is None else points[:, None].to(embeddings.dtype),
            input_labels=None if labels is None else labels[:, None].long(),
            input_boxes=None if boxes is None else boxes[:, None].to(embeddings.dtype),
            input_masks=None,
        )
        logits, iou = model.mask_decoder(
            image_embeddings=embeddings, image_positional_embeddings=positional,
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask_output,
        )
        return logits[:, 0], iou[:, 0]


def preprocess_batch(backbone: SamBackbone, images: list[np.ndarray]) -> tuple[torch.Tensor, list[ResizeGeometry]]:
    """Several images -> B x 3 x S x S and their geometries."""
    tensors, geometries = zip(*(backbone.preprocess(image) for image in images))
    return torch.stack(tensors), list(geometries)
