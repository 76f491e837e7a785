"""What every backbone shares: a frozen transformers model, loading from a local directory or a checkpoint,
its identity (what a store is tied to), and the reference heat kernel scaled to its token grid."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from ..prompts import HeatConfig

#: The reference heat kernel, given in cells of SAM's image-embedding grid at 1024 px; scaled to other grids.
REFERENCE_HEAT = HeatConfig(sigma=1.7, kernel_size=9, grid=64)


class FrozenBackbone(nn.Module):
    """A transformers model with every weight frozen. Subclasses set `family`, `model_type` (config.json's),
    `model_class`, `label`, and implement `from_checkpoint` (official checkpoint files), the split execution
    (`prefix`, `pool`, `suffix`, `decode`) and `grid` (the adapted blocks' token grid)."""

    family = ""
    model_type = ""
    model_class: type = nn.Module
    label = ""
    grid: tuple[int, int]

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()
        self.model.requires_grad_(False)
        self._identity: dict | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "FrozenBackbone":
        """A local HF-format directory (config.json + model.safetensors) or an official checkpoint file."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"{path}: no such file or directory")
        if not path.is_dir():
            return cls.from_checkpoint(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"{path}: not a model directory (no config.json)")
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path / 'config.json'}: unreadable ({exc})") from None
        model_type = config.get("model_type") if isinstance(config, dict) else None
        if model_type != cls.model_type:
            raise ValueError(f"{path}: model_type is {model_type!r}, expected {cls.model_type!r}")
        return cls(load_hf_model(cls.model_class, path, cls.label))

    @classmethod
    def from_checkpoint(cls, path: Path) -> "FrozenBackbone":
        raise NotImplementedError

    def identity(self) -> dict:
        """Family, architecture + sha256 of the config and of the weights: a store is tied to exactly this base."""
        if self._identity is None:
            self._identity = model_identity(self.model, self.family)
        return self._identity

    @property
    def heat_config(self) -> HeatConfig:
        """The reference kernel (9 x 9, sigma 1.7 on a 64-cell grid), scaled to this backbone's heat grid."""
        return REFERENCE_HEAT.scaled_to(self.grid[0])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

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
