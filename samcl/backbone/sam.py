"""SAM (ViT image encoder) on transformers' `SamModel`: the only code that knows SAM's internals.

Split execution for SAMCL:

    prefix(pixels, stop)        patch embedding + blocks 0..stop          -> B x H x W x D tokens
    pool(tokens)                mean over the grid                        -> B x D (the paper's selector input)
    pool_stats(tokens)          mean and std over the grid                -> B x 2D (the selectors' input)
    suffix(tokens, start, ad)   blocks start.. (adapted ones get SLoRA) + neck (+ heat injection)
    decode(embeddings, ...)     prompt encoder + mask decoder             -> low-res logits, IoU

Each block is computed once: the suffix starts where the prefix stopped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SamConfig, SamModel

from ..io import to_rgb_array
from .base import AdaptationSite, Adapter, FrozenBackbone, run_adapted_block
from .preprocess import ResizeGeometry, StretchGeometry, normalize_and_pad, resize_longest

#: SAM's pixel statistics (RGB, 0-255), from Meta's Sam.pixel_mean / pixel_std.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


#: On a CPU, attention over more tokens than this runs in chunks of whole query rows of about this many queries,
#: so the bias never holds more than heads x chunk x N values at once (a global block of ViT-B at 1024 px: 0.2 GB
#: instead of 0.8 GB in float32, per image). Each query's result is the same bit for bit (the fused kernel treats
#: every query row alone), and so is the speed on this project's CPU; the GPU path is unchanged (not measured).
CPU_QUERY_CHUNK = 1024


def attention(attn: nn.Module, x: torch.Tensor, qkv_delta: torch.Tensor | None = None) -> torch.Tensor:
    """SAM's attention (transformers' `SamVisionAttention`, window or global) through PyTorch's fused
    `scaled_dot_product_attention`, with the decomposed relative-position bias passed as its additive mask.
    x: B x H x W x D (a window or the whole grid); qkv_delta: B x H x W x 3D added to the qkv projection (LoRA
    on qkv) or None. Everything stays in x's dtype (bfloat16 encoder: bfloat16 kernels); the bias is built
    from the bfloat16 query as transformers builds it from its own."""
    batch, rows, cols, _ = x.shape
    heads, tokens = attn.num_attention_heads, rows * cols
    qkv = attn.qkv(x)
    if qkv_delta is not None:
        qkv = qkv + qkv_delta.to(qkv.dtype)
    qkv = qkv.reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)  # 3 x B x heads x N x c
    query, key, value = qkv.unbind(0)
    if not attn.use_rel_pos:
        out = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
    else:
        along_h, along_w = rel_pos_terms(attn, query, rows, cols)
        step = rows  # query rows per call: all of them, or a chunk on a CPU (CPU_QUERY_CHUNK)
        if x.device.type == "cpu" and tokens > CPU_QUERY_CHUNK:
            step = max(1, CPU_QUERY_CHUNK // cols)
        parts = []
        for start in range(0, rows, step):
            stop = start + step
            bias = rel_pos_sum(along_h[:, start:stop], along_w[:, start:stop], batch, heads)
            parts.append(F.scaled_dot_product_attention(query[:, :, start * cols:stop * cols], key, value,
                                                        attn_mask=bias, scale=attn.scale))
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    out = out.view(batch, heads, rows, cols, -1).permute(0, 2, 3, 1, 4).reshape(batch, rows, cols, -1)
    return attn.proj(out)


def rel_pos_terms(attn: nn.Module, query: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of transformers' decomposed relative-position bias (`SamVisionAttention.get_decomposed_rel_pos`:
    the same einsums on the same query), made contiguous: (B heads) x rows x cols x rows and ... x cols. Their sum
    (`rel_pos_sum`) is the bias; theirs comes out strided (batch x heads inside), so making it the attention mask
    copied heads x N x N values once more per block (0.8 GB per global block at 1024 px in float32): one global ViT-B
    block at 1024 px in bfloat16 took 1,032 ms with theirs and 551 ms with these on a CPU with native bfloat16
    (`benchmarks/attention_bias.py`). query: B x heads x N x c."""
    batch, heads, tokens, channels = query.shape
    grid = query.reshape(batch * heads, rows, cols, channels)
    along_h = torch.einsum("bhwc,hkc->bhwk", grid, attn.get_rel_pos(rows, rows, attn.rel_pos_h))
    along_w = torch.einsum("bhwc,wkc->bhwk", grid, attn.get_rel_pos(cols, cols, attn.rel_pos_w))
    return along_h.contiguous(), along_w.contiguous()


def rel_pos_sum(along_h: torch.Tensor, along_w: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
    """The bias of the query rows the terms hold: B x heads x (rows x cols) x N, contiguous. The broadcast sum of
    contiguous terms comes out contiguous, so the reshape is a view (no `out=`: it must stay differentiable)."""
    bias = along_h[..., None] + along_w[..., None, :]
    return bias.view(batch, heads, bias.shape[1] * bias.shape[2], -1)


def rel_pos_bias(attn: nn.Module, query: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """transformers' decomposed relative-position bias, the same values bit for bit, as a contiguous
    B x heads x N x N tensor (see `rel_pos_terms`)."""
    batch, heads = query.shape[:2]
    return rel_pos_sum(*rel_pos_terms(attn, query, rows, cols), batch, heads)


class SamBackbone(FrozenBackbone, family="sam", model_type="sam", model_class=SamModel, label="SAM"):
    """A frozen `SamModel` with split execution and adapter hooks."""

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

    # ----------------------------------------------------------------- choices derived from the config
    @property
    def default_selector_block(self) -> int:
        """The middle block (6 of 12 for ViT-B, as the reference)."""
        return self.num_blocks // 2

    @property
    def site(self) -> AdaptationSite:
        """Every block but the first can be adapted (its output feeds the selector at the earliest); by default
        the blocks after the selector block (7..11 for ViT-B), with neck injection."""
        return AdaptationSite(dim=self.hidden_size, grid=self.grid, stride=self.patch_size,
                              blocks=tuple(range(1, self.num_blocks)),
                              default_blocks=tuple(range(self.default_selector_block + 1, self.num_blocks)),
                              selector_block=self.default_selector_block, neck_dim=self.hidden_size,
                              neck_channels=self.neck_channels, qkv_lora=True)

    # ----------------------------------------------------------------- preprocessing
    def preprocess(self, image, stretch: bool = False) -> tuple[torch.Tensor, ResizeGeometry]:
        """PIL image or array -> (3 x S x S normalized, padded tensor; geometry for coordinates and masks).
        stretch: the whole image resized to S x S without keeping its aspect ratio (bilinear, no padding), as the
        authors' code feeds SAM (for modules imported from it); default: SAM's longest side + padding."""
        rgb = to_rgb_array(image)
        kind = StretchGeometry if stretch else ResizeGeometry
        geometry = kind.for_image(rgb.shape[0], rgb.shape[1], self.image_size)
        return normalize_and_pad(resize_longest(rgb, geometry), geometry, PIXEL_MEAN, PIXEL_STD), geometry

    # ----------------------------------------------------------------- split execution
    def prefix(self, pixel_values: torch.Tensor, stop_block: int) -> torch.Tensor:
        """B x 3 x S x S -> tokens after block `stop_block` (inclusive): B x H x W x D."""
        encoder = self.model.vision_encoder
        hidden = encoder.patch_embed(pixel_values.to(self.encoder_dtype))
        if encoder.pos_embed is not None:
            hidden = hidden + encoder.pos_embed
        for block in range(stop_block + 1):
            hidden = self._run_block(encoder.layers[block], hidden, block, None)
        return hidden

    @staticmethod
    def pool(tokens: torch.Tensor) -> torch.Tensor:
        """B x H x W x D -> B x D (mean over the grid, in float32 whatever the encoder's precision)."""
        return tokens.float().mean(dim=(1, 2))

    @classmethod
    def pool_stats(cls, tokens: torch.Tensor) -> torch.Tensor:
        """B x H x W x D -> B x 2D: the grid mean (exactly `pool`), then the spread (std) over the grid: richer
        features from the tokens the prefix computed anyway (`samcl.selector` reads the columns it uses)."""
        return torch.cat([cls.pool(tokens), tokens.var(dim=(1, 2), unbiased=False).sqrt()], dim=1)

    def suffix(self, tokens: torch.Tensor, start_block: int, adapter: Adapter | None = None) -> torch.Tensor:
        """Tokens after block `start_block - 1` -> image embeddings B x C x h x w, adapted where `adapter` says:
        neck(x + U_D(H)) + U_out(H) around the neck when the adapter gives those deltas."""
        encoder = self.model.vision_encoder
        hidden = tokens
        for block in range(start_block, self.num_blocks):
            hidden = self._run_block(encoder.layers[block], hidden, block, adapter)
        into, out = adapter.neck_deltas() if adapter is not None else (None, None)
        if into is not None:
            hidden = hidden + into.view(hidden.shape).to(hidden.dtype)
        embeddings = encoder.neck(hidden).to(self.dtype)  # the decoder's dtype (bfloat16 encoder: float32)
        if out is not None:
            batch, _, rows, cols = embeddings.shape
            embeddings = embeddings + out.view(batch, rows, cols, -1).permute(0, 3, 1, 2).to(embeddings.dtype)
        return embeddings

    def run_block(self, block: int, hidden: torch.Tensor, adapter: Adapter | None = None) -> torch.Tensor:
        """Encoder block `block` alone: B x H x W x D tokens in and out, adapted where `adapter` says."""
        return self._run_block(self.model.vision_encoder.layers[block], hidden, block, adapter)

    @staticmethod
    def _run_block(layer: nn.Module, hidden: torch.Tensor, block: int, adapter: Adapter | None) -> torch.Tensor:
        """One SamVisionLayer with the adapter's attention delta (and qkv delta, for LoRA on qkv); attention
        through the fused kernel (`attention`), also where no adapter acts (the prefix, the base)."""
        def attend(x: torch.Tensor) -> torch.Tensor:
            qkv_delta = adapter.qkv_delta(block, x) if adapter is not None and adapter.adapts_qkv(block) else None
            return attention(layer.attn, x, qkv_delta)

        return run_adapted_block(layer, hidden, block, adapter, attend, layer.window_partition,
                                 layer.window_unpartition)

    # ----------------------------------------------------------------- prompts and decoding
    def decode(self, embeddings: torch.Tensor, points: torch.Tensor | None = None,
               labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
               multimask_output: bool = False, *, mask_input: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """embeddings B x C x h x w; points B x N x 2 and labels B x N (model-input pixels; label -10 = padding);
        boxes B x 4; mask_input B x 1 x 4h x 4w low-res logits (a previous prediction, as SamPredictor's
        `mask_input`) or None. Returns low-res logits B x M x 4h x 4w and predicted IoU B x M (M = 3 or 1)."""
        model = self.model
        batch = embeddings.shape[0]
        positional = model.get_image_wide_positional_embeddings().repeat(batch, 1, 1, 1)
        if points is not None and labels is None:
            labels = torch.ones(points.shape[:2], dtype=torch.long, device=points.device)
        sparse, dense = model.prompt_encoder(
            input_points=None if points is None else points[:, None].to(embeddings.dtype),
            input_labels=None if labels is None else labels[:, None].long(),
            input_boxes=None if boxes is None else boxes[:, None].to(embeddings.dtype),
            input_masks=None if mask_input is None else mask_input.to(embeddings.dtype),
        )
        if sparse is None:  # a mask alone: no sparse token, as Meta's prompt encoder gives B x 0 x C
            sparse = dense.new_zeros(batch, 1, 0, dense.shape[1])
        logits, iou = model.mask_decoder(
            image_embeddings=embeddings, image_positional_embeddings=positional,
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask_output,
        )
        return logits[:, 0], iou[:, 0]

