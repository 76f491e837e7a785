"""Does the inference precision change what SAMCL does? The embedded suite on the shipped tiny SAM: learn it once
(float32, as `learn` always does), then segment every test image in float32, in bfloat16 and (with --int8) with
the encoder's linear layers dynamically quantised to int8, with the same fixed points.

    nice -n 10 python benchmarks/precision_quality.py                 # 100 test images per domain
    nice -n 10 python benchmarks/precision_quality.py --int8 --json   # the int8 experiment too; JSON
    python benchmarks/precision_quality.py --graphs openvino:bfloat16 --graphs onnxruntime:float32
                                    # the exported graphs on a graph runtime at a precision, too (`samcl.runtime`)

Reports, per domain, mean IoU in each precision and its difference from float32 in points (goal: within 0.5),
and the share of test images whose selector decision is the same as float32's (goal: at least 99.5 %), with the
share of foreground pixels that agree. Exit code 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from samcl import SAMCL, Prompt, SelectorConfig, TrainConfig, load_backbone
from samcl.bench import embedded_suite
from samcl.metrics import mask_scores

IOU_POINTS, AGREEMENT = 0.5, 0.995


def learn_suite(suite, args) -> SAMCL:
    samcl = SAMCL.create(load_backbone("builtin:tiny-sam"), None, device=args.device,
                         selector=SelectorConfig(samples_per_domain=args.train, epochs=300, max_steps=None))
    train = TrainConfig(epochs=args.epochs, batch_size=4, lr=0.005, seed=args.seed, progress=False, prompts="reference")
    samcl.learn(suite.general.name, suite.general.train, train, without_module=True)
    for domain in suite.domains:
        samcl.learn(domain.name, domain.train, train)
    return samcl


def variant(trained: SAMCL, name: str, device: str = "cpu") -> SAMCL:
    """The trained set on a freshly loaded base in precision `name` (the modules and selector are shared)."""
    backbone = load_backbone("builtin:tiny-sam")
    if name == "int8":
        sys.path.insert(0, __file__.rsplit("/", 1)[0])
        from latency_precision import quantize_encoder_int8

        quantize_encoder_int8(backbone)
        return SAMCL(backbone, trained.module_set, device=device)
    if ":" in name:  # a graph runtime at a precision: the same set, its encoder and decoder as exported graphs
        runtime, precision = name.split(":")
        samcl = SAMCL(backbone, trained.module_set, device=device)
        samcl.set_runtime(runtime, precision)
        return samcl
    return SAMCL(backbone, trained.module_set, device=device, precision=name)


@torch.no_grad()
def run_domain(samcl: SAMCL, samples, batch: int = 8) -> tuple[list[float], list[str], list[np.ndarray]]:
    ious, chosen, masks = [], [], []
    for start in range(0, len(samples), batch):
        part = [samples[i] for i in range(start, min(start + batch, len(samples)))]
        results = samcl.segment([s.image for s in part], [Prompt.of(s.points, s.labels) for s in part])
        for sample, result in zip(part, results):
            ious.append(mask_scores(result.masks[0], sample.mask)["iou"])
            chosen.append(result.domain)
            masks.append(result.masks[0])
    return ious, chosen, masks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=48, help="training images per domain (and N_e)")
    parser.add_argument("--test", type=int, default=100, help="test images per domain")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--int8", action="store_true", help="the int8 dynamic quantisation experiment too")
    parser.add_argument("--graphs", action="append", default=[], metavar="RUNTIME:PRECISION",
                        help="also the exported graphs on this runtime and precision (e.g. openvino:bfloat16)")
    parser.add_argument("--no-bfloat16", action="store_true", help="skip torch's bfloat16 (only --graphs, --int8)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: learn and segment there")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.int8 and args.device != "cpu":
        parser.error("--int8: dynamic quantisation runs on the CPU only")
    torch.set_num_threads(1)
    start = time.perf_counter()
    suite = embedded_suite(args.train, args.test, args.seed)
    trained = learn_suite(suite, args)
    names = ["float32"] + ([] if args.no_bfloat16 else ["bfloat16"]) + (["int8"] if args.int8 else []) + args.graphs
    sets = {name: (trained if name == "float32" else variant(trained, name, args.device)) for name in names}
    report = {"config": vars(args), "domains": {}, "agreement": {}, "pass": {}}
    decisions = {name: [] for name in names}
    for domain in [suite.general, *suite.domains, *suite.unseen]:
        runs = {name: run_domain(s, domain.test) for name, s in sets.items()}
        row = {}
        for name, (ious, chosen, masks) in runs.items():
            reference = runs["float32"]
            pixels = np.mean([(m == r).mean() for m, r in zip(masks, reference[2])])
            row[name] = {"iou": float(np.mean(ious)), "delta_points": 100 * (np.mean(ious) - np.mean(reference[0])),
                         "same_decision": float(np.mean([a == b for a, b in zip(chosen, reference[1])])),
                         "pixel_agreement": float(pixels)}
            decisions[name] += [a == b for a, b in zip(chosen, reference[1])]
        report["domains"][domain.name] = row
    for name in names:
        report["agreement"][name] = float(np.mean(decisions[name]))
        report["pass"][name] = bool(report["agreement"][name] >= AGREEMENT and all(
            abs(row[name]["delta_points"]) <= IOU_POINTS for row in report["domains"].values()))
    report["seconds"] = time.perf_counter() - start
    if args.json:
        print(json.dumps(report))
    else:
        print(f"embedded suite, shipped tiny SAM: {args.train} train / {args.test} test images per domain, "
              f"{args.epochs} epochs, seed {args.seed}; decisions and IoU against float32's")
        header = "".join(f"{n + ' IoU':>{max(14, len(n) + 6)}}{'d pts':>8}{'same sel':>10}" for n in names)
        print(f"{'domain':<18}{header}")
        for domain, row in report["domains"].items():
            print(f"{domain:<18}" + "".join(f"{r['iou']:>{max(14, len(n) + 6)}.4f}{r['delta_points']:>+8.2f}"
                                            f"{r['same_decision']:>10.3f}" for n, r in row.items()))
        for name in names[1:]:
            print(f"{name}: selector decisions identical on {100 * report['agreement'][name]:.2f} % of "
                  f"{len(decisions[name])} test images (goal >= {100 * AGREEMENT:.1f} %); IoU within "
                  f"{IOU_POINTS} point on every domain: {all(abs(r[name]['delta_points']) <= IOU_POINTS for r in report['domains'].values())}"
                  f" -> {'PASS' if report['pass'][name] else 'FAIL'}")
        print(f"({report['seconds']:.0f} s)")
    return 0 if all(report["pass"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
