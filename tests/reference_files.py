"""Files with the pickle structure of the authors' releases (checkpoint/SAM1/*.pth, Module_Selector.pth), written
by the tests themselves: stand-in classes under a fake `module.SAMCL` package, registered in sys.modules only
while `torch.save` runs, so nothing of them is importable when samcl reads the files."""

from __future__ import annotations

import sys
import types
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn


def _extra_class(module_name: str) -> type:
    class Extra(nn.Module):
        def __init__(self, rank: int, dim: int, neck: int):
            super().__init__()
            self.layer = nn.Linear(rank, rank)
            self.norm = nn.LayerNorm(rank)
            if neck:
                self.upward = nn.Linear(rank, dim)
                self.upward_ = nn.Linear(rank, neck)
            self.cnt = 0

    Extra.__module__ = module_name
    Extra.__qualname__ = "Extra"
    return Extra


@contextmanager
def fake_authors_package(module_name: str):
    """`module.SAMCL` (or `module.SAMCL_2`) importable while the block runs, gone afterwards."""
    package, child = types.ModuleType("module"), types.ModuleType(module_name)
    child.Extra = _extra_class(module_name)
    setattr(package, module_name.split(".")[1], child)
    saved = {k: sys.modules.get(k) for k in ("module", module_name)}
    sys.modules["module"], sys.modules[module_name] = package, child
    try:
        yield child
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value


def module_object(extra_cls, dim: int, blocks, rank: int = 10, neck: int = 0, seed: int = 0) -> dict:
    """The dict their code saves per domain, every parameter random (B too, so a misplaced tensor shows)."""
    torch.manual_seed(seed)
    obj = {"extra": extra_cls(rank, dim, neck), "lora_layer": list(blocks), "A": nn.Linear(dim, rank)}
    obj["extra"].cnt = 7
    for i in range(len(blocks)):
        obj[f"B_{i:03d}"] = nn.Linear(rank, dim)
        obj[f"norm1_{i:03d}"] = nn.LayerNorm(rank)
        obj[f"norm2_{i:03d}"] = nn.LayerNorm(rank)
    with torch.no_grad():
        for value in obj.values():
            if isinstance(value, nn.Module):
                for param in value.parameters():
                    param.normal_(0, 0.5)
    return obj


def write_module_file(path: Path, dim: int, blocks, rank: int = 10, neck: int = 0, seed: int = 0,
                      sam2: bool = False) -> dict:
    """Save one module file; returns its object (the stand-in classes stay usable for comparisons)."""
    name = "module.SAMCL_2" if sam2 else "module.SAMCL"
    with fake_authors_package(name) as package:
        obj = module_object(package.Extra, dim, blocks, rank, neck, seed)
        torch.save(obj, path)
    return obj


def selector_state(dim: int, domains: int, seed: int = 0) -> dict:
    """Their selector's state dict: layer1..layer4 Linear, norm1..norm3 BatchNorm1d (running stats too)."""
    torch.manual_seed(seed)
    hidden = dim // 4
    layers = {"layer1": nn.Linear(dim, dim), "norm1": nn.BatchNorm1d(dim), "layer2": nn.Linear(dim, hidden),
              "norm2": nn.BatchNorm1d(hidden), "layer3": nn.Linear(hidden, hidden), "norm3": nn.BatchNorm1d(hidden),
              "layer4": nn.Linear(hidden, domains)}
    state = {}
    for name, layer in layers.items():
        with torch.no_grad():
            for tensor in layer.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(torch.rand_like(tensor) + 0.1)
                else:
                    tensor.fill_(123)
        state.update({f"{name}.{k}": v for k, v in layer.state_dict().items()})
    return state


def write_reference_dir(root: Path, dim: int, blocks, neck: int,
                        domains=("ISTD", "Kvasir", "ISIC", "cod", "camo", "COCO"),
                        no_module_domain: str = "COCO") -> dict:
    """A checkpoint folder as released: one file per domain except the one without a module, and Module_Selector.pth."""
    root.mkdir(parents=True, exist_ok=True)
    objects = {name: write_module_file(root / f"{name}.pth", dim, blocks, neck=neck, seed=k)
               for k, name in enumerate(domains) if name != no_module_domain}
    torch.save(selector_state(dim, len(domains)), root / "Module_Selector.pth")
    return objects
