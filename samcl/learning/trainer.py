"""Training one domain's AugModule on the frozen backbone (the paper's recipe).

Loss per sample: focal (alpha 0.8, gamma 2, per pixel, averaged) + 10 x dice + MSE(predicted IoU, actual IoU),
then averaged over the batch (the reference sums over the batch). Masks are compared in the model-input
frame (longest side resized, padded). Adam with a cosine schedule whose period is the whole run (stepped per
batch, T_max = total steps; the reference's per-batch stepping with T_max = epochs made the rate cycle).
Prompts (`TrainConfig.prompts`), drawn per (seed, epoch, sample), so any number of processes draws the same
prompt for the same sample: "reference", the paper's `points_per_image` positive points; "mix", SAM's kinds of
prompt per sample (1..points_per_image positive points; with 1-2 negative points near the object or anywhere
on the background; a jittered box; a box with points; no prompt at all), in the shares the `mix_*` fields set.
A batch's prompts go through the heat as the engine batches them (points padded with label -10, which paints
nothing) and through the decoder in groups of one shape, unpadded, as inference decodes each prompt alone.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.sample import Sample
from ..inference.prefix_cache import PrefixCache
from ..io import fault_point
from ..io.progress import bar
from ..method.augmodule import AugModule, AugModuleConfig, Injection
from ..backbone import tokens as batch_ops
from ..method.prompts import PROMPT_REGIMES, TrainingPrompt, mix_prompt, sample_points, sample_rng
from ..options import config, option

AMP_MODES = ("none", "bf16")


@config
class TrainConfig:
    """How one domain's AugModule is trained (the paper's recipe; see the module docstring for the loss).

    Arguments:
      epochs (int): passes over the training images.
      batch_size (int): samples per optimiser step and process.
      lr (float): Adam's learning rate, on a cosine schedule over the whole run.
      points_per_image (int): positive points drawn from each mask per epoch (the mix: 1 to this many).
      prompts (str): "mix" (SAM's kinds of prompt per sample) or "reference" (`points_per_image` positives).
      mix_negatives, mix_box, mix_box_points, mix_none (float): the mix's shares of positive + negative
        points, a box, a box + positive points, and no prompt; positive points alone take the rest.
      seed (int): seeds point sampling, sample order and the module's initialisation.
      focal_alpha, focal_gamma, dice_weight, iou_weight (float): the loss's terms.
      cache_bytes (int): memory for the training images' encoder prefix kept across epochs.
      progress (bool): a progress bar on a terminal.
      amp (str): "none", or "bf16" autocast of the adapted suffix and decoder (see `autocast`).

    Every field checks its range when the config is made (ValueError naming it); `samcl learn` reads its flags'
    help, defaults and ranges from these fields.
    """

    epochs: int = option(20, "passes over the training images", low=1, high=100_000, integer=True)
    batch_size: int = option(2, "samples per step and process (under torchrun the global batch is this x "
                                "processes)", low=1, high=4096, integer=True)
    lr: float = option(0.005, "Adam learning rate (cosine schedule over the whole run)", low=0)
    points_per_image: int = option(3, "positive points sampled per training image and epoch (with --prompts "
                                      "mix: 1 to this many)", low=1, high=64, integer=True)
    prompts: str = option("mix", "training prompts: mix = SAM's kinds per sample (positive points, with negative "
                                 "points, a jittered box, box + points, none), so the module serves clicks, boxes "
                                 "and prompt-free use; reference = the paper's positive points only",
                          choices=PROMPT_REGIMES)
    mix_negatives: float = option(0.25, "share of mix prompts with positive and negative points", low=0, high=1)
    mix_box: float = option(0.15, "share of mix prompts that are a jittered box", low=0, high=1)
    mix_box_points: float = option(0.1, "share of mix prompts that are a box with positive points", low=0, high=1)
    mix_none: float = option(0.2, "share of mix prompts with no prompt at all (zero heat)", low=0, high=1)
    seed: int = option(0, "seed for points, order and initialisation", low=0, high=2**32 - 1, integer=True)
    focal_alpha: float = option(0.8, "focal loss alpha", low=0, high=1)
    focal_gamma: float = option(2.0, "focal loss gamma", low=0)
    dice_weight: float = option(10.0, "weight of the dice loss", low=0)
    iou_weight: float = option(1.0, "weight of the predicted-IoU loss", low=0)
    cache_bytes: int = option(1 << 30, "memory for the training images' encoder prefix (and masks) kept across "
                                       "epochs; beyond it the prefix is recomputed every epoch (slower, same "
                                       "result); 0 = keep none", low=0, integer=True)
    progress: bool = option(True, "a progress bar on a terminal", choices=(True, False))
    amp: str = option("none", "mixed precision for training: bf16 autocast of the adapted encoder blocks and "
                              "decoder", choices=AMP_MODES)

    def __post_init__(self):
        shares = self.mix_negatives + self.mix_box + self.mix_box_points + self.mix_none
        if shares > 1 + 1e-9:
            raise ValueError(f"TrainConfig.mix_negatives + mix_box + mix_box_points + mix_none {shares:g}: "
                             "expected a sum of at most 1 (positive points alone take the rest)")

    @property
    def mix_weights(self) -> dict[str, float]:
        """The mix's probability of each kind (`prompts.MIX_KINDS`): positive points alone take the rest."""
        shares = {"negatives": self.mix_negatives, "box": self.mix_box, "box_points": self.mix_box_points,
                  "none": self.mix_none}
        return {"points": max(0.0, 1 - sum(shares.values())), **shares}

    def to_dict(self) -> dict:
        return asdict(self)


def autocast(device: torch.device, amp: str):
    """Mixed precision for the trainable part of a step: bf16 autocast when asked ("bf16"), on CUDA or CPU.

    Parameters, gradients and the Adam state stay float32 (bf16 has float32's range: no loss scaling), the
    loss is computed in float32, and the frozen prefix (so the selector's pooled features) is never autocast.
    """
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp == "bf16")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def segmentation_loss(logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor,
                      config: TrainConfig) -> torch.Tensor:
    """logits, target: B x S x S; iou_pred: B. Per-sample loss averaged over the batch."""
    prob = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    focal = (config.focal_alpha * (1 - p_t) ** config.focal_gamma * bce).flatten(1).mean(1)
    inter = (prob * target).flatten(1).sum(1)
    dice = 1 - (2 * inter + 1) / (prob.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)
    with torch.no_grad():
        hard = (logits > 0).float()
        inter_h = (hard * target).flatten(1).sum(1)
        union_h = ((hard + target) > 0).float().flatten(1).sum(1)
        actual_iou = torch.where(union_h > 0, inter_h / union_h.clamp(min=1), torch.ones_like(union_h))
    iou_loss = (iou_pred - actual_iou) ** 2
    return (focal + config.dice_weight * dice + config.iou_weight * iou_loss).mean()


class NonFiniteLoss(ValueError):
    """Training diverged (NaN or infinite loss or weights): the module is not kept; `field` is the config field to
    change."""

    code, field = "diverged", "TrainConfig.lr"

    def __init__(self, message: str):
        super().__init__(f"{message}: try a smaller learning rate (TrainConfig.lr)")


def batch_bounds(count: int, global_batch: int, world: int = 1) -> list[tuple[int, int]]:
    """(begin, end) of each step's slice of an epoch's order: every sample is used every epoch; a short last
    batch stays (merged into the previous one when it could not give every process a sample)."""
    bounds = [(b, min(b + global_batch, count)) for b in range(0, count, global_batch)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < world:
        bounds[-2:] = [(bounds[-2][0], count)]
    return bounds


def training_batch(cache: PrefixCache, samples: Sequence[Sample], batch: list[int]):
    """(prefix tokens B x ..., input-frame masks B x S x S, geometries, the prefixes) of samples `batch`."""
    prefixes = cache.lookup(batch, lambda i: (samples[i].image, samples[i].mask))
    return (cache.stack(prefixes), torch.stack([p.mask for p in prefixes]).float(), [p.geometry for p in prefixes],
            prefixes)


def usable_indices(samples: Sequence[Sample]) -> list[int]:
    """Indices of samples with a non-empty mask; empty ones are skipped with a warning."""
    keep = []
    for i, sample in enumerate(samples):
        if sample.mask.any():
            keep.append(i)
        else:
            warnings.warn(f"{sample.name}: empty mask (no foreground), skipped in training", stacklevel=2)
    if not keep:
        raise ValueError("no training sample has a non-empty mask")
    return keep


def train_step_points(samples: Sequence[Sample], indices: list[int], geometries: list, config: TrainConfig,
                      epoch: int) -> torch.Tensor:
    """B x points_per_image x 2 positive points in model-input pixels, drawn per (seed, epoch, sample): the
    reference regime's prompts."""
    points = [geometry.coords_to_input(sample_points(samples[i].mask, config.points_per_image,
                                                     sample_rng(config.seed, epoch, i)))
              for i, geometry in zip(indices, geometries)]
    return torch.stack(points)


@dataclass
class PromptBatch:
    """A training batch's prompts in model-input pixels, batched as the engine batches them for the heat.

    points: B x N x 2 or None; labels: B x N (1, 0; -10 pads a sample's shorter list and paints no heat) or
    None (all positive); boxes: B x 4 or None (a sample without a box has one far outside, painting nothing);
    shapes: each sample's (point count, has a box), by which the decoder takes the batch in groups, unpadded."""

    points: torch.Tensor | None
    labels: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    shapes: list[tuple[int, bool]] = field(default_factory=list)

    @classmethod
    def positive(cls, points: torch.Tensor) -> "PromptBatch":
        """B x N x 2 positive points, the same count for every sample (the reference regime)."""
        return cls(points, None, None, [(points.shape[1], False)] * points.shape[0])

    @classmethod
    def collate(cls, prompts: Sequence[TrainingPrompt], geometries: list) -> "PromptBatch":
        """Per-sample prompts (image pixels) -> one batch in model-input pixels."""
        count = max((len(p.points) for p in prompts if p.points is not None), default=0)
        points = torch.zeros(len(prompts), count, 2)
        labels = torch.full((len(prompts), count), -10, dtype=torch.long)
        boxes = torch.full((len(prompts), 4), -1e6)  # far outside: paints nothing
        shapes = []
        for j, (prompt, geometry) in enumerate(zip(prompts, geometries)):
            n = 0 if prompt.points is None else len(prompt.points)
            if n:
                points[j, :n] = geometry.coords_to_input(prompt.points)
                labels[j, :n] = torch.from_numpy(prompt.labels)
            if prompt.box is not None:
                boxes[j] = geometry.boxes_to_input(prompt.box)
            shapes.append((n, prompt.box is not None))
        return cls(points, labels, boxes if any(box for _, box in shapes) else None, shapes)

    def to(self, device: torch.device) -> "PromptBatch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return PromptBatch(move(self.points), move(self.labels), move(self.boxes), self.shapes)

    def heat(self, backbone) -> torch.Tensor:
        return backbone.heat(self.points, self.labels, self.boxes)

    def decode(self, backbone, embeddings) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits B x 1 x h x w and predicted IoU B x 1: samples of one prompt shape decoded together
        without padding (so each equals its own decoding, as at inference), back in batch order."""
        groups: dict[tuple[int, bool], list[int]] = {}
        for j, shape in enumerate(self.shapes):
            groups.setdefault(shape, []).append(j)
        if len(groups) == 1 and (not self.shapes[0][0] or self.shapes[0][0] == self.points.shape[1]):
            return self._decode(backbone, embeddings, None, *self.shapes[0])
        order, lows, ious = [], [], []
        for (n, has_box), members in groups.items():
            index = torch.tensor(members, device=self.points.device)
            picked = batch_ops.map_batch(lambda t, index=index: t[index], embeddings)
            low, iou = self._decode(backbone, picked, index, n, has_box)
            order += members
            lows.append(low)
            ious.append(iou)
        inverse = torch.argsort(torch.tensor(order, device=self.points.device))
        return torch.cat(lows)[inverse], torch.cat(ious)[inverse]

    def _decode(self, backbone, embeddings, index, n: int, has_box: bool):
        pick = (lambda t: t) if index is None else (lambda t: t[index])  # noqa: E731
        points = pick(self.points)[:, :n] if n else None
        labels = pick(self.labels)[:, :n] if n and self.labels is not None else None
        boxes = pick(self.boxes) if has_box else None
        if n and n == self.points.shape[1]:  # the whole tensors (the reference regime's call, unchanged)
            points = pick(self.points)
        return backbone.decode(embeddings, points, labels, boxes, multimask_output=False)


def train_step_prompts(samples: Sequence[Sample], indices: list[int], geometries: list, config: TrainConfig,
                       epoch: int) -> PromptBatch:
    """The batch's prompts in model-input pixels, drawn per (seed, epoch, sample) in `config.prompts`'s regime."""
    if config.prompts == "reference":
        return PromptBatch.positive(train_step_points(samples, indices, geometries, config, epoch))
    weights = config.mix_weights
    prompts = [mix_prompt(samples[i].mask, sample_rng(config.seed, epoch, i), weights, config.points_per_image)
               for i in indices]
    return PromptBatch.collate(prompts, geometries)


class Objective:
    """Hooks for continual baselines (`samcl.bench.baselines`: EWC, LwF, O-LoRA); SAMCL itself trains without one.

    `params` maps the trainable module's grouped parameters to the ones the forward uses (O-LoRA: the frozen
    earlier LoRAs concatenated with the new one); `penalty` adds a term to each batch's loss, given the
    batch's prefix tokens, points (model-input pixels) and low-res logits (B x 1 x h x w)."""

    def params(self, trainable: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return trainable

    def penalty(self, params: dict[str, torch.Tensor], tokens, points: torch.Tensor,
                low_res: torch.Tensor) -> torch.Tensor | float:
        return 0.0


def module_loss(backbone, module_params: dict, aug_config: AugModuleConfig, tokens: torch.Tensor,
                masks: torch.Tensor, points: torch.Tensor | PromptBatch, start_block: int, config: TrainConfig,
                objective: Objective | None = None) -> torch.Tensor:
    """Forward from cached prefix tokens to the loss (used by the single- and multi-process trainers).
    `points`: the batch's prompts (`train_step_prompts`), or B x N x 2 positive points."""
    prompts = points if isinstance(points, PromptBatch) else PromptBatch.positive(points)
    points = prompts.points
    with autocast(tokens.device, config.amp):
        heat = prompts.heat(backbone)
        embeddings = backbone.suffix(tokens, start_block, Injection(aug_config, module_params, heat))
        low_res, iou = prompts.decode(backbone, embeddings)
    size = backbone.image_size
    logits = F.interpolate(low_res.float(), (size, size), mode="bilinear", align_corners=False)[:, 0]
    loss = segmentation_loss(logits, iou[:, 0].float(), masks, config)
    if objective is not None:
        loss = loss + objective.penalty(module_params, tokens, points, low_res.float())
    return loss


def train_module(backbone, aug_config: AugModuleConfig, samples: Sequence[Sample], selector_block: int,
                 config: TrainConfig, device: torch.device | None = None, desc: str = "train",
                 shard: tuple[int, int] = (0, 1), wrap=None, init: AugModule | None = None,
                 objective: Objective | None = None) -> tuple[AugModule, dict, dict[int, torch.Tensor]]:
    """Train a fresh AugModule on `samples`. Returns the module (on CPU), stats (losses, seconds) and the
    pooled selector-block features of the samples this process ran through the prefix (index -> D).

    shard = (rank, world): this process takes every world-th sample of each global batch; `wrap` may wrap
    the module for gradient synchronisation (DistributedDataParallel, which averages gradients over ranks).
    Each rank's loss is its share of the global batch mean (scaled by local size x world / global size), so
    the averaged gradient is the one a single process computes on the whole global batch, also for a short
    last batch; the logged losses are these shares (their mean over ranks is the global loss). With one
    process both are no-ops.
    `init` continues training from an existing module's weights (the sequential fine-tuning baseline);
    `objective` adds a baseline's parameter mapping and penalty (`Objective`).
    """
    device = device or default_device()
    if selector_block >= min(aug_config.adapted_blocks):
        raise ValueError(f"selector block {selector_block} must come before the first adapted block "
                         f"{min(aug_config.adapted_blocks)}")
    backbone.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    module = AugModule(aug_config, generator=generator)
    if init is not None:
        module.load_state_tensors(init.state_tensors())
    module = module.to(device).requires_grad_(True)
    trainable = wrap(module) if wrap is not None else module
    indices = usable_indices(samples)
    rank, world = shard
    if len(indices) < world:
        raise ValueError(f"{len(indices)} usable training samples for {world} processes: each needs at least one")
    bounds = batch_bounds(len(indices), config.batch_size * world, world)
    steps_per_epoch = len(bounds)
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    cache = PrefixCache(backbone, selector_block, device, config.cache_bytes // world)
    pooled: dict[int, torch.Tensor] = {}  # the selector's pooled features: a by-product of the prefix
    losses, rates, start = [], [], time.perf_counter()
    steps = bar(total=total, desc=desc, progress=config.progress and rank == 0, leave=False)
    fault_point(f"train: {desc} started")  # (a no-op unless a kill test asks: bars are off when not a terminal)
    for epoch in range(config.epochs):
        order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
        for begin, end in bounds:
            chunk = order[begin:end]
            batch = [indices[int(j)] for j in chunk[rank::world]]
            tokens, masks, geometries, prefixes = training_batch(cache, samples, batch)
            pooled.update((i, p.pooled) for i, p in zip(batch, prefixes))
            points = train_step_prompts(samples, batch, geometries, config, epoch).to(device)
            params = trainable()  # through the wrapper, so DDP sees the forward
            if objective is not None:
                params = objective.params(params)
            loss = module_loss(backbone, params, aug_config, tokens, masks, points, selector_block + 1, config,
                               objective)
            loss = loss * (len(batch) * world / len(chunk))  # exactly 1 with one process
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if not torch.isfinite(loss.detach()):  # before the step: the module keeps its last finite weights
                raise NonFiniteLoss(f"the loss became {loss.item()} at epoch {epoch + 1}, step {len(losses) + 1} "
                                    f"(learning rate {schedule.get_last_lr()[0]:g}); nothing was saved")
            optimizer.step()
            rates.append(schedule.get_last_lr()[0])
            schedule.step()
            losses.append(loss.item())
            steps.update()
            steps.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    steps.close()
    module = module.cpu().requires_grad_(False)
    if not all(torch.isfinite(t).all() for t in module.state_tensors().values()):
        raise NonFiniteLoss("training produced non-finite module weights; nothing was saved")
    stats = {"loss_first": losses[0], "loss_last": float(np.mean(losses[-max(1, steps_per_epoch):])),
                    "steps": total, "lr": rates, "seconds": time.perf_counter() - start, "samples": len(indices)}
    return module, stats, pooled
