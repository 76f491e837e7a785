"""Automatic masks as the server's tool front ends ask for them (Label Studio pre-annotation, the CVAT detector):
the generator options a request may give, and the best masks of a result.

    config = generator_config({"pred_iou_thresh": 0.7})          # AutoMaskConfig; ApiError 400 on a bad option
    job, width, height = await generate(serving, data, config, force, ticket)   # image file bytes, the batcher
    for record, mask in best_masks(job.prediction.records, 20):  # highest predicted IoU first, decoded one by one
        ...

Masks stay COCO RLE in the generator's records (`output_mode` "coco_rle", what Meta's generator keeps between
its steps), so a result holds kilobytes per mask however many the grid found; only the masks answered are decoded,
one at a time. The limits and the decoding batch's memory are /v1/generate's (`api.GENERATE_LIMITS`,
`api.fit_batch`), and the job runs through the batcher like its jobs.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Iterator

import numpy as np

from .api import GENERATE_LIMITS, fit_batch
from .budget import Ticket
from .context import Loaded, Serving
from ..io import quote
from .errors import ApiError


def generator_config(options=None, *, field: str = "options", code: str = "bad_options"):
    """An `AutoMaskConfig`: Meta's defaults with `options` (a JSON object of its field names) over them, masks
    kept as COCO RLE. ApiError 400 with `code`, naming `field` and the bad option."""
    from ..inference import AutoMaskConfig

    options = {} if options is None else options
    if not isinstance(options, dict):
        raise ApiError(400, code, f"{field}: give a JSON object of automatic-mask options (AutoMaskConfig's names)")
    known = sorted(f.name for f in fields(AutoMaskConfig) if f.name != "output_mode")
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ApiError(400, code, f"{field}: unknown option {quote(unknown[0])} (known: {', '.join(known)})")
    for name, top in GENERATE_LIMITS.items():
        value = options.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > top:
            raise ApiError(400, code, f"{field}.{name} {value!r}: at most {top} on a server")
    try:
        return AutoMaskConfig(**{**options, "output_mode": "coco_rle"})
    except (TypeError, ValueError) as exc:
        text = str(exc)  # a field's refusal names it as AutoMaskConfig.NAME: here it is the request's field.NAME
        named = text.startswith("AutoMaskConfig.")
        raise ApiError(400, code, f"{field}.{text.removeprefix('AutoMaskConfig.')}" if named else f"{field}: {text}") \
            from None


async def generate(serving: Serving, data: bytes, config, force: str | None, ticket: Ticket):
    """Automatic masks of an image file's bytes through the batcher (its prefix cached like an upload's; decoded
    pixels too when crop layers need them), the decoding batch's memory charged to `ticket`: (the finished job,
    whose `prediction` is the `GeneratedMasks`; width; height)."""
    loaded = await serving.load(data, ticket)
    if config.crop_n_layers and loaded.image is None:  # cached, but the crops are encoded anew from the pixels
        loaded = Loaded(loaded.key, loaded.entry, await serving.decode(data, ticket), loaded.width, loaded.height)
    config = fit_batch(config, loaded.height, loaded.width, ticket)
    return await serving.generate(loaded, config, force), loaded.width, loaded.height


def best_masks(records: list[dict], limit: int, threshold: float = 0.0) -> Iterator[tuple[dict, np.ndarray]]:
    """The `limit` records of highest predicted IoU (at least `threshold`), each with its H x W bool mask."""
    from ..io import rle_to_mask

    kept = sorted((r for r in records if float(r["predicted_iou"]) >= threshold),
                  key=lambda r: -float(r["predicted_iou"]))[:limit]
    for record in kept:
        segmentation = record["segmentation"]
        mask = segmentation if isinstance(segmentation, np.ndarray) else rle_to_mask(segmentation)
        yield record, np.asarray(mask, dtype=bool)
