"""SAMCL on a CUDA GPU at full SAM size: the ViT-B, ViT-L and ViT-H configs (random weights, no download), as
ratios to bare SAM measured in the same run. Needs a CUDA device; never part of the tests.

    python benchmarks/latency_cuda.py                          # vit_b, vit_l, vit_h; 1024 px; 10 timed calls each
    python benchmarks/latency_cuda.py --sizes vit_b --json     # one size; one JSON object

For each size, wall time per call (CUDA synchronised; median and min of the repeats, after warm-up calls):
  - transformers' own `SamModel` forward in float32 (its encoder and attention), batch 1;
  - bare SAM through samcl's backbone (encode + decode, no module), float32, batch 1;
  - `SAMCL.segment` in float32 and in bfloat16 (the encoder cast once; selection among `--domains` random
    modules), batch 1, and its ratio to bare SAM float32;
  - a batch of `--batch` images: one module for all vs every image its own module (one pass), per precision;
  - the predictor's prompt-only re-run after `set_image` (adapted blocks, neck, decoder), per precision;
  - bfloat16 masks against float32's on the same image and points: max logit difference and mask IoU.
TF32 matrix multiplies stay off (PyTorch's default), so float32 is true float32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
from latency import add_random_domains, bare_sam, test_image
from latency_precision import transformers_sam
from transformers import SamConfig

from samcl import SAMCL, Prompt
from samcl.backbone import SamBackbone

# Meta's build_sam: (hidden size, blocks, heads, global-attention blocks); MLP width 4 x hidden, 1024 px
SIZES = {"vit_b": (768, 12, 12, [2, 5, 8, 11]),
         "vit_l": (1024, 24, 16, [5, 11, 17, 23]),
         "vit_h": (1280, 32, 16, [7, 15, 23, 31])}


def backbone_of(size: str, device: str, seed: int = 0, image_size: int = 1024) -> SamBackbone:
    hidden, blocks, heads, global_blocks = SIZES[size]
    config = SamConfig(vision_config=dict(hidden_size=hidden, num_hidden_layers=blocks, num_attention_heads=heads,
                                          global_attn_indexes=global_blocks, mlp_dim=4 * hidden,
                                          image_size=image_size),
                       prompt_encoder_config=dict(image_size=image_size, image_embedding_size=image_size // 16))
    return SamBackbone.from_config(config, seed=seed).eval().to(device)


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(functions: dict, repeats: int, warmup: int = 2) -> dict:
    """Wall seconds per call, CUDA synchronised, alternating between the functions after `warmup` calls each."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    synchronize()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> dict:
    return {"median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000}


def measure(size: str, args) -> dict:
    device = args.device
    sets = {}
    for precision in ("float32", "bfloat16"):
        backbone = backbone_of(size, device, image_size=args.image_size)
        if precision == "bfloat16":
            backbone.set_precision("bfloat16")
        sets[precision] = SAMCL.create(backbone, None, device=device)
        add_random_domains(sets[precision], args.domains, samples_per_domain=4)  # same seeds: same modules
    reference = sets["float32"].backbone
    image, prompt = test_image(reference, 0)
    names = sets["float32"].domains
    out = {"hidden_size": reference.hidden_size, "blocks": reference.num_blocks, "image_size": reference.image_size,
           "adapted_blocks": list(sets["float32"].aug_config.adapted_blocks)}

    functions = {"transformers SamModel float32": lambda: transformers_sam(reference.model, image, prompt,
                                                                           _on(reference.preprocess, device)),
                 "bare SAM float32": lambda: bare_sam(reference, [image], [prompt])}
    functions.update({f"SAMCL {p}": (lambda s=s: s.segment([image], [prompt])) for p, s in sets.items()})
    times = timed(functions, args.repeats)
    out["batch 1"] = {name: summary(t) for name, t in times.items()}
    base = statistics.median(times["bare SAM float32"])
    out["ratio to bare SAM float32"] = {name: statistics.median(t) / base for name, t in times.items()}

    images, prompts = zip(*(test_image(reference, seed) for seed in range(args.batch)))
    mixed = [names[j % len(names)] for j in range(args.batch)]
    for p, s in sets.items():
        batch_times = timed({"single": lambda s=s: s.segment(images, prompts, force=names[0]),
                             "mixed": lambda s=s: s.segment(images, prompts, force=mixed)}, max(args.repeats // 2, 2), 1)
        out[f"batch {args.batch} {p}"] = {
            **{name: summary(t) for name, t in batch_times.items()},
            "images_per_second_mixed": args.batch / statistics.median(batch_times["mixed"]),
            "throughput mixed / single": statistics.median(batch_times["single"]) / statistics.median(batch_times["mixed"])}

    predictors = {p: s.predictor() for p, s in sets.items()}
    other = Prompt.of(prompt.points[:1] + 5)
    for predictor in predictors.values():
        predictor.set_image(image, force=names[0])
    prompt_times = timed({p: (lambda q=q: q.predict(other.points, other.labels)) for p, q in predictors.items()},
                         args.repeats)
    out["prompt-only re-run"] = {p: summary(t) for p, t in prompt_times.items()}

    logits = {p: q.predict(prompt.points, prompt.labels, return_logits=True)[0][0] for p, q in predictors.items()}
    a, b = logits["float32"] > 0, logits["bfloat16"] > 0
    out["bfloat16 vs float32"] = {"max_logit_diff": float(np.abs(logits["bfloat16"] - logits["float32"]).max()),
                                  "max_abs_logit": float(np.abs(logits["float32"]).max()),
                                  "mask_iou": float((a & b).sum() / max((a | b).sum(), 1))}
    if device == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        del sets, predictors
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return out


def _on(preprocess, device):
    def moved(image):
        pixels, geometry = preprocess(image)
        return pixels.to(device), geometry
    return moved


def show(size: str, r: dict) -> None:
    print(f"\n{size}: D = {r['hidden_size']}, {r['blocks']} blocks, {r['image_size']} px, adapted blocks "
          f"{r['adapted_blocks']}; peak GPU memory {r.get('peak_memory_gib', float('nan')):.2f} GiB")
    for name, t in r["batch 1"].items():
        print(f"  batch 1  {name:<30} {t['median_ms']:8.2f} ms (min {t['min_ms']:.2f})   / bare SAM float32 "
              f"{r['ratio to bare SAM float32'][name]:.3f}")
    for key in (k for k in r if k.startswith("batch ") and k != "batch 1"):
        b = r[key]
        print(f"  {key:<39} single {b['single']['median_ms']:8.2f} ms, mixed {b['mixed']['median_ms']:8.2f} ms: "
              f"mixed / single throughput {b['throughput mixed / single']:.3f}, {b['images_per_second_mixed']:.1f} img/s")
    for p, t in r["prompt-only re-run"].items():
        print(f"  prompt-only re-run {p:<20} {t['median_ms']:8.2f} ms (min {t['min_ms']:.2f})")
    q = r["bfloat16 vs float32"]
    print(f"  bfloat16 vs float32 masks: max |logit diff| {q['max_logit_diff']:.4g} (max |logit| "
          f"{q['max_abs_logit']:.4g}), mask IoU {q['mask_iou']:.4f}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sizes", default="vit_b,vit_l,vit_h", help="comma-separated: vit_b, vit_l, vit_h")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per variant")
    parser.add_argument("--batch", type=int, default=8, help="images per call for the batch part")
    parser.add_argument("--domains", type=int, default=8, help="random modules the selector picks among")
    parser.add_argument("--image-size", type=int, default=1024, help="input size in pixels (SAM's: 1024)")
    parser.add_argument("--device", default="cuda", help="cuda (what this measures); cpu only to try the script")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or args.repeats < 1 or args.batch < 1 or args.domains < 2 or args.image_size % 16:
        parser.error(f"--sizes {args.sizes}: expected some of {', '.join(SIZES)}" if unknown
                     else "--repeats and --batch must be >= 1, --domains >= 2, --image-size a multiple of 16")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("latency_cuda.py: no CUDA device visible (this benchmark needs one)", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    report = {"gpu": gpu, "torch": torch.__version__, "repeats": args.repeats}
    if not args.json:
        print(f"{report['gpu']}, torch {report['torch']}; {args.repeats} timed calls per variant")
    for size in sizes:
        report[size] = measure(size, args)
        if not args.json:
            show(size, report[size])
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
