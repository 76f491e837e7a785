"""What every backbone shares: a frozen transformers model, loading from a local directory or a checkpoint,
its identity (what a store is tied to), the reference heat kernel scaled to its token grid, where an adapter
may act (`AdaptationSite`), what an adapter gives the backbone (`Adapter`: tensors, never code to call), and
the one encoder block with an attention delta that SAM and SAM 2 share (`run_adapted_block`)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch
from torch import nn

from ..io import read_json_file
from ..method.prompts import HeatConfig, render_heat

#: The reference heat kernel, given in cells of SAM's image-embedding grid at 1024 px; scaled to other grids.
REFERENCE_HEAT = HeatConfig(sigma=1.7, kernel_size=9, grid=64)


@dataclass(frozen=True)
class AdaptationSite:
    """Where an adapter can act on this backbone; `samcl.method.augmodule.config_for` derives an AugModule from it.

    dim: token width D at the adaptable blocks; grid: (rows, cols) of their tokens (the heat's grid); stride:
    model-input pixels per grid cell; blocks: the encoder blocks an adapter may adapt; default_blocks: those
    adapted by default (after the selector block); selector_block: the default selector block (its pooled
    output is the selector's input; it precedes every adapted block); neck_dim / neck_channels: token width
    entering the neck and channels leaving it (0: no neck injection); qkv_lora: whether the backbone applies
    a delta on the attention's qkv projection (LoRA as PEFT places it)."""

    dim: int
    grid: tuple[int, int]
    stride: float
    blocks: tuple[int, ...]
    default_blocks: tuple[int, ...]
    selector_block: int
    neck_dim: int = 0
    neck_channels: int = 0
    qkv_lora: bool = False


class Adapter(Protocol):
    """What the suffix takes from an AugModule (`samcl.method.augmodule.Injection`): tensors to add, per block.

    block_delta: x (B x N x D, an adapted block's attention input after its norm), window (the block's attention
    window size, 0 for global attention: an adapter may place its tensors per window) -> B x N x D added to the
    attention output, or None where the block is not adapted. qkv_delta: the qkv projection's input ->
    the term added to its output, or None. neck_deltas: (B x N x D added to the tokens entering the neck,
    B x N x C added to its output), each None when absent."""

    def block_delta(self, block: int, x: torch.Tensor, window: int = 0) -> torch.Tensor | None: ...
    def qkv_delta(self, block: int, x: torch.Tensor) -> torch.Tensor | None: ...
    def adapts_qkv(self, block: int) -> bool: ...
    def neck_deltas(self) -> tuple[torch.Tensor | None, torch.Tensor | None]: ...


def run_adapted_block(layer: nn.Module, hidden: torch.Tensor, block: int, adapter: Adapter | None,
                      attend: Callable[[torch.Tensor], torch.Tensor], partition, unpartition) -> torch.Tensor:
    """One pre-norm transformer block (SAM's ViT layer or a Hiera block at constant width) with the adapter's
    delta added to the attention output. hidden: B x H x W x D. The delta is per token, so adding it on the
    full grid after un-partitioning equals adding it inside each window at the token's own position.
    attend: windows (or the grid) -> attention output; partition / unpartition: the model's window helpers."""
    residual = hidden
    normed = layer.layer_norm1(hidden)
    x = normed
    if layer.window_size > 0:
        rows, cols = x.shape[1], x.shape[2]
        x, padding = partition(x, layer.window_size)
    attn = attend(x)
    if layer.window_size > 0:
        attn = unpartition(attn, layer.window_size, padding, (rows, cols))
    if adapter is not None:
        batch, rows, cols, dim = normed.shape
        delta = adapter.block_delta(block, normed.reshape(batch, rows * cols, dim), layer.window_size)
        if delta is not None:  # the adapter computes in its own dtype (float32); the block keeps the encoder's
            attn = attn + delta.view(batch, rows, cols, dim).to(attn.dtype)
    hidden = residual + attn
    return hidden + layer.mlp(layer.layer_norm2(hidden))


class FrozenBackbone(nn.Module):
    """A transformers model with every weight frozen. Subclasses name what they wrap in their class statement
    (`class SamBackbone(FrozenBackbone, family="sam", model_type="sam", model_class=SamModel, label="SAM")`:
    the family, config.json's model_type, the transformers class, a name for messages; a subclass of a subclass
    names only what differs), and implement the split execution (`prefix`, `pool`, `suffix`, `decode`) and
    `grid` (the adapted blocks' token grid)."""

    family = ""
    model_type = ""
    model_class: type = nn.Module
    label = ""
    grid: tuple[int, int]

    def __init_subclass__(cls, **wraps):
        unknown = set(wraps) - {"family", "model_type", "model_class", "label"}
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown class keywords {sorted(unknown)}")
        super().__init_subclass__()
        for name, value in wraps.items():
            setattr(cls, name, value)

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()
        self.model.requires_grad_(False)
        #: "float32" or "bfloat16": the image encoder's weights and activations (`set_precision`).
        self.precision = "float32"
        self._identity: dict | None = None
        #: Where the weights came from, set by `samcl.backbone.load_backbone`: {"base": the spec a store records,
        #: "file", "size", "mtime_ns": the weights file}. None for a model built in memory.
        self.source: dict | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "FrozenBackbone":
        """A local HF-format directory (config.json + model.safetensors). Meta's checkpoint files: use
        `samcl.load_backbone`, the one entry point for every kind of base."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"{path}: no such file or directory")
        if not path.is_dir():
            raise ValueError(f"{path}: is a file, not a model directory (samcl.load_backbone reads checkpoint files)")
        if not (path / "config.json").is_file():
            raise ValueError(f"{path}: not a model directory (no config.json)")
        config = read_json_file(path / "config.json", 1 << 20, "model config", "unreadable")
        return cls.from_config_dict(path, config)

    @classmethod
    def from_config_dict(cls, path: Path, config) -> "FrozenBackbone":
        """An HF-format directory whose config.json the caller has already read (it is read once)."""
        model_type = config.get("model_type") if isinstance(config, dict) else None
        if model_type != cls.model_type:
            raise ValueError(f"{path}: model_type is {model_type!r}, expected {cls.model_type!r}")
        return cls(load_hf_model(cls.model_class, path, cls.label, config))

    def identity(self) -> dict:
        """Family, architecture + sha256 of the config and of the weights: a store is tied to exactly this base.
        Hashing every weight takes a while at full size, so it happens once per backbone, and not at all when
        a store recorded this identity for the same weights file (`adopt_identity`)."""
        if self._identity is None:
            self._identity = model_identity(self.model, self.family)
        return self._identity

    def adopt_identity(self, identity: dict, source: dict | None) -> None:
        """Take a store's recorded identity without hashing when the store recorded it for the very file this
        backbone was loaded from, unchanged since (same path, size and modification time)."""
        if self._identity is None and self.source is not None and source == self.source:
            self._identity = dict(identity)

    @property
    def heat_config(self) -> HeatConfig:
        """The reference kernel (9 x 9, sigma 1.7 on a 64-cell grid), scaled to this backbone's heat grid."""
        return REFERENCE_HEAT.scaled_to(self.grid[0])

    def heat(self, points: torch.Tensor | None, labels: torch.Tensor | None,
             boxes: torch.Tensor | None) -> torch.Tensor:
        """Prompt heat on the adapted blocks' token grid: model-input pixels in, B x rows x cols out."""
        site = self.site
        return render_heat(points, labels, boxes, site.grid, site.stride, self.heat_config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The decoder's dtype: prompts, decoding and adapters compute in it (float32 at every precision)."""
        return next(self.model.mask_decoder.parameters()).dtype

    @property
    def encoder_dtype(self) -> torch.dtype:
        """The image encoder's dtype: its weights, and the prefix tokens and activations it produces."""
        return next(self.model.vision_encoder.parameters()).dtype

    def set_precision(self, precision: str) -> None:
        """Run the image encoder in `precision` ("float32" or "bfloat16"): its weights are cast once, here, never
        per call. The prompt encoder and mask decoder stay float32 (a small share of the time, and the logits
        keep their precision); adapters add their float32 deltas cast to the encoder's dtype; `pool` averages in
        float32 so the selector sees float32 features. Casting back from bfloat16 would not restore the weights,
        so it is refused: load the base again."""
        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
        if precision not in dtypes:
            raise ValueError(f"precision {precision!r}: expected float32 or bfloat16")
        if precision == self.precision:
            return
        if self.precision != "float32":
            raise ValueError(f"the encoder already runs in {self.precision}: load the base again for {precision}")
        self.identity()  # a store is tied to the float32 weights: their hash, taken (or adopted) before the cast
        self.model.vision_encoder.to(dtypes[precision])
        self.precision = precision

    def encode(self, pixel_values: torch.Tensor):
        """The base encoder end to end (no module)."""
        return self.suffix(self.prefix(pixel_values, -1), 0)


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


def file_source(base: str, weights: list[Path]) -> dict:
    """What `FrozenBackbone.source` records for weights read from the files `weights` (one checkpoint, or a
    sharded model's index and every shard; for a store's base `base`): the first file's path, their total size and
    latest modification time, so a change to any shard counts."""
    stats = [os.stat(path) for path in weights]
    return {"base": base, "file": str(Path(weights[0]).resolve()), "size": sum(s.st_size for s in stats),
            "mtime_ns": max(s.st_mtime_ns for s in stats)}


def load_hf_model(model_class, path: Path, label: str, config_dict: dict | None = None):
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
        extra = {}
        if config_dict is not None:  # already read: transformers need not read config.json again
            extra["config"] = model_class.config_class.from_dict(config_dict)
        model, info = model_class.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                  ignore_mismatched_sizes=True, output_loading_info=True, **extra)
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
