"""Pretrain the tiny SAM shipped in samcl/assets/tiny-sam on the synthetic *general* domain only.

No pretrained SAM can be downloaded where this project is developed and tested, so it ships its own:
a small `transformers.SamModel` (128 px input, 16 x 16 embedding grid) trained SAM-style on the
synthetic general domain (`samcl.data.synthetic`). Its zero-shot scores on the target domains are
clearly below its general-domain score: the gap SAMCL's modules are there to close.

Training follows SAM's recipe at toy scale: per image several objects are prompted at once (point
batch), each with 1-3 positive points sampled from its mask, sometimes a negative point near it,
sometimes a jittered box; loss = 20 x focal + dice on the masks upsampled to the input size (minimum over
the 3 multimask outputs, plus the single-mask output) + MSE between predicted and actual IoU.

    python scripts/pretrain_tiny_sam.py --steps 4000 --out samcl/assets/tiny-sam
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

from samcl.backbone.preprocess import ResizeGeometry, mask_to_input, normalize_and_pad, resize_longest
from samcl.data import synthetic

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
MAX_POSITIVE = 3


def build_config(input_size: int = 128, patch_size: int = 8) -> SamConfig:
    vision = SamVisionConfig(
        hidden_size=128,
        output_channels=64,
        num_hidden_layers=6,
        num_attention_heads=4,
        image_size=input_size,
        patch_size=patch_size,
        window_size=4,
        global_attn_indexes=[2, 5],
        num_pos_feats=32,  # output_channels / 2: the shared positional encoding feeds the decoder
        mlp_ratio=4.0,
        initializer_range=0.02,  # the transformers default (1e-10) leaves a model trained from scratch dead
    )
    prompt = SamPromptEncoderConfig(hidden_size=64, image_size=input_size, patch_size=patch_size)
    decoder = SamMaskDecoderConfig(hidden_size=64, mlp_dim=256, num_hidden_layers=2, num_attention_heads=4,
                                   iou_head_hidden_dim=64)
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def build_model(seed: int, init: Path | None = None) -> SamModel:
    """A fresh tiny SAM, or one continued from an earlier stage's folder (`init`)."""
    torch.manual_seed(seed)
    if init is not None:
        model = SamModel.from_pretrained(init)
    else:
        model = SamModel(build_config())
        # SAM's random Fourier positional encoding has scale 1 and is a fixed buffer; transformers initialises
        # it with std = vision hidden size / 2, which makes the encoding pure noise at this grid size.
        with torch.no_grad():
            model.shared_image_embedding.positional_embedding.normal_(0.0, 1.0)
    model.shared_image_embedding.positional_embedding.requires_grad_(False)
    return model


def earlier_stages(init: Path | None) -> str:
    """The training history recorded in an earlier stage's card (its Training section), for this card."""
    if init is None or not (init / "MODEL_CARD.md").exists():
        return ""
    text = (init / "MODEL_CARD.md").read_text()
    start, end = text.index("## Training"), text.index(SCORES_HEADING)
    history = text[start:end].replace("## Training", "### Earlier stage (the folder passed as `--init`)", 1).strip()
    return history + "\n\n### This stage (continued from the earlier stage)\n"


# ----------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------


class PretrainData:
    """General-domain scenes resized once into the model-input frame: uint8 images, instance label maps."""

    def __init__(self, n_images: int, seed: int, input_size: int, min_pixels: int = 24):
        self.input_size = input_size
        self.images = np.zeros((n_images, input_size, input_size, 3), np.uint8)
        self.valid = np.zeros((n_images, 2), np.int64)  # resized (h, w)
        self.labels = np.zeros((n_images, input_size, input_size), np.uint8)
        self.instances: list[np.ndarray] = []
        scenes = synthetic.generate_general_instances(n_images, seed, "train")
        for i, (_name, image, masks) in enumerate(tqdm(scenes, desc="preprocess", leave=False)):
            geometry = ResizeGeometry.for_image(image.shape[0], image.shape[1], input_size)
            resized = resize_longest(image, geometry)
            self.images[i, : resized.shape[0], : resized.shape[1]] = resized
            self.valid[i] = geometry.resized
            for k, mask in enumerate(masks, start=1):
                self.labels[i][mask_to_input(mask, geometry).numpy() > 0.5] = k
            ids = [k for k in range(1, len(masks) + 1) if (self.labels[i] == k).sum() >= min_pixels]
            self.instances.append(np.array(ids or [int(np.bincount(self.labels[i].ravel())[1:].argmax()) + 1]))
        mean, std = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, rng: np.random.Generator, batch_size: int, prompts: int):
        """pixel_values B x 3 x S x S, masks B x P x S x S, valid B x S x S."""
        index = rng.choice(len(self), size=batch_size, replace=False)
        size = self.input_size
        images = torch.from_numpy(self.images[index]).permute(0, 3, 1, 2).float()
        ys, xs = torch.arange(size).view(1, size, 1), torch.arange(size).view(1, 1, size)
        valid_hw = torch.from_numpy(self.valid[index])
        valid = (ys < valid_hw[:, 0].view(-1, 1, 1)) & (xs < valid_hw[:, 1].view(-1, 1, 1))
        pixels = (images - self.mean) / self.std * valid[:, None]  # normalize, then zero padding (as SAM)
        labels = torch.from_numpy(self.labels[index])
        ids = torch.tensor(np.stack([rng.choice(self.instances[i], size=prompts) for i in index]))
        masks = (labels[:, None] == ids[:, :, None, None]).float()
        return pixels, masks, valid


def _bounding_boxes(masks: torch.Tensor) -> torch.Tensor:
    """... x S x S masks -> ... x 4 boxes (x0, y0, x1, y1), inclusive pixel indices."""
    size = masks.shape[-1]
    rows, cols = masks.amax(-1) > 0, masks.amax(-2) > 0
    ar = torch.arange(size, dtype=torch.float32)
    y0 = torch.where(rows, ar, float(size)).amin(-1)
    y1 = torch.where(rows, ar, -1.0).amax(-1)
    x0 = torch.where(cols, ar, float(size)).amin(-1)
    x1 = torch.where(cols, ar, -1.0).amax(-1)
    return torch.stack([x0, y0, x1, y1], -1)


def sample_prompts(masks: torch.Tensor, valid: torch.Tensor, generator: torch.Generator, box_prob: float,
                   margin: int = 8):
    """Random SAM-style prompts for B x P x S x S masks, in model-input pixels.

    Returns input_points (B, P, n, 2) or None, input_labels (B, P, n) or None, input_boxes (B, P, 4) or None.
    Up to 3 positive points (uniform in the mask, without replacement) and one negative point (uniform in
    the box grown by `margin` pixels, outside the mask); unused slots have label -10 ("ignore").
    """
    b, p, s, _ = masks.shape
    flat = masks.reshape(b * p, s * s)
    uniform = lambda n: torch.rand(n, generator=generator)  # noqa: E731
    # uniform draws without replacement inside each mask: the top-k of random keys lifted by the mask
    positive = (torch.rand(flat.shape, generator=generator) + flat).topk(MAX_POSITIVE, dim=1).indices
    boxes = _bounding_boxes(masks)  # B x P x 4
    ar = torch.arange(s, dtype=torch.float32)
    box = boxes.reshape(b * p, 4, 1)
    in_x = (ar >= box[:, 0] - margin) & (ar <= box[:, 2] + margin)  # BP x S
    in_y = (ar >= box[:, 1] - margin) & (ar <= box[:, 3] + margin)
    near = (in_y[:, :, None] & in_x[:, None, :]).reshape(b * p, s * s)
    outside = near & (flat == 0) & valid.repeat_interleave(p, 0).reshape(b * p, s * s)
    outside = torch.where(outside.any(1, keepdim=True), outside, flat == 0)
    negative = (torch.rand(flat.shape, generator=generator) + outside.float()).argmax(1, keepdim=True)
    index = torch.cat([positive, negative], 1)
    points = torch.stack([index % s, index // s], -1).float()
    n_pos = torch.multinomial(torch.tensor([0.3, 0.2, 0.5]), b * p, replacement=True, generator=generator) + 1
    labels = torch.full((b * p, MAX_POSITIVE + 1), -10, dtype=torch.long)
    labels[:, :MAX_POSITIVE] = torch.where(torch.arange(MAX_POSITIVE)[None] < n_pos[:, None], 1, -10)
    labels[:, MAX_POSITIVE] = torch.where(uniform(b * p) < 0.25, 0, -10)
    points, labels = points.reshape(b, p, -1, 2), labels.reshape(b, p, -1)

    if uniform(1).item() >= box_prob:
        return points, labels, None
    side = torch.stack([boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]] * 2, -1).clamp(min=1)
    noise = (torch.randn(boxes.shape, generator=generator) * 0.1 * side).clamp(-margin, margin)
    boxes = (boxes + noise).clamp(0, s - 1)
    if uniform(1).item() < 0.5:  # box only
        return None, None, boxes
    return points, labels, boxes


# ----------------------------------------------------------------------------------------------------
# loss
# ----------------------------------------------------------------------------------------------------


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """... x S x S -> ... (mean over pixels), sigmoid focal loss as in torchvision; alpha < 0: no class weights."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = logits.sigmoid().flatten(-2)
    target = target.flatten(-2)
    return 1 - (2 * (prob * target).sum(-1) + 1) / (prob.sum(-1) + target.sum(-1) + 1)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = (logits > 0).flatten(-2).float()
    target = target.flatten(-2)
    inter = (pred * target).sum(-1)
    union = pred.sum(-1) + target.sum(-1) - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sam_loss(pred_masks: torch.Tensor, iou_scores: torch.Tensor, target: torch.Tensor, take_min: bool,
             focal_alpha: float = 0.25, focal_weight: float = 20.0):
    """pred_masks B x P x M x h x w (low res), iou_scores B x P x M, target B x P x S x S."""
    b, p, m, h, w = pred_masks.shape
    size = target.shape[-1]
    logits = F.interpolate(pred_masks.reshape(b * p, m, h, w), (size, size), mode="bilinear", align_corners=False)
    logits = logits.reshape(b, p, m, size, size)
    target = target[:, :, None].expand_as(logits)
    per_mask = focal_weight * focal_loss(logits, target, alpha=focal_alpha) + dice_loss(logits, target)  # B x P x M
    iou = mask_iou(logits.detach(), target)
    mask_term = per_mask.min(-1).values if take_min else per_mask.mean(-1)
    return mask_term.mean() + F.mse_loss(iou_scores, iou), iou


# ----------------------------------------------------------------------------------------------------
# evaluation: 3 fixed points per test sample, single-mask output, IoU at the original size
# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: SamModel, domain: str, n: int, seed: int, batch_size: int = 32) -> float:
    model.eval()
    size = model.config.vision_config.image_size
    samples = synthetic.generate(domain, n, seed, "test")
    scores = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        geometries = [ResizeGeometry.for_image(*s.size, size) for s in chunk]
        pixels = torch.stack([normalize_and_pad(resize_longest(s.image, g), g, PIXEL_MEAN, PIXEL_STD)
                              for s, g in zip(chunk, geometries)])
        points = torch.stack([g.coords_to_input(s.points) for s, g in zip(chunk, geometries)])[:, None]
        labels = torch.ones(points.shape[:3], dtype=torch.long)
        out = model(pixel_values=pixels, input_points=points, input_labels=labels, multimask_output=False)
        for i, (sample, geometry) in enumerate(zip(chunk, geometries)):
            logits = geometry.logits_to_original(out.pred_masks[i])[0, 0]
            pred = (logits > 0).numpy()
            union = (pred | sample.mask).sum()
            scores.append((pred & sample.mask).sum() / union if union else 1.0)
    model.train()
    return float(np.mean(scores))


# ----------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------


def optimizer_and_schedule(model, args):
    """(trainable parameters, AdamW with weight decay on matrices only, warmup + cosine schedule) from the script's
    --lr, --weight-decay, --warmup and --steps (both pretraining scripts)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    return trainable, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.warmup, args.steps))


def lr_lambda(warmup: int, total: int, floor: float = 0.02):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return f


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("samcl/assets/tiny-sam"), help="output folder")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=16, help="images per step")
    parser.add_argument("--prompts", type=int, default=2, help="objects prompted per image per step")
    parser.add_argument("--images", type=int, default=8000, help="general-domain images pregenerated for training")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--focal-alpha", type=float, default=0.25, help="focal class weight; -1 for none")
    parser.add_argument("--focal-weight", type=float, default=20.0, help="focal : dice weight (SAM: 20 : 1)")
    parser.add_argument("--box-prob", type=float, default=0.25, help="share of steps that also give boxes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model init and of the training draws")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic domains")
    parser.add_argument("--eval-n", type=int, default=200, help="test samples per domain for the model card")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--init", type=Path, default=None,
                        help="continue from an earlier stage's output folder instead of a fresh model")
    parser.add_argument("--rescore", action="store_true",
                        help="do not train: load the model in --out, score every domain, rewrite the card's scores")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; on a CPU shared with other jobs, 2 threads stall at every parallel "
                             "region while one of them waits for a core (observed 10-20x slower than 1 thread)")
    return parser.parse_args(argv)


SCORES_HEADING = "## Scores"


def score_section(scores: dict[str, float], eval_n: int, data_seed: int) -> str:
    general = scores[synthetic.GENERAL]
    rows = "\n".join(
        f"| `{d}` | {kind} | {scores[d]:.3f} | {100 * (scores[d] - general):+.1f} |"
        for d, kind in [(synthetic.GENERAL, "source (trained on)")]
        + [(d, "target") for d in synthetic.TARGET_DOMAINS]
        + [(d, "unseen") for d in synthetic.UNSEEN_DOMAINS]
    )
    targets = [scores[d] for d in synthetic.TARGET_DOMAINS]
    return f"""{SCORES_HEADING} (zero-shot except on general)
Mean IoU on the first {eval_n} test samples of each domain (`generate(domain, {eval_n}, seed={data_seed}, split="test")`),
prompted with each sample's 3 fixed positive points, single-mask output, threshold 0 on the logits,
scored at the original image size (SAM's resize + pad convention). Reproduce with
`python scripts/pretrain_tiny_sam.py --rescore --out <this folder> --eval-n {eval_n}`.

| domain | role | mean IoU | vs general (points) |
|---|---|---|---|
{rows}

Mean over the target domains: {np.mean(targets):.3f} ({100 * (np.mean(targets) - general):+.1f} points vs general).
The target and unseen domains are where SAMCL's modules have work to do.
"""


def write_card(path: Path, args: argparse.Namespace, config: SamConfig, params: int, scores: dict[str, float],
               wall: float, final_loss: float) -> None:
    vision, decoder = config.vision_config, config.mask_decoder_config
    command = "python scripts/pretrain_tiny_sam.py " + " ".join(sys.argv[1:])
    text = f"""# tiny-sam: a SAM pretrained by this project on synthetic data

A small `transformers.SamModel` trained from scratch by `scripts/pretrain_tiny_sam.py` on the synthetic
*general* domain of `samcl.data.synthetic` only. It stands in for Meta's SAM wherever no pretrained SAM can
be downloaded (tests, CI, the demo). It is not a useful segmenter of real images.

## Architecture ({params:,} parameters, float32)
- Input {vision.image_size} x {vision.image_size} px (longest side resized, zero padded; SAM's pixel mean/std),
  patch {vision.patch_size} -> {vision.image_size // vision.patch_size} x {vision.image_size // vision.patch_size} embedding grid.
- Vision encoder: ViT, hidden {vision.hidden_size}, {vision.num_hidden_layers} blocks, {vision.num_attention_heads} heads,
  MLP {vision.mlp_dim}, window attention (window {vision.window_size}) except global attention at blocks
  {list(vision.global_attn_indexes)}, relative positions; neck to {vision.output_channels} channels.
- Prompt encoder hidden {config.prompt_encoder_config.hidden_size}; random Fourier positional encoding re-drawn
  with SAM's scale 1 and kept fixed (transformers' default init scale, hidden/2, is noise at this size).
- Mask decoder: hidden {decoder.hidden_size}, {decoder.num_hidden_layers} two-way layers, {decoder.num_attention_heads} heads,
  MLP {decoder.mlp_dim}, 3 multimask outputs + 1 single output, low-res masks
  {4 * vision.image_size // vision.patch_size} x {4 * vision.image_size // vision.patch_size}.

## Training
{earlier_stages(args.init)}- Data: {args.images} images of `samcl.data.synthetic.generate_general_instances(n, seed={args.data_seed}, split="train")`
  (2-5 occluding shapes per image, every visible object is a target); the general *test* split is never seen.
- Prompts per object: 1-3 positive points from its mask (30/20/50 %), a negative point near it (25 %),
  in {100 * args.box_prob:.0f} % of steps a box from its bounding box with jitter (half of them box only).
  {args.prompts} objects per image, {args.batch_size} images per step, {args.steps} steps.
- Loss: {args.focal_weight:g} x focal (alpha {args.focal_alpha:g}, gamma 2) + dice on masks upsampled to the input size; in half of the steps
  the minimum over the 3 multimask outputs, in the other half the single-mask output; MSE between
  predicted and actual IoU of every output.
- AdamW lr {args.lr}, weight decay {args.weight_decay}, {args.warmup} warmup steps, cosine to 2 % of lr; gradient clipping 1.0.
- Seed {args.seed} (init and draws), data seed {args.data_seed}. Final training loss {final_loss:.3f}.
- Wall time {wall / 60:.1f} min on {platform.processor() or platform.machine()}, {args.threads} CPU threads
  (torch {torch.__version__}), shared machine.

Command (from the repository root):

```
{command}
```

{score_section(scores, args.eval_n, args.data_seed)}"""
    path.write_text(text)


def score_all(model: SamModel, eval_n: int, data_seed: int) -> dict[str, float]:
    scores = {}
    for domain in synthetic.ALL_DOMAINS:
        scores[domain] = evaluate(model, domain, eval_n, data_seed)
        print(f"{domain:16s} {scores[domain]:.3f}", flush=True)
    return scores


def rescore(args: argparse.Namespace) -> None:
    """Re-evaluate a trained model (e.g. after a target domain changed) and rewrite its card's score table."""
    model = SamModel.from_pretrained(args.out)
    scores = score_all(model, args.eval_n, args.data_seed)
    card = args.out / "MODEL_CARD.md"
    rewrite_scores(card, score_section(scores, args.eval_n, args.data_seed))
    print(f"rewrote the scores in {card}")


def rewrite_scores(card: Path, section: str) -> None:
    """Replace a model card's scores section (from SCORES_HEADING to the end) by `section`, or append it."""
    text = card.read_text()
    head = text[: text.index(SCORES_HEADING)] if SCORES_HEADING in text else text + "\n"
    card.write_text(head + section)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rescore:
        rescore(args)
        return
    started = time.time()
    model = build_model(args.seed, args.init)
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    size = config.vision_config.image_size
    print(f"tiny SAM: {params:,} parameters", flush=True)
    data = PretrainData(args.images, args.data_seed, size)
    print(f"data: {len(data)} images, {sum(len(i) for i in data.instances)} objects, {time.time() - started:.0f}s",
          flush=True)

    trainable, optimizer, scheduler = optimizer_and_schedule(model, args)
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    running = None
    progress = tqdm(range(args.steps), desc="pretrain", mininterval=5)
    for step in progress:
        pixels, masks, valid = data.batch(rng, args.batch_size, args.prompts)
        points, labels, boxes = sample_prompts(masks, valid, generator, args.box_prob)
        embeddings = model.vision_encoder(pixels).last_hidden_state
        # half of the steps train the 3 multimask outputs (loss of the best one), half the single output
        multimask = bool(rng.random() < 0.5)
        out = model(image_embeddings=embeddings, input_points=points, input_labels=labels, input_boxes=boxes,
                    multimask_output=multimask)
        loss, iou = sam_loss(out.pred_masks, out.iou_scores, masks, take_min=multimask, focal_alpha=args.focal_alpha,
                             focal_weight=args.focal_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        progress.set_postfix(loss=f"{running:.3f}", iou=f"{iou.mean().item():.2f}", lr=f"{scheduler.get_last_lr()[0]:.1e}",
                             refresh=False)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            score = evaluate(model, synthetic.GENERAL, min(args.eval_n, 100), args.data_seed)
            tqdm.write(f"step {step + 1}: loss {running:.3f}, general test IoU (100) {score:.3f}, "
                       f"{(time.time() - started) / 60:.1f} min")
    train_wall = time.time() - started

    scores = score_all(model, args.eval_n, args.data_seed)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    write_card(args.out / "MODEL_CARD.md", args, config, params, scores, train_wall, running)
    print(f"saved to {args.out} after {train_wall / 60:.1f} min of training", flush=True)


if __name__ == "__main__":
    main()
