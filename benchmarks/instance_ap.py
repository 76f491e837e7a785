"""Automatic masks with the routed module: COCO mask AP on synthetic instance domains, and what a module costs.

    python benchmarks/instance_ap.py                      # the committed run (benchmarks/results/instance_ap.*)
    python benchmarks/instance_ap.py --prompts mix --out benchmarks/results/instance_ap_mix   # (instance_ap_mix.*)
    python benchmarks/instance_ap.py --quick --out /tmp/ap

On the shipped tiny SAM (`builtin:tiny-sam`, pretrained on the synthetic general domain), the instance domains of
`samcl.data.synthetic.instances` are learned one after another into one set (`SAMCL.create` + `learn`, the
embedded suite's settings: 48 training images, 8 epochs, batch 4, lr 0.03, fecam selector), one object of each
training image as its sample, prompted in the `--prompts` regime: by default the reference's (three positive
points; pinned, whatever `TrainConfig.prompts` defaults to), or `mix` (SAM's kinds, prompt-free samples among
them: what `SAMCL.learn` does by default). Then every test image gets automatic masks (`SAMCL.generate`) three ways:
- base: SAM without a module (`force="base"`), what Meta's generator gives;
- routed: the selector picks the module from the image (samcl as a user runs it; the open-set fallback may send
  an image to base);
- oracle: the image's own domain's module forced (learned domains only).
COCO mask AP (IoU .50:.95) and AP50 come from `pycocotools.cocoeval` (iouType "segm", one category, the predicted
IoU as the score), per domain, over the test images of that domain. `general` is never learned: routed there
should equal base (the open-set fallback). Timing: `generate` on one image with a module forced and routed
against base, alternated, in this run (median of the repeats); each call runs the whole encoder.

The tiny SAM predicts lower IoU and stability than ViT-H, for which Meta chose its defaults (0.88, 0.95: no mask
passes here), so this run uses pred_iou_thresh 0.3 and stability_score_thresh 0.6 (flags below; at 0.5 / 0.8, the
parity test's, base SAM kept no mask at all on the learned domains, an AP of 0 that no ratio can be taken of);
every other generator option is Meta's default but points_per_side (16: the images are 112-192 px).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from samcl import SAMCL, AutoMaskConfig, SelectorConfig, TrainConfig, load_backbone  # noqa: E402
from samcl.data.synthetic import GENERAL  # noqa: E402
from samcl.data.synthetic.instances import INSTANCE_DOMAINS, generate_instances, instance_samples  # noqa: E402
from samcl.inference.automatic import coco_results  # noqa: E402
from samcl.inference.precision import cpu_name  # noqa: E402
from samcl.io import atomic_write_json, coco_rle, rle_bbox  # noqa: E402
from samcl.io.files import atomic_write_bytes  # noqa: E402
from samcl.method.prompts import PROMPT_REGIMES  # noqa: E402


def coco_ap(images: list, results_by_image: list[list[dict]]) -> dict:
    """COCO mask AP and AP50 of one domain's results (pycocotools' COCOeval, iouType segm)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object"}]}
    for image_id, (_, image, masks) in enumerate(images, start=1):
        gt["images"].append({"id": image_id, "height": int(image.shape[0]), "width": int(image.shape[1])})
        for mask in masks:
            rle = coco_rle(mask)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": 1,
                                      "segmentation": rle, "area": float(mask.sum()), "bbox": rle_bbox(rle),
                                      "iscrowd": 0})
    detections = [r for results in results_by_image for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        if not detections:
            return {"ap": 0.0, "ap50": 0.0, "masks": 0}
        found = coco.loadRes(detections)
        evaluation = COCOeval(coco, found, iouType="segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {"ap": 100 * float(evaluation.stats[0]), "ap50": 100 * float(evaluation.stats[1]),
            "masks": len(detections)}


def evaluate(samcl: SAMCL, domain: str, images: list, config: AutoMaskConfig, force) -> dict:
    results, routed = [], {}
    for image_id, (_, image, _) in enumerate(images, start=1):
        [generated] = samcl.generate([image], config=config, force=force)
        routed[generated.domain] = routed.get(generated.domain, 0) + 1
        results.append(coco_results(generated, image_id))
    return {**coco_ap(images, results), "ran": routed}


def click_iou(samcl: SAMCL, images: list, force, seed: int) -> float:
    """Mean IoU of one click per object (a fixed point inside it, `fixed_test_points`) with `force`'s module:
    whether the module learned the domain's convention where it has a prompt's heat."""
    from samcl import Prompt
    from samcl.data.synthetic import fixed_test_points

    rng, scores = np.random.default_rng(seed), []
    for _, image, masks in images:
        prompts = [Prompt.of(fixed_test_points(mask, rng, 1)) for mask in masks]
        for mask, result in zip(masks, samcl.segment([image] * len(masks), prompts, force=force)):
            scores.append((result.masks[0] & mask).sum() / max((result.masks[0] | mask).sum(), 1))
    return float(np.mean(scores))


def timing(samcl: SAMCL, image: np.ndarray, domain: str, config: AutoMaskConfig, repeats: int) -> dict:
    """Median seconds of `generate` on one image: base, the module forced, routed; alternated so drift is shared."""
    runs = {"base": [], "module": [], "routed": []}
    forces = {"base": "base", "module": domain, "routed": None}
    for _ in range(repeats + 1):
        for name, force in forces.items():
            start = time.perf_counter()
            samcl.generate([image], config=config, force=force)
            runs[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values[1:]) for name, values in runs.items()}  # the first is warm-up
    return {"seconds": medians, "module_over_base": medians["module"] / medians["base"],
            "routed_over_base": medians["routed"] / medians["base"], "repeats": repeats, "domain": domain,
            "image_size": list(image.shape[:2])}


def table(report: dict) -> str:
    rows = ["| domain | learned | base AP | routed AP | oracle AP | base AP50 | routed AP50 | oracle AP50 | "
            "routed / base AP | routed ran | one click IoU, base / module |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for domain, row in report["domains"].items():
        oracle = row.get("oracle")
        ratio = row["routed"]["ap"] / row["base"]["ap"] if row["base"]["ap"] > 0 else float("nan")
        ran = ", ".join(f"{k} {v}" for k, v in sorted(row["routed"]["ran"].items()))
        click = row.get("click_iou")
        ran += f" | {click['base']:.3f} / {click['module']:.3f}" if click else " | -"
        rows.append(f"| {domain} | {'yes' if row['learned'] else 'no'} | {row['base']['ap']:.1f} | "
                    f"{row['routed']['ap']:.1f} | {oracle['ap']:.1f} | {row['base']['ap50']:.1f} | "
                    f"{row['routed']['ap50']:.1f} | {oracle['ap50']:.1f} | {ratio:.2f}x | {ran} |"
                    if oracle else
                    f"| {domain} | {'yes' if row['learned'] else 'no'} | {row['base']['ap']:.1f} | "
                    f"{row['routed']['ap']:.1f} | - | {row['base']['ap50']:.1f} | {row['routed']['ap50']:.1f} | - | "
                    f"{ratio:.2f}x | {ran} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "instance_ap")
    parser.add_argument("--quick", action="store_true", help="12 training and 4 test images, 3 epochs")
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--test", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.3)
    parser.add_argument("--stability-score-thresh", type=float, default=0.6)
    parser.add_argument("--prompts", default="reference", choices=PROMPT_REGIMES,
                        help="TrainConfig.prompts, the training prompt regime (default reference: the paper's three "
                             "positive points, pinned whatever TrainConfig defaults to)")
    parser.add_argument("--repeats", type=int, default=15, help="timing repeats per way")
    args = parser.parse_args(argv)
    if args.quick:
        args.train, args.test, args.epochs, args.repeats = 12, 4, 3, 3
    torch.set_num_threads(1)
    started = time.perf_counter()
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        prompts=args.prompts, progress=False)
    samcl = SAMCL.create(load_backbone("builtin:tiny-sam"), selector=SelectorConfig(samples_per_domain=args.train),
                         device="cpu")
    for domain in INSTANCE_DOMAINS:
        samcl.learn(domain, instance_samples(domain, args.train, args.seed), train)
        print(f"learned {domain} ({time.perf_counter() - started:.0f} s)", flush=True)
    config = AutoMaskConfig(points_per_side=args.points_per_side, pred_iou_thresh=args.pred_iou_thresh,
                            stability_score_thresh=args.stability_score_thresh, output_mode="coco_rle")
    report = {"domains": {}}
    for domain in (*INSTANCE_DOMAINS, GENERAL):
        images = generate_instances(domain, args.test, args.seed, "test")
        learned = domain in INSTANCE_DOMAINS
        row = {"learned": learned, "objects": sum(len(m) for _, _, m in images), "images": len(images),
               "base": evaluate(samcl, domain, images, config, "base"),
               "routed": evaluate(samcl, domain, images, config, None)}
        if learned:
            row["oracle"] = evaluate(samcl, domain, images, config, domain)
            row["click_iou"] = {"base": click_iou(samcl, images, "base", args.seed),
                                "module": click_iou(samcl, images, domain, args.seed)}
        report["domains"][domain] = row
        print(f"{domain}: base {row['base']['ap']:.1f} routed {row['routed']['ap']:.1f} "
              f"oracle {row.get('oracle', {}).get('ap', float('nan')):.1f}", flush=True)
    learned = [r for r in report["domains"].values() if r["learned"]]
    unseen = [r for r in report["domains"].values() if not r["learned"]]
    mean = lambda rows, way: float(np.mean([r[way]["ap"] for r in rows]))  # noqa: E731
    report["summary"] = {
        "learned_base_ap": mean(learned, "base"), "learned_routed_ap": mean(learned, "routed"),
        "learned_oracle_ap": mean(learned, "oracle"),
        "learned_routed_over_base": mean(learned, "routed") / max(mean(learned, "base"), 1e-9),
        "never_learned_routed_minus_base_ap": mean(unseen, "routed") - mean(unseen, "base"),
        "goals": {"learned_routed_over_base_at_least": 1.5, "never_learned_within_ap_points": 1.0,
                  "time_ratio_at_most": 1.05}}
    timing_image = generate_instances(INSTANCE_DOMAINS[0], 1, args.seed, "test")[0][1]
    report["timing"] = timing(samcl, timing_image, INSTANCE_DOMAINS[0], config, args.repeats)
    report["provenance"] = {
        "command": "python benchmarks/instance_ap.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_name(),
        "torch_threads": 1, "torch": torch.__version__, "base": "builtin:tiny-sam",
        "train": train.to_dict(), "generator": {k: v for k, v in vars(config).items()},
        "selector": "fecam (default kind), samples_per_domain = train images", "seconds": time.perf_counter() - started,
        "train_images": args.train, "test_images": args.test, "seed": args.seed}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), report)
    s, t = report["summary"], report["timing"]
    shown = {k: v for k, v in train.to_dict().items() if k in ("epochs", "batch_size", "lr", "seed", "prompts",
                                                                "points_per_image")}
    text = (f"# Automatic masks: COCO mask AP on synthetic instance domains\n\n"
            f"Produced by `{report['provenance']['command'].strip()}` on {report['provenance']['cpu']} "
            f"(1 torch thread), {report['provenance']['date']}; raw numbers in `{args.out.name}.json`.\n\n"
            f"{table(report)}\n\n"
            f"Learned domains, mean AP: base {s['learned_base_ap']:.1f}, routed {s['learned_routed_ap']:.1f}, "
            f"oracle {s['learned_oracle_ap']:.1f}; routed / base {s['learned_routed_over_base']:.2f}x (goal >= 1.5x). "
            f"Never learned (general): routed - base {s['never_learned_routed_minus_base_ap']:+.2f} AP points "
            f"(goal within 1).\n\n"
            f"Time of `generate` on one {t['image_size'][0]}x{t['image_size'][1]} {t['domain']} image "
            f"(median of {t['repeats']}, alternated): base {t['seconds']['base'] * 1e3:.0f} ms, module forced "
            f"{t['seconds']['module'] * 1e3:.0f} ms ({t['module_over_base']:.3f}x), routed "
            f"{t['seconds']['routed'] * 1e3:.0f} ms ({t['routed_over_base']:.3f}x; goal <= 1.05x).\n\n"
            f"Generator: points_per_side {config.points_per_side}, pred_iou_thresh {config.pred_iou_thresh}, "
            f"stability_score_thresh {config.stability_score_thresh}, other options Meta's defaults. Training: "
            f"{json.dumps(shown)}.\n")
    atomic_write_bytes(args.out.with_suffix(".md"), text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
