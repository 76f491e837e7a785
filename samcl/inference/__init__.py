"""Inference: the one data path every front end takes (`Engine.prepare`, then `Engine.run`), the one prefix cache,
the SamPredictor-style front end, and which precision this machine runs best.

    prepared = engine.prepare([image])                                    # prefix + pooled features, cached
    [prediction] = engine.run(prepared, [Prompt.of(points=[[120, 80]])])  # route, heat, suffix, decode

`engine` (routing, mixed-domain batches, decoding), `automatic` (automatic masks: Meta's generator on the routed
module, its steps in `amg`), `prefix_cache` (least recently used out within a byte budget), `predictor` (Meta's
SamPredictor interface), `refine` (which clicks heat the encoder; no torch), `precision` (names and what `auto`
picks; no torch), `video` (objects tracked through a video on SAM 2's memory). Public names
load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

_WHERE = {
    "Engine": ".engine", "InputPrompt": ".engine",
    "ByObject": ".prefix_cache", "PreparedImage": ".prefix_cache", "PrefixCache": ".prefix_cache",
    "SamclPredictor": ".predictor",
    "AutoMaskConfig": ".automatic", "GeneratedMasks": ".automatic", "coco_results": ".automatic",
    "generate_images": ".automatic", "generate_masks": ".automatic", "label_image": ".automatic",
    "precision": ".precision",
    "DEFAULT_REFINE": ".refine", "REFINE": ".refine", "heat_prompt": ".refine",
    "TrackedFrame": ".video", "TrackedObject": ".video", "VideoTracker": ".video",
}
__all__ = ["AutoMaskConfig", "ByObject", "DEFAULT_REFINE", "Engine", "GeneratedMasks", "InputPrompt", "PrefixCache",
           "PreparedImage", "REFINE", "SamclPredictor", "TrackedFrame", "TrackedObject", "VideoTracker",
           "coco_results", "generate_images", "generate_masks", "heat_prompt", "label_image", "precision"]
__getattr__, __dir__ = lazy_names(__name__, _WHERE)

if TYPE_CHECKING:
    from . import precision
    from .automatic import AutoMaskConfig, GeneratedMasks, coco_results, generate_images, generate_masks, label_image
    from .engine import Engine, InputPrompt
    from .predictor import SamclPredictor
    from .prefix_cache import ByObject, PrefixCache, PreparedImage
    from .refine import DEFAULT_REFINE, REFINE, heat_prompt
    from .video import TrackedFrame, TrackedObject, VideoTracker
