"""Interactive segmentation scored by clicks, as the field scores it (RITM, SimpleClick, the SAM paper's
interactive evaluation).

    ious = click_ious(predictor, sample, max_clicks=20)          # IoU after click 1, 2, ..., 20
    scores = summarize_clicks([ious, ...], max_clicks=20)               # mIoU@1,3,5,10, NoC@85, NoC@90

The simulated clicker is RITM's (isegm/inference/clicker.py, `Clicker._get_next_click`): the false-negative and
false-positive regions of the current mask are padded by one pixel of background, their Euclidean distance
transforms taken (scipy's `distance_transform_edt`, the exact transform OpenCV's DIST_L2 with mask size 0 gives),
the padding cropped, points already clicked set to zero; the next click is at the first (row-major) pixel of the
largest distance, positive in the missed region when its largest distance exceeds the false region's, else
negative. The first click, on an empty mask, is the object's innermost pixel.

As SAM is evaluated: the first click takes the multimask output with the highest predicted IoU, later clicks the
single output, and each click gets the previous click's low-res logits as `mask_input` (`feedback`). Masks are
the logits > 0 at the original size. NoC@t (RITM's `compute_noc_metric`): the first click count whose IoU reaches
t, or `max_clicks` when none does.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt

from ..io import bar
from ..metrics import mask_scores

#: The clicks at which mIoU is reported, and the NoC thresholds.
MIOU_AT = (1, 3, 5, 10)
NOC_AT = (0.85, 0.90)


def next_click(truth: np.ndarray, mask: np.ndarray, clicked: np.ndarray) -> tuple[float, float, int]:
    """RITM's next click: (x, y, label) with label 1 in the larger missed region, 0 in the larger false one.

    Arguments:
      truth: H x W bool ground truth.
      mask: H x W bool current prediction.
      clicked: H x W bool, pixels already clicked (never clicked twice).
    """
    missed = np.pad(truth & ~mask, 1)
    false = np.pad(~truth & mask, 1)
    missed_far = distance_transform_edt(missed)[1:-1, 1:-1] * ~clicked
    false_far = distance_transform_edt(false)[1:-1, 1:-1] * ~clicked
    positive = missed_far.max() > false_far.max()
    far = missed_far if positive else false_far
    rows, cols = np.where(far == far.max())
    return float(cols[0]), float(rows[0]), int(positive)


def click_ious(predictor, truth: np.ndarray, *, max_clicks: int = 20, feedback: bool = True,
               refine: str | None = None) -> np.ndarray:
    """Simulated clicks on the predictor's current image (`SamclPredictor.set_image` done) -> IoU after each.

    Arguments:
      predictor: a `SamclPredictor` with the image set (and its module chosen or forced).
      truth: H x W bool ground truth.
      max_clicks: how many clicks.
      feedback: each click gets the previous low-res logits as `mask_input` (SAM's protocol).
      refine: the refinement strategy (None: the predictor's).

    Returns:
      (np.ndarray): max_clicks IoU values.
    """
    truth = np.asarray(truth, bool)
    mask = np.zeros_like(truth)
    clicked = np.zeros_like(truth)
    points, labels, ious, previous = [], [], [], None
    for k in range(max_clicks):
        x, y, label = next_click(truth, mask, clicked)
        clicked[int(y), int(x)] = True
        points.append((x, y))
        labels.append(label)
        masks, scores, low_res = predictor.predict(np.array(points, np.float32), np.array(labels),
                                                   mask_input=previous if feedback else None,
                                                   multimask_output=k == 0, refine=refine)
        best = int(np.argmax(scores))
        mask, previous = masks[best], low_res[best:best + 1]
        ious.append(mask_scores(mask, truth)["iou"])
    return np.array(ious)


def noc(ious: np.ndarray, threshold: float, max_clicks: int) -> int:
    """Clicks to reach `threshold` IoU (RITM's `_get_noc`): max_clicks when never reached."""
    reached = np.asarray(ious)[:max_clicks] >= threshold
    return int(np.argmax(reached)) + 1 if reached.any() else max_clicks


def summarize_clicks(runs: Sequence[np.ndarray], max_clicks: int) -> dict:
    """Per-image IoU curves -> mIoU@k (k <= max_clicks), NoC@85/90 (mean) and how many images never reached
    each threshold."""
    curves = np.stack([np.asarray(r)[:max_clicks] for r in runs])
    out = {f"miou@{k}": float(curves[:, k - 1].mean()) for k in MIOU_AT if k <= max_clicks}
    for threshold in NOC_AT:
        tag = f"{round(threshold * 100)}"
        counts = [noc(r, threshold, max_clicks) for r in curves]
        out[f"noc@{tag}"] = float(np.mean(counts))
        out[f"over@{tag}"] = int(sum(not (r >= threshold).any() for r in curves))
    out["images"] = len(runs)
    return out


def evaluate_clicks(samcl, samples: Sequence, *, force: str | None = None, max_clicks: int = 20,
                    feedback: bool = True, refine: str | None = None, progress: bool = False,
                    desc: str = "clicks") -> dict:
    """`summarize_clicks` of the simulated clicks on every sample (each with `.image`, `.mask`), through the set's
    predictor, with `force` (a domain, "base", or None: the selector's pick per image); `suffix_per_click`: the
    share of clicks that ran the encoder's blocks after the selector block (the base model's unprompted image
    embedding, computed once per image, counts once)."""
    predictor = samcl.predictor() if refine is None else samcl.predictor(refine=refine)
    runs = []
    backbone = samcl.engine.backbone
    suffix, counted, own = backbone.suffix, [0], "suffix" in vars(backbone)

    def counting(*args, **kwargs):  # how many clicks re-ran the encoder's suffix: the strategy's cost
        counted[0] += 1
        return suffix(*args, **kwargs)

    backbone.suffix = counting
    try:
        for sample in bar(samples, desc=desc, progress=progress, leave=False):
            predictor.set_image(sample.image, force=force)
            runs.append(click_ious(predictor, sample.mask, max_clicks=max_clicks, feedback=feedback))
    finally:
        if own:
            backbone.suffix = suffix
        else:
            del backbone.suffix  # the class's method again
    out = summarize_clicks(runs, max_clicks)
    out["suffix_per_click"] = counted[0] / max(len(runs) * max_clicks, 1)
    return out
