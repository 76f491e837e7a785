"""Scores. Per image, at threshold 0.5 on sigmoid(logits) (i.e. logits > 0), against the binary ground truth:

- IoU = |P & G| / |P | G|, F1 (Dice) = 2 |P & G| / (|P| + |G|), MAE = mean |P - G| over pixels (binary P).
  These match torchmetrics' binary JaccardIndex / F1Score per image. When prediction and ground truth are
  both empty, IoU and F1 are 1 (a correct "nothing here"); when only one is empty they are 0.
- Continual metrics from a[t][i] (score on domain i after learning step t, t and i 0-based):
  AA_t = mean_{i<=t} a[t][i]; FM (reference) = sum_{i<t} (a[i][i] - a[t][i]) / (t + 1);
  FM (best earlier score) = mean_{i<t} (max_{i<=s<t} a[s][i] - a[t][i]) (Chaudhry et al.: the best score since
  domain i was learned; a score before learning it is transfer, not something to forget); FT = mean_{i>=1} a[i-1][i].
"""

from __future__ import annotations

import numpy as np

__all__ = ["continual_metrics", "mask_scores", "mean_scores"]


def mask_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """pred, target: H x W bool -> {"iou", "f1", "mae"}."""
    pred = pred.astype(bool)
    target = target.astype(bool)
    inter = np.logical_and(pred, target).sum()
    union = np.logical_or(pred, target).sum()
    total = pred.sum() + target.sum()
    return {
        "iou": 1.0 if union == 0 else float(inter / union),
        "f1": 1.0 if total == 0 else float(2 * inter / total),
        "mae": float(np.mean(pred != target)),
    }


def mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    if not scores:
        return {}
    return {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}


def continual_metrics(matrix: list[list[float]]) -> dict[str, float]:
    """matrix[t][i]: score on domain i after step t (square, T x T). Returns AA, FM (both) and FT at the end."""
    a = np.asarray(matrix, dtype=float)
    t = a.shape[0] - 1
    aa = float(a[t, : t + 1].mean())
    if t == 0:
        return {"AA": aa, "FM_reference": 0.0, "FM_best": 0.0, "FT": float("nan")}
    fm_ref = float(sum(a[i, i] - a[t, i] for i in range(t)) / (t + 1))
    fm_best = float(np.mean([a[i:t, i].max() - a[t, i] for i in range(t)]))
    ft = float(np.mean([a[i - 1, i] for i in range(1, a.shape[1])]))
    return {"AA": aa, "FM_reference": fm_ref, "FM_best": fm_best, "FT": ft}
