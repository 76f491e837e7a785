"""Backbones: the only code that knows SAM internals. `load_backbone` is the one entry point for every kind of
base: the builtin tiny SAM, an HF-format directory (SAM, SAM 2 or SAM 3's tracker), a model id on the Hugging Face
Hub (`facebook/sam-vit-base`, fetched into the Hub's cache as transformers' `from_pretrained` does), or one of Meta's
checkpoint files."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..assets import BUILTIN_TINY_SAM, BUILTIN_TINY_SAM2, BUILTINS, TINY_SAM2_DIR, TINY_SAM_DIR  # (shipped)
from ..errors import SamclError
from ..io import NoSuchFile, check_regular, read_json_file
from .base import FrozenBackbone, file_source
from .sam import SamBackbone
from .sam2 import Sam2Backbone
from .sam2_video import Sam2VideoBackbone
from .sam3 import Sam3Backbone
from .sam3_video import Sam3VideoBackbone

#: The backbones that track (keep a video model's memory weights).
VIDEO_BACKBONES = (Sam2VideoBackbone, Sam3VideoBackbone)
CANNOT_TRACK = "only SAM 2 and SAM 3 tracker bases can track"
#: The most a model directory's config.json may hold (SAM's is about 4 KB).
CONFIG_LIMIT = 1 << 20
#: A Hub model id as `from_pretrained` takes it: owner/name (letters, digits, '-', '_', '.').
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
#: What is fetched of a Hub model: its config and safetensors weights (never a pickled pytorch_model.bin).
HUB_FILES = ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]


def is_hub_id(spec: str | Path | None) -> bool:
    """`spec` names a model on the Hugging Face Hub: owner/name, and no file or folder of that name exists here."""
    text = str(spec) if spec is not None else ""
    return HUB_ID.fullmatch(text) is not None and not os.path.lexists(text) and not text.endswith((".pt", ".pth"))


def resolve_base(spec: str | Path | None) -> str:
    """The string a store records for its base: an absolute path, a Hub model id, or a builtin's name."""
    if spec is None:
        return BUILTIN_TINY_SAM
    if str(spec) in BUILTINS:
        return str(spec)
    if is_hub_id(spec):
        return str(spec)
    return str(Path(spec).expanduser().resolve())


def hub_snapshot(model_id: str) -> Path:
    """The local folder of a Hub model's config and safetensors weights: from the Hub's cache, downloaded into it
    first when missing (huggingface_hub, as transformers does; HF_HUB_OFFLINE=1 uses the cache only). Any failure
    is one SamclError naming the id and why."""
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hub

    try:
        return Path(snapshot_download(model_id, allow_patterns=HUB_FILES))
    except hub.OfflineModeIsEnabled:
        why = "offline (HF_HUB_OFFLINE is set) and not in the local Hugging Face cache"
    except hub.GatedRepoError:
        why = "a gated model on the Hugging Face Hub: accept its terms there and log in (hf auth login)"
    except hub.RepositoryNotFoundError:
        why = "no such model on the Hugging Face Hub (a private one needs hf auth login)"
    except hub.LocalEntryNotFoundError:
        why = ("the Hugging Face Hub cannot be reached and the model is not in the local cache"
               + (" (HF_HUB_OFFLINE is set)" if _hub_offline() else ""))
    except (hub.HfHubHTTPError, OSError, ValueError) as exc:
        why = f"the Hugging Face Hub did not give it ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
    raise SamclError(f"{model_id}: not a local file or folder, and {why}; give a model folder, a checkpoint file "
                     "or a model id the Hub can serve")


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def load_backbone(spec: str | Path | None = None, *, video: bool = False) -> SamBackbone | Sam2Backbone:
    """None or "builtin:tiny-sam" -> the shipped tiny SAM ("builtin:tiny-sam2": the shipped tiny SAM 2); a directory
    -> HF format, SAM, SAM 2 (video) or SAM 3 tracker (video) by its config's model_type; a Hub model id
    ("facebook/sam-vit-base") -> its HF-format snapshot (`hub_snapshot`); a file -> Meta's SAM (.pth) or SAM 2 / 2.1
    (.pt) checkpoint, told apart by its keys.
    `video`: a `Sam2VideoBackbone` that keeps the video memory weights (Meta's SAM 2 checkpoints; an HF
    directory must be a sam2_video one). The backbone remembers where it came from (`source`), so a store created
    on it can find it again."""
    base = resolve_base(spec)
    path = BUILTINS[base] if base in BUILTINS else hub_snapshot(base) if is_hub_id(base) else Path(spec)
    if base in BUILTINS and not (path / "config.json").is_file():
        raise SamclError(f"{path}: the builtin {base} is missing from this installation")
    try:
        if path.is_dir():
            backbone = _from_directory(path, video)  # (it read model.safetensors, or the index and every shard)
            weights = [path / "model.safetensors"] if (path / "model.safetensors").is_file() else \
                [path / "model.safetensors.index.json", *sorted(path.glob("model-*.safetensors"))]
        elif os.path.lexists(path):  # a file, or a fifo or device that reading refuses by name
            backbone, weights = _from_checkpoint(path, video), [path]
        else:
            raise ValueError(f"{path}: no such file or directory")
    except ValueError as exc:
        raise SamclError(str(exc)) from None
    if video and not isinstance(backbone, VIDEO_BACKBONES):
        raise SamclError(f"{path}: {CANNOT_TRACK} (this base is {backbone.label})")
    backbone.source = file_source(base, weights)
    return backbone


def video_backbone_for(backbone) -> Sam2VideoBackbone:
    """The video backbone of an image backbone's weights: itself if it is one; else the same base loaded again
    with its video memory (Meta's .pt, or an HF sam2_video directory), checked to be the very same image model
    (its identity, adopted without hashing when it is the same file unchanged), on its device and precision."""
    if isinstance(backbone, VIDEO_BACKBONES):
        return backbone
    if backbone.family not in ("sam2", "sam3"):
        raise SamclError(f"{CANNOT_TRACK} (this base is {backbone.label})")
    if backbone.source is None:
        raise SamclError("this SAM 2 base was built in memory: load it with load_backbone(..., video=True) to track")
    video = load_backbone(backbone.source["base"], video=True)
    identity = backbone.identity()
    video.adopt_identity(identity, backbone.source)
    if video.identity() != identity:
        raise SamclError(f"{backbone.source['base']}: its video model is not the image model this set was made on")
    video.to(backbone.device)
    video.set_precision(backbone.precision)
    return video


def _from_directory(directory: Path, video: bool = False) -> FrozenBackbone:
    """SamBackbone or Sam2Backbone by config.json's model_type, reading config.json once."""
    try:
        config = read_json_file(directory / "config.json", CONFIG_LIMIT, "model config", "unreadable")
    except NoSuchFile:
        raise ValueError(f"{directory}: not a model directory (no config.json)") from None
    for name in ("model.safetensors", "model.safetensors.index.json", *(p.name for p in directory.glob("model-*"))):
        if os.path.lexists(directory / name):  # transformers would open a fifo and wait for ever
            check_regular(directory / name, "weights file")
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if video and model_type == "sam2":
        raise ValueError(f"{directory}: an HF-format SAM 2 image model has no video memory weights; give a "
                         "sam2_video directory or Meta's SAM 2 .pt checkpoint")
    if model_type in ("sam3", "sam3_video"):
        raise ValueError(f"{directory}: model_type {model_type!r} is SAM 3 with its detector; samcl takes SAM 3's "
                         "tracker alone: a sam3_tracker or sam3_tracker_video folder")
    if video and model_type == "sam3_tracker":
        raise ValueError(f"{directory}: an HF-format SAM 3 tracker image model has no video memory weights; give "
                         "a sam3_tracker_video directory")
    kinds = {"sam2": Sam2Backbone, "sam2_video": Sam2VideoBackbone, "sam3_tracker": Sam3Backbone,
             "sam3_tracker_video": Sam3VideoBackbone}
    return kinds.get(model_type, SamBackbone).from_config_dict(directory, config)


def _from_checkpoint(path: Path, video: bool = False) -> FrozenBackbone:
    """One read of a Meta checkpoint (torch.load(weights_only=True)), then SAM's or SAM 2's key mapping."""
    from .meta import read_checkpoint, sam_model_from_state_dict
    from .sam2_meta import is_sam2_state_dict, sam2_model_from_state_dict

    state_dict = read_checkpoint(path)
    if is_sam2_state_dict(state_dict) and video:
        from .sam2_video_meta import sam2_video_model_from_state_dict

        image_config, model = sam2_video_model_from_state_dict(state_dict, str(path))
        return Sam2VideoBackbone(model, image_config)
    if is_sam2_state_dict(state_dict):
        return Sam2Backbone(sam2_model_from_state_dict(state_dict, str(path)))
    return SamBackbone(sam_model_from_state_dict(state_dict, str(path)))


__all__ = ["FrozenBackbone", "SamBackbone", "Sam2Backbone", "Sam2VideoBackbone", "Sam3Backbone", "Sam3VideoBackbone",
           "load_backbone", "resolve_base",
           "is_hub_id", "hub_snapshot", "adaptable_blocks", "video_backbone_for", "BUILTIN_TINY_SAM", "BUILTIN_TINY_SAM2",
           "TINY_SAM2_DIR"]


def adaptable_blocks(hint, family: str) -> tuple[int, ...] | None:
    """The blocks a SAM base can adapt (`SamBackbone.site.blocks`: all but the first), read from the config of
    the base a store records (`hint`: the builtin or an HF folder) without loading it; None where that cannot
    be known so cheaply (a checkpoint file, SAM 2, a missing or unreadable folder)."""
    if family != "sam" or not isinstance(hint, str):
        return None
    folder = TINY_SAM_DIR if hint == BUILTIN_TINY_SAM else Path(hint)
    try:
        if not folder.is_dir():
            return None
        config = read_json_file(folder / "config.json", CONFIG_LIMIT, "model config", "unreadable")
        vision = config.get("vision_config") or {}
        count = vision.get("num_hidden_layers", SAM_DEFAULT_BLOCKS)
    except (SamclError, OSError, AttributeError):
        return None
    if config.get("model_type") != "sam" or not isinstance(count, int) or isinstance(count, bool) or count < 2:
        return None
    return tuple(range(1, count))


#: transformers' `SamVisionConfig` default (ViT-B), what a saved config without the field means.
SAM_DEFAULT_BLOCKS = 12
