"""Prompts: seeded point sampling from masks, and the heatmap a prompt paints on the token grid.

Heat convention (how every prompt type reaches the AugModule): on the encoder's token grid,

    heat = max(positive points, boxes) - max(negative points)         (values in [-1, 1])

A point contributes a Gaussian bump exp(-d^2 / 2 sigma^2) centred on its own location, truncated to a
`kernel_size` x `kernel_size` square (reference: 9 x 9 cells, sigma 1.7 cells at 64 x 64). A box
contributes 1 inside the box and the same Gaussian fall-off with the distance to the box outside it.
Negative points subtract. No prompt at all is an all-zero heatmap. Coordinates are (x, y) in model-input
pixels; token (row j, column i) covers pixels [i p, (i + 1) p) x [j p, (j + 1) p) and is evaluated at its
centre, so the heat lies on exactly the tokens at the prompt's location (no transposition).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class HeatConfig:
    """Heatmap rendering in token-grid cells; `grid` is the grid size these values were chosen for."""

    sigma: float = 1.7
    kernel_size: int = 9
    grid: int | None = None

    def scaled_to(self, rows: int) -> "HeatConfig":
        """The same kernel relative to the image, on a grid of `rows` cells (sigma >= 0.5, kernel >= 3)."""
        if self.grid is None:
            return self
        scale = rows / self.grid
        kernel = max(2 * round(self.kernel_size * scale / 2) + 1, 3)
        return HeatConfig(sigma=max(self.sigma * scale, 0.5), kernel_size=kernel, grid=rows)


def sample_points(mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` (x, y) pixel coordinates drawn uniformly from the mask's foreground (with replacement if small).

    mask: H x W bool. Returns count x 2 float32. Raises ValueError for an empty mask.
    """
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("cannot sample points from an empty mask")
    picks = rng.choice(len(xs), size=count, replace=len(xs) < count)
    return np.stack([xs[picks], ys[picks]], axis=1).astype(np.float32)


def sample_rng(seed: int, *keys: int) -> np.random.Generator:
    """Independent seeded stream per (seed, epoch, sample index...): same draws on any number of processes."""
    return np.random.default_rng([int(seed), *[int(k) for k in keys]])


#: Training prompt regimes (`TrainConfig.prompts`): the reference's positive points, or SAM's per-sample mix.
PROMPT_REGIMES = ("reference", "mix")
#: The mix's kinds of prompt: positive points only, positive and negative points, a box, a box with positive
#: points, no prompt at all.
MIX_KINDS = ("points", "negatives", "box", "box_points", "none")
MAX_NEGATIVES = 2  # negative points of a "negatives" prompt: 1 or 2
NEAR_BAND = 0.2  # "near" background: within this fraction of sqrt(mask area) of the mask (at least 3 pixels)
BOX_NOISE, BOX_NOISE_MAX = 0.1, 20.0  # SAM's box jitter: std 10 % of the box side, at most 20 pixels


@dataclass(frozen=True)
class TrainingPrompt:
    """One sample's prompt in its image's pixels: points N x 2 float32 (x, y) and labels N int64 (1 positive,
    0 negative), or None; box (x0, y0, x1, y1) float32 or None. `kind` is one of `MIX_KINDS`."""

    kind: str
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None


def band_width(mask: np.ndarray) -> int:
    """The width in pixels of the "near" background around a mask: `NEAR_BAND` x sqrt(area), at least 3."""
    return max(3, int(round(NEAR_BAND * np.sqrt(mask.sum()))))


def dilate(mask: np.ndarray, width: int) -> np.ndarray:
    """H x W bool: the mask grown by `width` pixels (chessboard distance), as two separable max-pools."""
    grown = torch.from_numpy(np.ascontiguousarray(mask)).float()[None, None]
    grown = F.max_pool2d(grown, (1, 2 * width + 1), stride=1, padding=(0, width))
    grown = F.max_pool2d(grown, (2 * width + 1, 1), stride=1, padding=(width, 0))
    return grown[0, 0].numpy().astype(bool)


def near_band(mask: np.ndarray) -> np.ndarray:
    """H x W bool: the background within `band_width` pixels of the mask."""
    return dilate(mask, band_width(mask)) & ~mask


def sample_negatives(mask: np.ndarray, count: int, rng: np.random.Generator, *, near: bool) -> np.ndarray:
    """`count` (x, y) background points: in the band around the mask (`near_band`) or anywhere outside it.
    An image with no such background gives what there is (none: an empty 0 x 2 array)."""
    region = near_band(mask) if near else ~mask
    if not region.any():
        region = ~mask
    if not region.any():
        return np.zeros((0, 2), np.float32)
    return sample_points(region, count, rng)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """The mask's tight box (x0, y0, x1, y1), inclusive pixel coordinates as Meta's `batched_mask_to_box`."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def jitter_box(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mask's box with SAM's training noise: each coordinate moves by a normal draw of std 10 % of the
    box's side along its axis, clipped to 20 pixels, then the box is kept inside the image (and ordered)."""
    box = mask_box(mask)
    sides = np.array([box[2] - box[0], box[3] - box[1]] * 2, np.float64) + 1
    noise = np.clip(rng.normal(0.0, BOX_NOISE * sides), -BOX_NOISE_MAX, BOX_NOISE_MAX)
    h, w = mask.shape
    x0, y0, x1, y1 = np.clip(box + noise, 0, [w - 1, h - 1, w - 1, h - 1])
    return np.array([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], np.float32)


def draw_mix_kind(weights: dict[str, float], rng: np.random.Generator) -> str:
    """One of `MIX_KINDS` with probability weights[kind] (the weights sum to 1)."""
    probs = np.array([weights[k] for k in MIX_KINDS], np.float64)
    return MIX_KINDS[int(rng.choice(len(MIX_KINDS), p=probs / probs.sum()))]


def mix_prompt(mask: np.ndarray, rng: np.random.Generator, weights: dict[str, float],
               max_points: int) -> TrainingPrompt:
    """A SAM-style training prompt for a non-empty mask: its kind drawn with `weights` (`draw_mix_kind`), then
    1..max_points positive points; 1..MAX_NEGATIVES negative points, each near the object (`near_band`) or
    anywhere on the background, half and half; a jittered box (`jitter_box`)."""
    kind = draw_mix_kind(weights, rng)
    if kind == "none":
        return TrainingPrompt(kind)
    box = jitter_box(mask, rng) if kind in ("box", "box_points") else None
    if kind == "box":
        return TrainingPrompt(kind, box=box)
    points = sample_points(mask, int(rng.integers(1, max_points + 1)), rng)
    labels = np.ones(len(points), np.int64)
    if kind == "negatives":
        negatives = [sample_negatives(mask, 1, rng, near=bool(rng.random() < 0.5))
                     for _ in range(int(rng.integers(1, MAX_NEGATIVES + 1)))]
        negatives = np.concatenate(negatives)
        points = np.concatenate([points, negatives])
        labels = np.concatenate([labels, np.zeros(len(negatives), np.int64)])
    return TrainingPrompt(kind, points, labels, box)


def render_heat(points: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None,
                grid: tuple[int, int], patch: float, config: HeatConfig = HeatConfig()) -> torch.Tensor:
    """Heat on the token grid for a batch.

    points: B x N x 2 (x, y) model-input pixels or None; labels: B x N (1 positive, 0 negative, other values
    such as -10 padding are ignored) or None (all positive); boxes: B x 4 (x0, y0, x1, y1) or None.
    grid: (rows, cols) of tokens; patch: pixels per token. Returns B x rows x cols float32.
    """
    batch = next((t.shape[0] for t in (points, boxes) if t is not None), 1)
    device = next((t.device for t in (points, boxes) if t is not None), torch.device("cpu"))
    rows, cols = grid
    cy = torch.arange(rows, device=device, dtype=torch.float32) + 0.5
    cx = torch.arange(cols, device=device, dtype=torch.float32) + 0.5
    radius = config.kernel_size // 2
    positive = torch.zeros(batch, rows, cols, device=device)
    negative = torch.zeros(batch, rows, cols, device=device)

    def bump(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
        # dx: B x N x 1 x cols, dy: B x N x rows x 1, in cells; square truncation like a k x k kernel
        value = torch.exp(-(dx**2 + dy**2) / (2 * config.sigma**2))
        inside = (dx.abs() <= radius + 0.5) & (dy.abs() <= radius + 0.5)
        return value * inside

    if points is not None and points.shape[1] > 0:
        pts = points.to(device=device, dtype=torch.float32) / patch  # cells
        if labels is None:
            labels = torch.ones(pts.shape[:2], device=device)
        labels = labels.to(device)
        dx = (cx.view(1, 1, 1, cols) - pts[..., 0, None, None])
        dy = (cy.view(1, 1, rows, 1) - pts[..., 1, None, None])
        bumps = bump(dx, dy)  # B x N x rows x cols
        pos = (labels == 1).float().view(*labels.shape, 1, 1)
        neg = (labels == 0).float().view(*labels.shape, 1, 1)
        positive = torch.maximum(positive, (bumps * pos).amax(dim=1))
        negative = torch.maximum(negative, (bumps * neg).amax(dim=1))
    if boxes is not None:
        b = boxes.to(device=device, dtype=torch.float32).view(-1, 4) / patch
        dx = torch.clamp(torch.maximum(b[:, 0, None] - cx, cx - b[:, 2, None]), min=0).view(-1, 1, cols)
        dy = torch.clamp(torch.maximum(b[:, 1, None] - cy, cy - b[:, 3, None]), min=0).view(-1, rows, 1)
        positive = torch.maximum(positive, bump(dx, dy))
    return positive - negative


#: OpenCV's `getGaussianKernel(9, 0)`: for this size and sigma 0 OpenCV uses a fixed table (sum 256/256),
#: not the Gaussian of its formula sigma = 0.3 * ((9 - 1) / 2 - 1) + 0.8 = 1.7 (peak 14.008 after x 255,
#: against 14.25 for the formula). The authors' heat went through `cv2.GaussianBlur(heat, (9, 9), 0)`.
OPENCV_KERNEL_9 = (4 / 256, 13 / 256, 30 / 256, 51 / 256, 60 / 256, 51 / 256, 30 / 256, 13 / 256, 4 / 256)


def render_reference_heat(points: torch.Tensor | None, labels: torch.Tensor | None, grid: tuple[int, int],
                          stride: float) -> torch.Tensor:
    """The authors' heat, for modules imported from their code only (`samcl.reference`), on the token grid
    (B x rows x cols, row = y, so that it lies on the tokens at the points; `augmodule.Injection` places it as
    their code does, transposed at the neck).

    Their rendering: a grid array with 1 added at [int(x / stride)][int(y / stride)] per point (x, y in
    model-input pixels of the image stretched to a square; clamped to the grid here, where their code would
    fail), blurred with OpenCV's 9 x 9 Gaussian (sigma 0: `OPENCV_KERNEL_9`, borders reflected as OpenCV's
    BORDER_REFLECT_101), times 255. Labels are ignored (a negative point adds heat as a positive one does),
    except the padding label -10 of a batch; boxes never reach it. points: B x N x 2 or None; labels: B x N."""
    rows, cols = grid
    batch = 1 if points is None else points.shape[0]
    device = torch.device("cpu") if points is None else points.device
    impulses = torch.zeros(batch, rows * cols, dtype=torch.float64, device=device)
    if points is not None and points.shape[1] > 0:
        cells = torch.floor(points.to(torch.float64) / stride).long()
        x = cells[..., 0].clamp(0, cols - 1)
        y = cells[..., 1].clamp(0, rows - 1)
        real = torch.ones_like(x, dtype=torch.float64) if labels is None else (labels.to(device) != -10).double()
        impulses.scatter_add_(1, y * cols + x, real)  # row = y here; their array's row is x (transposed)
    kernel = torch.tensor(OPENCV_KERNEL_9, dtype=torch.float64, device=device)
    radius = len(OPENCV_KERNEL_9) // 2
    image = impulses.view(batch, 1, rows, cols)
    image = F.pad(image, (radius, radius, radius, radius), mode="reflect")  # reflect = OpenCV's REFLECT_101
    image = F.conv2d(image, kernel.view(1, 1, 1, -1))
    image = F.conv2d(image, kernel.view(1, 1, -1, 1))
    return (image[:, 0] * 255).float()
