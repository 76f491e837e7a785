"""SAM (ViT image encoder) on transformers' `SamModel`: the only code that knows SAM's internals.

Split execution for SAMCL:

    prefix(pixels, stop)        patch embedding + blocks 0..stop          -> B x H x W x D tokens
    pool(tokens)                mean over the grid                        -> B x D (the selector's input)
    suffix(tokens, start, ad)   blocks start.. (adapted ones get SLoRA) + neck (+ heat injection)
    decode(embeddings, ...)     prompt encoder + mask decoder             -> low-res logits, IoU

Each block is computed once: the suffix starts where the prefix stopped.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from transformers import SamConfig, SamModel

from ..augmodule import AugModuleConfig
from ..prompts import HeatConfig, render_heat
from .preprocess import ResizeGeometry, normalize_and_pad, resize_longest, to_rgb_array

#: SAM's pixel statistics (RGB, 0-255), from Meta's Sam.pixel_mean / pixel_std.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
#: The reference heat kernel, given in cells of SAM's image-embedding grid at 1024 px; scaled to other grids.
REFERENCE_HEAT = HeatConfig(sigma=1.7, kernel_size=9, grid=64)


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


class SamBackbone(nn.Module):
    """A frozen `SamModel` with split execution and adapter hooks."""

    family = "sam"
    supports_qkv_lora = True  # `_run_block` applies an adapter's qkv delta (LoRA on qkv, as PEFT places it)

    def __init__(self, model: SamModel):
        super().__init__()
        self.model = model.eval()
        self.model.requires_grad_(False)
        vision = model.config.vision_config
        self.image_size = int(vision.image_size)
        self.patch_size = int(vision.patch_size)
        self.grid = (self.image_size // self.patch_size,) * 2
        self.num_blocks = int(vision.num_hidden_layers)
        self.hidden_size = int(vision.hidden_size)
        self.neck_channels = int(vision.output_channels)
        self._identity: dict | None = None

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
    def from_pretrained(cls, path: str | Path) -> "SamBackbone":
        """A local HF-format directory (config.json + model.safetensors) or one of Meta's `.pth` checkpoints."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"{path}: no such file or directory")
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ValueError(f"{path}: not a model directory (no config.json)")
            try:
                config = json.loads((path / "config.json").read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{path / 'config.json'}: unreadable ({exc})") from None
            model_type = config.get("model_type") if isinstance(config, dict) else None
            if model_type != "sam":
                raise ValueError(f"{path}: model_type is {model_type!r}, expected 'sam'")
            return cls(load_hf_model(SamModel, path, "SAM"))
        from .meta import load_meta_checkpoint

        return cls(load_meta_checkpoint(path))

    def identity(self) -> dict:
        """Family, architecture + sha256 of the config and of the weights: a store is tied to exactly this base."""
        if self._identity is None:
            self._identity = model_identity(self.model, self.family)
        return self._identity

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

    @property
    def heat_config(self) -> HeatConfig:
        """Reference kernel (9 x 9, sigma 1.7 on a 64-cell grid), scaled to this grid's size."""
        return scaled_heat_config(self.grid)

    def heat(self, points: torch.Tensor | None, labels: torch.Tensor | None,
             boxes: torch.Tensor | None) -> torch.Tensor:
        """Prompt heat on the adapted blocks' token grid: model-input pixels in, B x rows x cols out."""
        return render_heat(points, labels, boxes, self.grid, self.patch_size, self.heat_config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

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

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The base encoder end to end (no module): B x 3 x S x S -> B x C x h x w."""
        return self.suffix(self.prefix(pixel_values, -1), 0)

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


def model_identity(model: nn.Module, family: str) -> dict:
    """Family, architecture and sha256 of a transformers model's config and weights (what a store records)."""
    config = model.config.to_dict()
    for key in ("transformers_version", "_name_or_path", "torch_dtype", "dtype", "architectures"):
        config.pop(key, None)
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    weights = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return {"family": family, "architecture": type(model).__name__, "config_sha256": config_hash,
            "weights_sha256": weights.hexdigest()}


def scaled_heat_config(grid: tuple[int, int]) -> HeatConfig:
    """The reference heat kernel (9 x 9 cells, sigma 1.7 at 64 cells) scaled to a grid of `grid[0]` rows."""
    return REFERENCE_HEAT.scaled_to(grid[0])


def preprocess_batch(backbone: SamBackbone, images: list[np.ndarray]) -> tuple[torch.Tensor, list[ResizeGeometry]]:
    """Several images -> B x 3 x S x S and their geometries."""
    tensors, geometries = zip(*(backbone.preprocess(image) for image in images))
    return torch.stack(tensors), list(geometries)


def load_hf_model(model_class, path: Path, label: str):
    """A transformers model from a local directory, strictly: weights from safetensors only (never a pickled
    pytorch_model.bin), and every weight present with its shape (transformers would otherwise initialise missing
    ones at random and only log it). Any problem is one ValueError naming the path; transformers' own report
    and progress bars are kept off the terminal."""
    from transformers.utils import logging as hf_logging

    if not any((path / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        pickled = next((name for name in ("pytorch_model.bin", "pytorch_model.bin.index.json")
                        if (path / name).is_file()), None)
        hint = f"; {pickled} is a pickle, which samcl does not load: convert it to safetensors" if pickled else ""
        raise ValueError(f"{path}: no model.safetensors{hint}")
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, info = model_class.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                  ignore_mismatched_sizes=True, output_loading_info=True)
    except Exception as exc:  # transformers raises many types for broken files
        detail = " ".join(str(exc).split())[:200]
        raise ValueError(f"{path}: cannot load {label} weights ({type(exc).__name__}: {detail})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    for kind in ("missing_keys", "mismatched_keys"):
        keys = sorted(info.get(kind) or [], key=str)
        if keys:
            first = keys[0] if isinstance(keys[0], str) else f"{keys[0][0]} {tuple(keys[0][1])} vs {tuple(keys[0][2])}"
            raise ValueError(f"{path}: not a {label} checkpoint for its config.json ({len(keys)} "
                             f"{kind.replace('_', ' ')}, e.g. {first})")
    return model.eval()
