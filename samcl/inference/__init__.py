"""Inference: the one data path every front end takes (`Engine.prepare`, then `Engine.run`), the one prefix cache,
the SamPredictor-style front end, and which precision this machine runs best.

    prepared = engine.prepare([image])                                    # prefix + pooled features, cached
    [prediction] = engine.run(prepared, [Prompt.of(points=[[120, 80]])])  # route, heat, suffix, decode

`engine` (routing, mixed-domain batches, decoding), `prefix_cache` (least recently used out within a byte
budget), `predictor` (Meta's SamPredictor interface), `refine` (which clicks heat the encoder; no torch),
`precision` (names and what `auto` picks; no torch). Public names
load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

_WHERE = {
    "Engine": ".engine", "InputPrompt": ".engine",
    "ByObject": ".prefix_cache", "PreparedImage": ".prefix_cache", "PrefixCache": ".prefix_cache",
    "SamclPredictor": ".predictor",
    "precision": ".precision",
    "DEFAULT_REFINE": ".refine", "REFINE": ".refine", "heat_prompt": ".refine",
}
__all__ = ["ByObject", "DEFAULT_REFINE", "Engine", "InputPrompt", "PrefixCache", "PreparedImage", "REFINE",
           "SamclPredictor", "heat_prompt", "precision"]
__getattr__, __dir__ = lazy_names(__name__, _WHERE)

if TYPE_CHECKING:
    from . import precision
    from .engine import Engine, InputPrompt
    from .predictor import SamclPredictor
    from .prefix_cache import ByObject, PrefixCache, PreparedImage
    from .refine import DEFAULT_REFINE, REFINE, heat_prompt
