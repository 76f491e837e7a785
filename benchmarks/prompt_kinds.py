"""How well a module serves each kind of prompt, trained under each prompt regime (`TrainConfig.prompts`).

On the embedded synthetic suite (the benchmark's settings: shipped tiny SAM, 48 training images a domain,
8 epochs, batch 4, rank 10, the benchmark's chosen learning rate 0.03), every target domain is learned under
each regime; then each domain's test images are segmented with its module forced and with the base (no
module), one kind of prompt at a time:

    1 pos            the sample's first fixed test point (inside the object, away from its edge)
    3 pos            its three fixed test points (the benchmark's prompt)
    pos + near neg   the first point and a negative point in the band around the object (`prompts.near_band`)
    pos + far neg    the first point and a negative point far from it (background beyond 3 band widths)
    box              the object's tight box
    box + pos        the tight box and the first point
    none             no prompt at all (zero heat; the decoder gets no point and no box)

Negative points are drawn once per (seed, domain, image), the same for every regime and the base. The goals
(issue 30): with the mix, a negative point never lowers mean IoU by more than 0.5 point against the same
positive alone; box and none keep >= 90 % of the module's gain over the base, gain(kind) = module(kind) -
base(kind), against gain(3 pos); and the mix's 3-pos IoU is within 1 point of the reference regime's.

    OMP_NUM_THREADS=1 python benchmarks/prompt_kinds.py --out benchmarks/results/prompt_kinds

A regime may override the mix's shares: `--regimes reference,mix,mix:none=0.3,box=0.2` (keys: negatives, box,
box_points, none; `TrainConfig.mix_*`). Writes OUT.json (every score, with provenance) and OUT.md (the tables).
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from samcl import SAMCL, Prompt, SelectorConfig, TrainConfig, load_backbone
from samcl.data import synthetic
from samcl.inference.precision import cpu_name
from samcl.io import atomic_write_bytes, atomic_write_json
from samcl.method.prompts import band_width, dilate, mask_box, near_band, sample_points, sample_rng
from samcl.metrics import mask_scores

KINDS = ("1 pos", "3 pos", "pos + near neg", "pos + far neg", "box", "box + pos", "none")
MIX_KEYS = ("negatives", "box", "box_points", "none")


def parse_regime(text: str) -> tuple[str, dict]:
    """'reference', 'mix' or 'mix:none=0.3,box=0.2' -> (regime, TrainConfig overrides)."""
    regime, _, overrides = text.partition(":")
    if regime not in ("reference", "mix"):
        raise SystemExit(f"prompt_kinds: --regimes {text}: expected reference or mix[:key=value,...]")
    fields = {"prompts": regime}
    for item in filter(None, overrides.split(",")):
        key, _, value = item.partition("=")
        if key not in MIX_KEYS:
            raise SystemExit(f"prompt_kinds: --regimes {text}: unknown share {key!r} (one of {', '.join(MIX_KEYS)})")
        fields[f"mix_{key}"] = float(value)
    return regime, fields


def far_background(mask: np.ndarray) -> np.ndarray:
    """Background beyond three near-band widths of the object (any background if the image has none)."""
    far = ~dilate(mask, 3 * band_width(mask))
    return far if far.any() else ~mask


def test_prompts(sample, seed: int, domain_index: int, index: int) -> dict[str, Prompt]:
    """Every kind's prompt for one test sample (negatives drawn once, from (seed, domain, image))."""
    rng = sample_rng(seed, 9000 + domain_index, index)
    first = sample.points[:1]
    near = sample_points(near_band(sample.mask), 1, rng) if near_band(sample.mask).any() else None
    far = sample_points(far_background(sample.mask), 1, rng)
    box = mask_box(sample.mask)
    with_negative = lambda neg: Prompt.of(np.concatenate([first, neg]), [1, 0])  # noqa: E731
    return {"1 pos": Prompt.of(first), "3 pos": Prompt.of(sample.points),
            "pos + near neg": with_negative(near if near is not None else far), "pos + far neg": with_negative(far),
            "box": Prompt.of(box=box), "box + pos": Prompt.of(first, box=box),
            "none": Prompt()}  # Prompt() directly: `Prompt.of` asks for a point or a box, as the API does


def evaluate(samcl: SAMCL, force: str, tests: list, prompts: list[dict], batch: int = 8) -> dict[str, list[float]]:
    """Per kind, each test image's IoU with `force`'s module (or "base")."""
    out = {kind: [] for kind in KINDS}
    for start in range(0, len(tests), batch):
        chunk = tests[start:start + batch]
        prepared = samcl.engine.prepare([s.image for s in chunk], keep=False)
        for kind in KINDS:
            results = samcl.engine.run(prepared, [p[kind] for p in prompts[start:start + batch]], force=force)
            out[kind] += [mask_scores(r.masks[0], s.mask)["iou"] for r, s in zip(results, chunk)]
    return out


def learn_all(backbone, fields: dict, args, suite: dict) -> tuple[SAMCL, dict]:
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         progress=False, **fields)
    samcl = SAMCL.create(backbone, None, rank=args.rank, selector=SelectorConfig(kind="ncm"), device="cpu")
    seconds = {}
    for name in args.domains:
        start = time.perf_counter()
        samcl.learn(name, suite[name][0], config)
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"  learned {name} in {seconds[name]} s", flush=True)
    return samcl, {"train_config": config.to_dict(), "learn_seconds": seconds}


def mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def goals(scores: dict, regime: str) -> dict:
    """The issue's goals for one regime, from mean IoU (in points) over the domains."""
    m = {kind: 100 * mean([mean(scores[regime][d][kind]) for d in scores[regime]]) for kind in KINDS}
    b = {kind: 100 * mean([mean(scores["base"][d][kind]) for d in scores["base"]]) for kind in KINDS}
    gain = {kind: m[kind] - b[kind] for kind in KINDS}
    out = {"near_neg_minus_1pos": m["pos + near neg"] - m["1 pos"], "far_neg_minus_1pos": m["pos + far neg"] - m["1 pos"],
           "box_gain_share": gain["box"] / gain["3 pos"] if gain["3 pos"] else float("nan"),
           "none_gain_share": gain["none"] / gain["3 pos"] if gain["3 pos"] else float("nan")}
    if "reference" in scores:
        r = 100 * mean([mean(scores["reference"][d]["3 pos"]) for d in scores["reference"]])
        out["3pos_minus_reference"] = m["3 pos"] - r
    out["holds"] = {"negatives": min(out["near_neg_minus_1pos"], out["far_neg_minus_1pos"]) >= -0.5,
                    "box": out["box_gain_share"] >= 0.9, "none": out["none_gain_share"] >= 0.9,
                    "3pos": abs(out.get("3pos_minus_reference", 0.0)) <= 1.0}
    return out


def markdown(report: dict) -> str:
    scores, columns = report["scores"], ["base", *report["regimes"]]
    lines = ["# Prompt kinds: IoU per kind of prompt, per training regime", "",
             f"{report['provenance']['command']}  ", f"{report['provenance']['cpu']}, {report['provenance']['date']}, "
             f"torch {report['provenance']['torch']}, commit {report['provenance']['commit']}", "",
             f"Embedded synthetic suite, `builtin:tiny-sam`, seed {report['settings']['seed']}; each target domain "
             f"learned from {report['settings']['train']} images ({report['settings']['epochs']} epochs, batch "
             f"{report['settings']['batch_size']}, lr {report['settings']['lr']}, rank {report['settings']['rank']}); "
             f"{report['settings']['test']} test images a domain, module forced (base: no module). Mean IoU in % "
             "over the 5 domains (per domain below).", "",
             "| prompt | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for kind in KINDS:
        cells = [100 * mean([mean(scores[c][d][kind]) for d in scores[c]]) for c in columns]
        lines.append(f"| {kind} | " + " | ".join(f"{v:.1f}" for v in cells) + " |")
    lines += ["", "Goals (mean over domains; gain share = (module - base) on that kind / (module - base) on 3 pos):", "",
              "| regime | near neg - 1 pos | far neg - 1 pos | box gain share | none gain share | 3 pos - reference |",
              "|---|---|---|---|---|---|"]
    for regime in report["regimes"]:
        g = report["goals"][regime]
        lines.append(f"| {regime} | {g['near_neg_minus_1pos']:+.1f} | {g['far_neg_minus_1pos']:+.1f} | "
                     f"{g['box_gain_share']:.2f} | {g['none_gain_share']:.2f} | "
                     f"{g.get('3pos_minus_reference', float('nan')):+.1f} |")
    lines += ["", "Targets: negatives >= -0.5; gain shares >= 0.90; 3 pos within ±1.0 of reference.", "",
              "## Per domain (IoU %)", ""]
    domains = list(scores["base"])
    lines += ["| prompt | column | " + " | ".join(domains) + " |", "|---|---|" + "---|" * len(domains)]
    for kind in KINDS:
        for c in columns:
            lines.append(f"| {kind} | {c} | " + " | ".join(f"{100 * mean(scores[c][d][kind]):.1f}" for d in domains) + " |")
    return "\n".join(lines) + "\n"


def provenance() -> dict:
    cpu = cpu_name()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = "unknown"
    return {"command": "python " + " ".join(sys.argv), "cpu": cpu, "threads": torch.get_num_threads(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "torch": torch.__version__, "commit": commit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regimes", default="reference,mix", help="comma-free list separated by ';' or ','")
    parser.add_argument("--domains", default=",".join(synthetic.TARGET_DOMAINS))
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--test", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/prompt_kinds"))
    args = parser.parse_args()
    args.domains = args.domains.split(",")
    # regimes: ';' separates them when a regime's overrides use ','
    texts = args.regimes.split(";") if ";" in args.regimes else args.regimes.split(",")
    torch.manual_seed(args.seed)
    backbone = load_backbone("builtin:tiny-sam")
    suite = {name: (synthetic.generate(name, args.train, args.seed, "train"),
                    synthetic.generate(name, args.test, args.seed, "test")) for name in args.domains}
    prompts = {name: [test_prompts(s, args.seed, k, i) for i, s in enumerate(suite[name][1])]
               for k, name in enumerate(args.domains)}
    scores, runs, start = {}, {}, time.perf_counter()
    for text in texts:
        _, fields = parse_regime(text)
        print(f"regime {text}", flush=True)
        samcl, runs[text] = learn_all(backbone, fields, args, suite)
        scores[text] = {name: evaluate(samcl, name, suite[name][1], prompts[name]) for name in args.domains}
        if "base" not in scores:
            scores["base"] = {name: evaluate(samcl, "base", suite[name][1], prompts[name]) for name in args.domains}
    report = {"provenance": provenance(), "regimes": texts, "runs": runs,
              "settings": {k: getattr(args, k) for k in ("train", "test", "epochs", "batch_size", "lr", "rank", "seed")}
              | {"domains": args.domains, "seconds": round(time.perf_counter() - start, 1)},
              "kinds": list(KINDS), "scores": scores}
    ref = "reference" if "reference" in texts else None
    report["goals"] = {text: goals({**scores, **({"reference": scores[ref]} if ref else {})}, text) for text in texts}
    text = markdown(report)
    print(text)
    atomic_write_json(args.out.with_suffix(".json"), report)
    atomic_write_bytes(args.out.with_suffix(".md"), text.encode())


if __name__ == "__main__":
    main()
