"""Pretrain the tiny SAM 2 shipped in samcl/assets/tiny-sam2 (images and video memory) on the synthetic *general*
domain only.

No pretrained SAM 2 can be downloaded where this project is developed and tested, so it ships its own: a small
`transformers.Sam2VideoModel` (128 px, Hiera [1, 2, 5, 1], the tiny config of benchmarks/video.py) trained from
scratch, in one run: image steps only for the first half (`--memory-from`), then both kinds of step, sharing one
optimizer:

- image steps, SAM-style as scripts/pretrain_tiny_sam.py (same prompt sampler and loss): several objects per
  general-domain image, 1-3 positive points, sometimes a negative one, sometimes a jittered box; focal + dice,
  both the minimum over the 3 multimask outputs and the single output (which several points, as in the video
  benchmark, take) in every step; IoU head MSE; plus SAM 2's object-score head (BCE, the object is always there);
- memory steps, SAM 2-style on short clips of the general domain (`samcl.data.synthetic.video.generate_clips`):
  frame 0 prompted with points, its predicted mask encoded into memory by transformers' memory encoder; every later
  frame predicted with no prompt from features conditioned on that memory (and the earlier frames' memories and
  object pointers) by transformers' memory attention, its best multimask output (by predicted IoU) encoded in turn;
  the loss of every frame (multimask minimum, IoU, object score) back-propagated through the memories.

The memory steps call Sam2VideoModel's own pieces (`get_image_features`, `prompt_encoder`, `mask_decoder`,
`object_pointer_proj`, `_encode_new_memory`, `_prepare_memory_conditioned_features`: memory attention, temporal
encodings, object pointers) with a minimal stand-in for its inference session (its output dicts), because the
session's propagation runs under inference_mode.

Learning rate: at 1e-3 (80 warmup steps) the single output, which 3 points take, stays on near-empty masks: over
900 image-only steps its training IoU stayed at 0.02-0.06 and the samcl score of 50 general test images reached
0.14-0.18, while the best multimask output learned (0.47). At 3e-4 with 200 warmup steps it leaves that trap after
about 1000 steps: samcl score 0.237 / 0.315 / 0.556 at steps 500 / 1000 / 1500 (training single-output IoU 0.05 /
0.31 / 0.53; image-only, batch 12, AMD EPYC, 1 thread). The memory steps start once the image path segments, as
SAM 2 itself was trained on images first.

    python scripts/pretrain_tiny_sam2.py --steps 5000 --memory-from 2500 --warmup 200 --lr 3e-4 --focal-alpha -1 --eval-every 500 --eval-images 100 --eval-clips 8 --threads 2 --out samcl/assets/tiny-sam2
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import Sam2VideoConfig, Sam2VideoModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrain_tiny_sam import (SCORES_HEADING, dice_loss, focal_loss, mask_iou, optimizer_and_schedule, rewrite_scores,
                               sample_prompts)

from samcl.data import synthetic
from samcl.data.synthetic.video import FRAMES, generate_clips
from samcl.inference.precision import cpu_name

PIXEL_MEAN = (0.485, 0.456, 0.406)  # SAM 2's (samcl.backbone.sam2)
PIXEL_STD = (0.229, 0.224, 0.225)
NO_OBJ_SCORE = -1024.0


def build_config(size: int = 128) -> Sam2VideoConfig:
    """The tiny SAM 2 of benchmarks/video.py: transformers' memory width is fixed at 64 and its object pointers need
    a wider model (128: two memory tokens each, as the official 256 / 64 gives four)."""
    grids = [size // 4, size // 8, size // 16]
    return Sam2VideoConfig(
        vision_config={"backbone_config": {
            "model_type": "sam2_hiera_det_model", "hidden_size": 16, "num_attention_heads": 1,
            "image_size": [size, size], "blocks_per_stage": [1, 2, 5, 1], "embed_dim_per_stage": [16, 32, 64, 128],
            "num_attention_heads_per_stage": [1, 2, 4, 8], "window_size_per_stage": [4, 4, 6, 3],
            "global_attention_blocks": [4, 7], "window_positional_embedding_background_size": [4, 4]},
            "backbone_channel_list": [128, 64, 32, 16], "backbone_feature_sizes": [[g, g] for g in grids],
            "fpn_hidden_size": 128, "model_type": "sam2_vision_model"},
        prompt_encoder_config={"hidden_size": 128, "image_size": size, "patch_size": 16},
        mask_decoder_config={"hidden_size": 128}, image_size=size, memory_attention_hidden_size=128,
        memory_attention_feed_forward_hidden_size=256, memory_attention_rope_feat_sizes=[size // 16, size // 16],
        memory_encoder_hidden_size=128, mask_downsampler_embed_dim=128, memory_fuser_embed_dim=128,
        memory_fuser_intermediate_dim=512)


def build_model(seed: int, init: Path | None = None) -> Sam2VideoModel:
    """A fresh tiny SAM 2 (or one continued from `init`). SAM 2 has one random Fourier positional encoding, for the
    image grid and for the prompts' coordinates alike (Meta's checkpoints load it into both of transformers' copies);
    transformers draws its two copies apart, which leaves points unlocatable on the image: one draw for both."""
    torch.manual_seed(seed)
    if init is not None:
        return Sam2VideoModel.from_pretrained(init)
    model = Sam2VideoModel(build_config())
    with torch.no_grad():
        meta_init(model)
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(model.shared_image_embedding.positional_embedding)
    return model


def meta_init(model: Sam2VideoModel) -> None:
    """Re-draw every linear, convolution and embedding with PyTorch's default init, as Meta's SAM 2 is built
    (it sets only a few memory parameters itself). transformers draws them all from N(0, 0.02), a placeholder for
    loaded weights: trained from there, the FPN (no norm) gives features of std 0.002-0.05 and near-zero mask logits,
    and the image step stalled on empty masks (400 image-only steps of 8 images: training IoU 0.006 -> 0.057, samcl
    score of 50 general test images 0.046 -> 0.198, random 0.07; a first fix, not yet a trained model)."""
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Embedding)):
            module.reset_parameters()


# ----------------------------------------------------------------------------------------------------
# data: everything stretched once to the square model input (SAM 2's preprocessing), uint8
# ----------------------------------------------------------------------------------------------------


def stretch_image(image: np.ndarray, size: int) -> np.ndarray:
    """H x W x 3 uint8 -> S x S x 3 uint8, as Sam2Backbone.preprocess resizes (bilinear, antialias)."""
    tensor = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255.0
    tensor = F.interpolate(tensor, (size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return (tensor * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def stretch_mask(mask: np.ndarray, size: int) -> np.ndarray:
    tensor = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.interpolate(tensor, (size, size), mode="bilinear", align_corners=False)[0, 0].numpy() > 0.5


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """N x S x S x 3 uint8 -> N x 3 x S x S normalized."""
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (tensor - torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)) / torch.tensor(PIXEL_STD).view(1, 3, 1, 1)


class ImageData:
    """General-domain scenes with all their objects (instance label maps), for the image steps."""

    def __init__(self, n: int, seed: int, size: int, min_pixels: int = 24):
        self.images = np.zeros((n, size, size, 3), np.uint8)
        self.labels = np.zeros((n, size, size), np.uint8)
        self.instances: list[np.ndarray] = []
        for i, (_name, image, masks) in enumerate(tqdm(synthetic.generate_general_instances(n, seed, "train"),
                                                       desc="images", leave=False, mininterval=5)):
            self.images[i] = stretch_image(image, size)
            for k, mask in enumerate(masks, start=1):
                self.labels[i][stretch_mask(mask, size)] = k
            ids = [k for k in range(1, len(masks) + 1) if (self.labels[i] == k).sum() >= min_pixels]
            self.instances.append(np.array(ids or [int(np.bincount(self.labels[i].ravel())[1:].argmax()) + 1]))

    def batch(self, rng: np.random.Generator, batch_size: int, prompts: int):
        index = rng.choice(len(self.images), size=batch_size, replace=False)
        labels = torch.from_numpy(self.labels[index])
        ids = torch.tensor(np.stack([rng.choice(self.instances[i], size=prompts) for i in index]))
        return to_pixels(self.images[index]), (labels[:, None] == ids[:, :, None, None]).float()


class ClipData:
    """General-domain clips (`generate_clips("general", ...)`, FRAMES frames each), for the memory steps."""

    def __init__(self, n: int, seed: int, size: int):
        self.frames = np.zeros((n, FRAMES, size, size, 3), np.uint8)
        self.masks = np.zeros((n, FRAMES, size, size), bool)
        for i, clip in enumerate(tqdm(generate_clips(synthetic.GENERAL, n, seed, "train"), desc="clips", leave=False,
                                      mininterval=5)):
            for t, (frame, mask) in enumerate(zip(clip.frames, clip.masks)):
                self.frames[i, t] = stretch_image(frame, size)
                self.masks[i, t] = stretch_mask(mask, size)

    def batch(self, rng: np.random.Generator, batch_size: int, length: int):
        """pixels (B*T) x 3 x S x S (clip-major), masks B x T x S x S: `length` frames from a random start, stride
        1 or 2, forwards or backwards (the first of them is the prompted one)."""
        index = rng.choice(len(self.frames), size=batch_size, replace=False)
        frames, masks = [], []
        for i in index:
            stride = int(rng.integers(1, 3)) * (1 if rng.random() < 0.5 else -1)
            span = (length - 1) * abs(stride)
            start = int(rng.integers(0, FRAMES - span))
            order = np.arange(start, start + span + 1, abs(stride))[:: 1 if stride > 0 else -1]
            if not self.masks[i, order[0]].any():  # the prompt needs the object
                order = order[::-1]
            frames.append(self.frames[i, order])
            masks.append(self.masks[i, order])
        frames, masks = np.stack(frames), torch.from_numpy(np.stack(masks)).float()
        return to_pixels(frames.reshape(-1, *frames.shape[2:])), masks


# ----------------------------------------------------------------------------------------------------
# the model's pieces
# ----------------------------------------------------------------------------------------------------


def features(model: Sam2VideoModel, pixels: torch.Tensor):
    """-> (feats, pos): the FPN levels as Sam2VideoModel.get_image_features gives them (HW x N x C each)."""
    out = model.get_image_features(pixels)
    return out.fpn_hidden_states, out.fpn_position_encoding


def high_res(model: Sam2VideoModel, feats, select) -> list[torch.Tensor]:
    """The two stride-4/8 levels of frames `select`, as N x C x H x W."""
    return [f[:, select].permute(1, 2, 0).reshape(-1, f.shape[2], *s)
            for f, s in zip(feats[:-1], model.backbone_feature_sizes[:-1])]


def heads(model: Sam2VideoModel, pix_feat: torch.Tensor, high: list[torch.Tensor], points, labels, boxes,
          multimask: bool):
    """SAM 2's prompt encoder + mask decoder (as `_single_frame_forward`, keeping every output for the loss).
    -> masks B x P x M x h x w (before the object gate), iou B x P x M, tokens B x P x M x C, object logits B x P x 1."""
    b = pix_feat.shape[0]
    if points is None and boxes is None:  # no prompt: one padding point, as _single_frame_forward
        points = torch.zeros(b, 1, 1, 2)
        labels = -torch.ones(b, 1, 1, dtype=torch.int32)
    sparse, dense = model.prompt_encoder(input_points=points, input_labels=labels, input_boxes=boxes, input_masks=None)
    positional = model.get_image_wide_positional_embeddings().repeat(b, 1, 1, 1)
    return model.mask_decoder(image_embeddings=pix_feat, image_positional_embeddings=positional,
                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                              multimask_output=multimask, high_resolution_features=high)


def frame_output(model: Sam2VideoModel, masks, iou, tokens, object_logits):
    """What inference keeps of a frame (one object per clip, P = 1): the best mask by predicted IoU behind the object
    gate, at the input size, and the gated object pointer (as `_single_frame_forward`)."""
    best = iou[:, 0].argmax(-1)
    rows = torch.arange(masks.shape[0])
    low = masks[rows, 0, best][:, None]  # B x 1 x h x w
    appearing = object_logits[:, 0] > 0  # B x 1
    low = torch.where(appearing[:, :, None, None], low, torch.full_like(low, NO_OBJ_SCORE))
    high = F.interpolate(low, (model.image_size, model.image_size), mode="bilinear", align_corners=False)
    pointer = model.object_pointer_proj(tokens[rows, 0, best])
    gate = appearing.to(pointer.dtype)
    pointer = gate * pointer + (1 - gate) * model.no_object_pointer
    return high, pointer


def memory_conditioned(model: Sam2VideoModel, session, frame: int, current: torch.Tensor,
                       current_pos: torch.Tensor) -> torch.Tensor:
    """A tracked frame's features conditioned on the session's memories and object pointers: the steps of
    `Sam2VideoModel._prepare_memory_conditioned_features` through its own helpers and memory attention, for a
    batch of clips (its last reshape assumes one). current: HW x B x C -> B x C x H x W."""
    batch, channels = current.shape[1], model.hidden_dim
    previous = model._gather_memory_frame_outputs(session, 0, frame)
    memories, positions = model._build_memory_attention_inputs(previous, current.device)
    offsets, pointers, max_pointers = model._get_object_pointers(session, 0, frame, FRAMES, current.device)
    pointer_count = 0
    if pointers:
        pointers, pointer_pos = model._process_object_pointers(offsets, pointers, max_pointers, batch, channels,
                                                               current.device)
        memories.append(pointers)
        positions.append(pointer_pos)
        pointer_count = pointers.shape[0]
    out = model.memory_attention(current_vision_features=current, current_vision_position_embeddings=current_pos,
                                 memory=torch.cat(memories, 0).float(), memory_posision_embeddings=torch.cat(positions, 0),
                                 num_object_pointer_tokens=pointer_count)
    return out[0].transpose(1, 2).reshape(batch, channels, *model.backbone_feature_sizes[-1])  # (1, B, HW, C)


# ----------------------------------------------------------------------------------------------------
# loss
# ----------------------------------------------------------------------------------------------------


def sam2_loss(masks, iou_pred, object_logits, target, take_min: bool, focal_weight: float, focal_alpha: float):
    """masks B x P x M x h x w, iou_pred B x P x M, object_logits B x P x 1, target B x P x S x S: masks and IoU
    count where the object is there (SAM 2), the object score everywhere. -> (loss, IoU of the outputs)."""
    b, p, m, h, w = masks.shape
    size = target.shape[-1]
    logits = F.interpolate(masks.reshape(b * p, m, h, w), (size, size), mode="bilinear", align_corners=False)
    logits = logits.reshape(b, p, m, size, size)
    present = (target.flatten(-2).amax(-1) > 0).float()  # B x P
    full = target[:, :, None].expand_as(logits)
    per_mask = focal_weight * focal_loss(logits, full, alpha=focal_alpha) + dice_loss(logits, full)
    iou = mask_iou(logits.detach(), full)
    mask_term = per_mask.min(-1).values if take_min else per_mask.mean(-1)
    weight = present / present.sum().clamp(min=1)
    loss = (mask_term * weight).sum() + (((iou_pred - iou) ** 2).mean(-1) * weight).sum()
    loss = loss + F.binary_cross_entropy_with_logits(object_logits[..., 0], present)
    return loss, iou


def image_step(model, data: ImageData, rng, generator, args):
    pixels, masks = data.batch(rng, args.batch_size, args.prompts)
    valid = torch.ones(masks.shape[0], masks.shape[-2], masks.shape[-1], dtype=torch.bool)
    points, labels, boxes = sample_prompts(masks, valid, generator, args.box_prob)
    feats, _ = features(model, pixels)
    every = torch.arange(pixels.shape[0])
    pix = (feats[-1] + model.no_memory_embedding).permute(1, 2, 0).reshape(-1, model.hidden_dim,
                                                                          *model.backbone_feature_sizes[-1])
    high = high_res(model, feats, every)
    loss, iou = 0.0, []
    for multimask in (True, False):  # both the 3 multimask outputs (their best) and the single one, every step
        out = heads(model, pix, high, points, labels, boxes, multimask)
        term, outputs_iou = sam2_loss(out[0], out[1], out[3], masks, multimask, args.focal_weight, args.focal_alpha)
        loss, iou = loss + term / 2, iou + [outputs_iou.max(-1).values.mean().item()]
    return loss, iou[-1]  # (the single output's IoU)


def memory_step(model, data: ClipData, rng, generator, args):
    """One batch of clips through SAM 2's memory (see the module doc). -> (loss, mean IoU of the tracked frames)."""
    length = args.clip_frames
    pixels, masks = data.batch(rng, args.clip_batch, length)
    b = masks.shape[0]
    feats, pos = features(model, pixels)  # HW x (B*T) x C, clip-major
    grid = model.backbone_feature_sizes[-1]
    session = SimpleNamespace(dtype=torch.float32, output_dict_per_obj={0: {"cond_frame_outputs": {},
                                                                            "non_cond_frame_outputs": {}}})
    total, tracked_iou = 0.0, []
    for t in range(length):
        select = torch.arange(b) * length + t
        current, current_pos = feats[-1][:, select], pos[-1][:, select]
        target = masks[:, t][:, None]  # B x 1 x S x S
        high = high_res(model, feats, select)
        if t == 0:  # prompted: the multimask outputs trained too, the single output (as for several points) kept
            pix = (current + model.no_memory_embedding).permute(1, 2, 0).reshape(b, model.hidden_dim, *grid)
            valid = torch.ones(b, *target.shape[-2:], dtype=torch.bool)
            points, labels, _ = sample_prompts(target, valid, generator, box_prob=0.0)
            out = heads(model, pix, high, points, labels, None, True)
            loss, _ = sam2_loss(out[0], out[1], out[3], target, True, args.focal_weight, args.focal_alpha)
            total = total + loss / (2 * length)
            multimask = False
        else:
            pix = memory_conditioned(model, session, t, current, current_pos)
            points = labels = None
            multimask = True  # transformers' tracking frames (no points) take the multimask outputs
        out = heads(model, pix, high, points, labels, None, multimask)
        loss, iou = sam2_loss(out[0], out[1], out[3], target, multimask, args.focal_weight, args.focal_alpha)
        total = total + loss / (2 * length if t == 0 else length)
        if t > 0:
            tracked_iou.append(iou.max(-1).values.mean().item())
        if t == length - 1:
            break
        high, pointer = frame_output(model, *out)
        memory, memory_pos = model._encode_new_memory(current_vision_feats=current, pred_masks_high_res=high,
                                                      object_score_logits=out[3], is_mask_from_pts=t == 0)
        stored = {"maskmem_features": memory.float(), "maskmem_pos_enc": memory_pos, "object_pointer": pointer}
        session.output_dict_per_obj[0]["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = stored
    return total, float(np.mean(tracked_iou))


# ----------------------------------------------------------------------------------------------------
# evaluation with samcl's own path: images through Sam2Backbone, clips through SAMCL.track (base)
# ----------------------------------------------------------------------------------------------------


def evaluate(model: Sam2VideoModel, n_images: int, n_clips: int, seed: int) -> dict:
    """Mean IoU of the general test images (3 fixed points) and mean J&F of general test clips, both through samcl."""
    from samcl import SAMCL, Prompt
    from samcl.backbone import Sam2VideoBackbone
    from samcl.bench.davis import sequence_scores

    backbone = Sam2VideoBackbone(copy.deepcopy(model).eval())  # (a backbone freezes its model)
    samcl = SAMCL.create(backbone, device="cpu")
    scores = {}
    if n_images:
        samples = synthetic.generate(synthetic.GENERAL, n_images, seed, "test")
        ious = []
        for start in range(0, len(samples), 16):
            chunk = samples[start : start + 16]
            predictions = samcl.segment([s.image for s in chunk], [Prompt.of(points=s.points) for s in chunk],
                                        force="base")
            for sample, prediction in zip(chunk, predictions):
                pred = prediction.masks[0]
                union = (pred | sample.mask).sum()
                ious.append((pred & sample.mask).sum() / union if union else 1.0)
        scores["image_iou"] = float(np.mean(ious))
    if n_clips:
        jf = []
        for clip in generate_clips(synthetic.GENERAL, n_clips, seed, "test"):
            frames = list(samcl.track(iter(clip.frames), {0: {1: Prompt.of(points=clip.points)}}, force="base",
                                      num_frames=len(clip.frames)))
            jf.append(sequence_scores([f.objects[1].mask for f in frames], clip.masks)["J&F"])
        scores["clip_jf"] = float(np.mean(jf))
    return scores


# ----------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("samcl/assets/tiny-sam2"), help="output folder")
    parser.add_argument("--steps", type=int, default=5000,
                        help="optimizer steps (each one image batch, and one memory batch from --memory-from)")
    parser.add_argument("--batch-size", type=int, default=12, help="images per image batch")
    parser.add_argument("--prompts", type=int, default=2, help="objects prompted per image")
    parser.add_argument("--images", type=int, default=6000, help="general-domain images pregenerated")
    parser.add_argument("--clips", type=int, default=800, help="general-domain clips pregenerated (10 frames each)")
    parser.add_argument("--clip-batch", type=int, default=4, help="clips per memory batch")
    parser.add_argument("--clip-frames", type=int, default=4, help="frames per training clip (the first prompted)")
    parser.add_argument("--memory-weight", type=float, default=1.0, help="weight of the memory batch's loss")
    parser.add_argument("--memory-from", type=int, default=2500, help="first step with memory batches (image-only before)")
    parser.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (1e-3 stalls the single output)")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--focal-alpha", type=float, default=-1.0, help="focal class weight; -1 for none")
    parser.add_argument("--focal-weight", type=float, default=20.0)
    parser.add_argument("--box-prob", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--eval-images", type=int, default=100, help="general test images scored at the end")
    parser.add_argument("--eval-clips", type=int, default=8, help="general test clips tracked at the end")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--init", type=Path, default=None, help="continue from an earlier output folder")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared CPU)")
    parser.add_argument("--rescore", action="store_true",
                        help="do not train: store --out's weights as float16 and rewrite its card's scores")
    return parser.parse_args(argv)


def write_card(path: Path, args, config: Sam2VideoConfig, params: int, before: dict, after: dict, wall: float,
               losses: dict) -> None:
    hiera = config.vision_config.backbone_config
    command = "python scripts/pretrain_tiny_sam2.py " + " ".join(sys.argv[1:])
    text = f"""# tiny-sam2: a SAM 2 (images and video memory) pretrained by this project on synthetic data

A small `transformers.Sam2VideoModel` trained from scratch by `scripts/pretrain_tiny_sam2.py` on the synthetic
*general* domain of `samcl.data.synthetic` only (`builtin:tiny-sam2`). It stands in for Meta's SAM 2 wherever none
can be downloaded (tests, the video benchmark). It is not a useful segmenter or tracker of real images or videos.

## Architecture ({params:,} parameters, float32)
- Input {config.image_size} x {config.image_size} px (stretched to the square, SAM 2's ImageNet mean/std).
- Hiera: blocks per stage {list(hiera.blocks_per_stage)}, widths {list(hiera.embed_dim_per_stage)}, heads
  {list(hiera.num_attention_heads_per_stage)}, global attention at blocks {list(hiera.global_attention_blocks)};
  FPN {config.vision_config.fpn_hidden_size} channels at {config.vision_config.backbone_feature_sizes}.
- Mask decoder hidden {config.mask_decoder_config.hidden_size}, 3 multimask outputs + 1, IoU and object-score heads.
- Memory: attention width {config.memory_attention_hidden_size} ({config.memory_attention_num_layers} layers, RoPE
  on {list(config.memory_attention_rope_feat_sizes)}), memory encoder to {config.memory_encoder_output_channels} channels, {config.num_maskmem}
  memories, object pointers (two memory tokens each); transformers' defaults otherwise.

## Training (one run, one optimizer: image steps, then image and memory steps together)
- Image batches: {args.batch_size} images of `generate_general_instances(n={args.images}, seed={args.data_seed}, split="train")`,
  {args.prompts} objects each; 1-3 positive points (30/20/50 %), a negative point near the object (25 %), in
  {100 * args.box_prob:.0f} % of the batches a jittered box (half of them box only); {args.focal_weight:g} x focal (alpha {args.focal_alpha:g})
  + dice on masks at the input size, in every batch both the minimum over the 3 multimask outputs and the
  single output (half each); MSE of the IoU head; BCE of the object-score head.
- Memory batches (from step {args.memory_from}, weight {args.memory_weight:g}): {args.clip_batch} windows of {args.clip_frames} frames (stride 1 or 2,
  forwards or backwards) of `generate_clips("general", n={args.clips}, seed={args.data_seed}, split="train")`; frame 0 prompted
  with 1-3 points (and sometimes a negative), its single output encoded into memory (as for a prompt of several
  points); every later frame predicted with no prompt from the memory of the earlier ones (transformers' memory
  encoder, memory attention, object pointers), its best output by predicted IoU encoded in turn; the same loss
  on every frame (frame 0: multimask minimum and single output, half each; tracked frames: multimask minimum),
  back-propagated through the memories.
- AdamW lr {args.lr}, weight decay {args.weight_decay}, {args.warmup} warmup steps, cosine to 2 %; gradient clipping 1.0;
  {args.steps} steps. Seed {args.seed}, data seed {args.data_seed}.
- Final running losses: image {losses['image']:.3f}, memory {losses['memory']:.3f} (tracked frames' best-output IoU
  {losses['tracked_iou']:.3f}).
- Wall time of the training (data included, final scoring not) {wall / 60:.1f} min on {cpu_name()}, {args.threads} CPU thread{'s' if args.threads > 1 else ''} (torch {torch.__version__}), shared machine.

Command (from the repository root):

```
{command}
```

{score_section(args, before, after)}"""
    path.write_text(text)


def score_section(args, before: dict, after: dict) -> str:
    return f"""{SCORES_HEADING} (samcl's own paths, base, no module; the shipped float16-stored weights)
| | random init (same seed) | this model |
|---|---|---|
| general test images, mean IoU (first {args.eval_images}, 3 fixed points) | {before.get('image_iou', float('nan')):.3f} | {after.get('image_iou', float('nan')):.3f} |
| general test clips, mean J&F (first {args.eval_clips}, 10 frames, 3 points on frame 0) | {before.get('clip_jf', float('nan')):.3f} | {after.get('clip_jf', float('nan')):.3f} |

Images: `SAMCL.segment(..., force="base")`; clips: `SAMCL.track(..., force="base")` (transformers' propagation);
`generate("general", n, seed={args.data_seed}, split="test")` / `generate_clips("general", n, seed={args.data_seed}, split="test")`, J&F as
DAVIS (`samcl.bench.davis`). Reproduce with
`python scripts/pretrain_tiny_sam2.py --rescore --out <this folder> --eval-images {args.eval_images} --eval-clips {args.eval_clips}`.
"""


def round_to_half(model: Sam2VideoModel) -> None:
    """Round every float weight to float16 precision (kept float32): what the shipped file stores, so that the
    scores are those of the shipped model."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())


def save(model: Sam2VideoModel, out: Path) -> None:
    """config.json (float32) + model.safetensors stored as float16 (half the size; transformers loads it as float32)."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    weights = load_file(out / "model.safetensors")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, out / "model.safetensors",
              metadata={"format": "pt"})


def rescore(args) -> None:
    """Store a trained folder's weights as float16 (if not yet) and rewrite its card's scores for them."""
    model = Sam2VideoModel.from_pretrained(args.out)
    round_to_half(model)
    before = evaluate(build_model(args.seed), args.eval_images, args.eval_clips, args.data_seed)
    after = evaluate(model, args.eval_images, args.eval_clips, args.data_seed)
    print(f"random init: {before}\nthis model: {after}", flush=True)
    save(model, args.out)
    card = args.out / "MODEL_CARD.md"
    rewrite_scores(card, score_section(args, before, after))
    print(f"rewrote the weights (float16) and the scores in {card}")


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rescore:
        rescore(args)
        return
    started = time.time()
    model = build_model(args.seed, args.init)
    params = sum(p.numel() for p in model.parameters())
    size = model.image_size
    print(f"tiny SAM 2: {params:,} parameters", flush=True)
    before = evaluate(model, args.eval_images, args.eval_clips, args.data_seed)
    print(f"before training: {before}", flush=True)
    images = ImageData(args.images, args.data_seed, size)
    clips = ClipData(args.clips, args.data_seed, size)
    print(f"data: {len(images.images)} images, {len(clips.frames)} clips, {time.time() - started:.0f}s", flush=True)

    trainable, optimizer, scheduler = optimizer_and_schedule(model, args)
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    running = {"image": None, "image_iou": None, "memory": None, "tracked_iou": None}

    def track(key, value):
        running[key] = value if running[key] is None else 0.95 * running[key] + 0.05 * value

    progress = tqdm(range(args.steps), desc="pretrain", mininterval=10)
    for step in progress:
        loss, image_iou = image_step(model, images, rng, generator, args)
        track("image", loss.item())
        track("image_iou", image_iou)
        if step >= args.memory_from:
            memory, tracked = memory_step(model, clips, rng, generator, args)
            track("memory", memory.item())
            track("tracked_iou", tracked)
            loss = loss + args.memory_weight * memory
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        progress.set_postfix({k: f"{v:.3f}" for k, v in running.items() if v is not None}, refresh=False)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            score = evaluate(model, 50, 4, args.data_seed)
            tqdm.write(f"step {step + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in running.items() if v is not None)
                       + f"; general test (50 images, 4 clips) {score}; {(time.time() - started) / 60:.1f} min")
    wall = time.time() - started
    round_to_half(model)
    after = evaluate(model, args.eval_images, args.eval_clips, args.data_seed)
    print(f"after training: {after}", flush=True)
    save(model, args.out)
    final = {k: (v if v is not None else float("nan")) for k, v in running.items()}
    write_card(args.out / "MODEL_CARD.md", args, model.config, params, before, after, wall, final)
    print(f"saved to {args.out} after {wall / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
