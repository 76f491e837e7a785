"""Exporting a store: the graphs (built once per base and export settings, cached on disk) and a folder that runs
without samcl.

    folder = cached_graphs(backbone, aug_config, selector_block)   # prefix/suffix/decoder.onnx, built on first use
    export_store(samcl, "my-set-onnx")                              # graphs + module rows + selector + samcl_export.json

The graphs depend only on the base's weights, the AugModule's shapes (config) and the selector block, never on
the learned modules (their rows are graph inputs), so one cached build serves every store on the same base and
every generation of a store; the key is a hash of the base's identity and those settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .._version import __version__
from ..errors import SamclError
from ..io import atomic_write_bytes, atomic_write_json, current_umask
from ..method.augmodule import AugModuleConfig, parameter_shapes
from ..store.files import tensors_to_bytes
from .graphs import OPSET, export_graphs, row_input

#: Bumped whenever what the graphs compute or their interface changes: older cache entries are then ignored.
GRAPH_FORMAT = 2
EXPORT_JSON = "samcl_export.json"
CACHE_ENV = "SAMCL_CACHE_DIR"


def cache_root() -> Path:
    """$SAMCL_CACHE_DIR, else $XDG_CACHE_HOME/samcl, else ~/.cache/samcl."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "samcl"


def refuse_unsupported(backbone, config: AugModuleConfig | None) -> None:
    """One line naming why a set cannot run as graphs: SAM 2 (Hiera) and the authors' imported modules."""
    if getattr(backbone, "family", "sam") != "sam":
        why = (f"graph export supports SAM (ViT) bases only; this store's base is {backbone.family} (SAM 2's Hiera "
               "encoder is not exported yet)")
        raise SamclError(f"{why}: use runtime 'torch'", cli=f"{why}: use --runtime torch")
    if config is not None and config.heat_mode == "reference":
        why = ("this store holds modules imported from the authors' files (heat mode 'reference': their stretched "
               "input and their heat), which the graphs do not implement")
        raise SamclError(f"{why}: use runtime 'torch'", cli=f"{why}: use --runtime torch")


def graph_settings(backbone, config: AugModuleConfig, selector_block: int) -> dict:
    """Everything the graphs depend on: the cache key's content, recorded next to the graphs."""
    return {"graph_format": GRAPH_FORMAT, "opset": OPSET, "backbone": backbone.identity(),
            "augmodule": config.to_dict(), "selector_block": selector_block, "image_size": backbone.image_size}


def graph_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]


def cached_graphs(backbone, config: AugModuleConfig, selector_block: int, root: Path | None = None) -> Path:
    """The folder holding this base's graphs for these settings, exported now if no earlier run did. A build
    happens in a temporary sibling folder renamed into place, so a crash or a second process building at the
    same time never leaves a half-written entry."""
    refuse_unsupported(backbone, config)
    settings = graph_settings(backbone, config, selector_block)
    folder = (root or cache_root()) / "graphs" / graph_key(settings)
    if (folder / "graphs.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
    try:
        with torch.no_grad():
            interface = export_graphs(backbone, config, selector_block, building)
        atomic_write_json(building / "graphs.json", {"settings": settings, "graphs": interface})
        os.chmod(building, 0o777 & ~current_umask())
        try:
            os.rename(building, folder)
        except OSError:  # another process finished the same build first: use its entry
            if not (folder / "graphs.json").is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder


def export_store(samcl, out: Path) -> dict:
    """The store's graphs, module rows, selector state and a JSON saying how to run them, as folder `out` (which
    must not exist, or be empty). Returns the JSON written."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SamclError(f"{out}: exists and is not an empty folder; give a new folder for the export")
    classes, backbone = samcl.module_set, samcl.backbone
    config = samcl.aug_config
    refuse_unsupported(backbone, config)
    graphs = cached_graphs(backbone, config, classes.selector_block)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for name in ("prefix", "suffix", "decoder"):
            shutil.copyfile(graphs / f"{name}.onnx", staging / f"{name}.onnx")
        bank = samcl.engine.bank()
        atomic_write_bytes(staging / "modules.safetensors", tensors_to_bytes(bank.tensors))
        description = describe(samcl, json.loads((graphs / "graphs.json").read_text()), bank)
        if classes.selector is not None:
            atomic_write_bytes(staging / "selector.safetensors", tensors_to_bytes(classes.selector.to_tensors()))
        atomic_write_json(staging / EXPORT_JSON, description)
        os.chmod(staging, 0o777 & ~current_umask())
        if out.exists():
            out.rmdir()
        os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return description


def describe(samcl, graphs: dict, bank) -> dict:
    """samcl_export.json: what each file holds and how to run them (the README's torch-free script reads it)."""
    classes, backbone, config = samcl.module_set, samcl.backbone, samcl.aug_config
    from ..backbone.sam import PIXEL_MEAN, PIXEL_STD

    heat = backbone.heat_config
    domains = [{"name": d.name, "kind": d.kind, "row": bank.row(k)} for k, d in enumerate(classes.domains)]
    selector = None
    if classes.selector is not None:
        selector = {"file": "selector.safetensors", "kind": classes.selector_config.kind,
                    "config": classes.selector_config.to_dict(), "dim": classes.selector.dim,
                    "classes": classes.names}
    return {
        "samcl_version": __version__, "format": "samcl-onnx-export", "format_version": GRAPH_FORMAT,
        "base": {"identity": backbone.identity(), "hint": classes.base_hint},
        "graphs": graphs["graphs"],
        "preprocess": {"image_size": backbone.image_size, "resize": "longest side to image_size, bilinear, sides "
                       "rounded half up; zero padding bottom and right after normalizing", "pixel_mean": PIXEL_MEAN,
                       "pixel_std": PIXEL_STD, "layout": "RGB, B x 3 x S x S float32"},
        "heat": {"grid": list(backbone.grid), "stride": backbone.site.stride, "sigma": heat.sigma,
                 "kernel_size": heat.kernel_size, "rule": "max(positive bumps, box) - max(negative bumps); bump = "
                 "exp(-d^2 / 2 sigma^2) at token centres, |dx|, |dy| <= kernel_size // 2 + 0.5 cells"},
        "modules": {"file": "modules.safetensors", "rows": "row 0 = base (zeros), a domain's row in 'domains'",
                    "inputs": {name: row_input(name) for name in parameter_shapes(config)},
                    "config": config.to_dict()},
        "domains": domains, "selector": selector, "selector_block": classes.selector_block,
        "fallback": "statistics selectors send an image no domain fits to base (row 0)",
    }
