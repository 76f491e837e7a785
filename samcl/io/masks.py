"""Masks as COCO run-length encodings, through pycocotools (the COCO API's own codec), for every front end.

    rle = coco_rle(mask)                 # {"size": [h, w], "counts": "..."}: compressed, counts as a str (JSON)
    mask = rle_to_mask(rle)              # its inverse; also takes bytes counts or uncompressed (list) counts
    rle_area(rle), rle_bbox(rle)         # pixels in the mask, [x, y, w, h] (pycocotools area / toBbox)
    uncompressed_rle(mask)               # {"size": [h, w], "counts": [runs]}: Meta's `uncompressed_rle` output

Run lengths go over the mask in column-major order and start with the (possibly empty) run of zeros, as COCO
(`maskApi.c`) and Meta's automatic mask generator count them.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["coco_rle", "coco_rles", "rle_area", "rle_bbox", "rle_to_mask", "run_lengths", "uncompressed_rle"]


def run_lengths(mask: np.ndarray) -> list[int]:
    """Column-major runs, starting with the (possibly empty) run of zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    return runs


def uncompressed_rle(mask: np.ndarray) -> dict:
    """A H x W bool mask as COCO's uncompressed RLE: {"size": [h, w], "counts": [int, ...]}."""
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": run_lengths(mask)}


def _text(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]], "counts": counts.decode("ascii") if isinstance(counts, bytes)
            else counts}


def coco_rle(mask: np.ndarray) -> dict:
    """A H x W bool mask as COCO's compressed RLE, {"size": [h, w], "counts": str} (`pycocotools.mask.encode`)."""
    from pycocotools import mask as coco

    return _text(coco.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8))))


def coco_rles(masks: np.ndarray) -> list[dict]:
    """N x H x W bool masks -> N compressed RLEs in one pycocotools call."""
    from pycocotools import mask as coco

    if len(masks) == 0:
        return []
    stacked = np.asfortranarray(np.asarray(masks, dtype=np.uint8).transpose(1, 2, 0))
    return [_text(rle) for rle in coco.encode(stacked)]


def _coco_form(rle: dict) -> dict:
    """What pycocotools' functions take: compressed counts as bytes (uncompressed counts compressed first)."""
    from pycocotools import mask as coco

    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        return coco.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def rle_to_mask(rle: dict) -> np.ndarray:
    """A COCO RLE (compressed counts as str or bytes, or uncompressed counts) -> H x W bool mask."""
    from pycocotools import mask as coco

    with warnings.catch_warnings():  # its Cython array's __array__ predates numpy 2's copy keyword (harmless)
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco.decode(_coco_form(rle)).astype(bool)


def rle_area(rle: dict) -> int:
    """Pixels inside the mask (`pycocotools.mask.area`)."""
    from pycocotools import mask as coco

    return int(coco.area(_coco_form(rle)))


def rle_bbox(rle: dict) -> list[float]:
    """The mask's box [x, y, w, h] in pixels (`pycocotools.mask.toBbox`; [0, 0, 0, 0] for an empty mask)."""
    from pycocotools import mask as coco

    return [float(v) for v in coco.toBbox(_coco_form(rle))]
