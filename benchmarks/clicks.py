"""Interactive segmentation by clicks on the embedded synthetic suite: NoC@85/90 and mIoU@1,3,5,10 per domain for
base SAM, each module forced, the oracle and the routed set, under each refinement strategy.

    nice -n 10 python benchmarks/clicks.py --store /tmp/clicks-store --out benchmarks/results   # ~15 min, 1 core

Learns the general domain without a module and the five target domains in order on the shipped tiny SAM (the
demo's full sizes: 128 training images per domain, 4 epochs; one seed), or reuses --store when it holds them, then
runs RITM's simulated clicker (`samcl.bench.clicks`: 20 clicks, the previous low-res logits fed back as
`mask_input`, the first click's best of three masks) on --test images per domain (6: the run is CPU-bound) with each refinement strategy
(`samcl.inference.refine`):

    all       every click heats the encoder (the suffix re-runs on every click)
    first     the first click heats it, later clicks are decoder-only (SAM's cost)
    outside   as first, but a click outside the heated region re-runs the suffix with every click

The base needs no heat, so its numbers are strategy-free. `--no-feedback` runs the clicks without `mask_input` as
well: the tiny SAM was pretrained without mask inputs (`samcl/assets/tiny-sam/MODEL_CARD.md`), so its mask
embedding is untrained and feeding the previous logits back may hurt it, unlike Meta's SAM.
Writes clicks.json (raw) and clicks.md (tables, provenance) to --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_runtimes import cpu_name  # noqa: E402

from samcl import SAMCL, SelectorConfig, TrainConfig, load_backbone  # noqa: E402
from samcl.bench import evaluate_clicks  # noqa: E402
from samcl.bench.demo import FULL  # noqa: E402
from samcl.bench.suite import embedded_suite  # noqa: E402
from samcl.data.synthetic import GENERAL, TARGET_DOMAINS  # noqa: E402
from samcl.io import atomic_write_bytes, atomic_write_json  # noqa: E402
from samcl.store import BASE_MODEL  # noqa: E402

STRATEGIES = ("all", "first", "outside")


def learned_set(store: Path, seed: int) -> SAMCL:
    """The store with the general domain as base and the five targets learned, learned now when absent."""
    if (store / "manifest.json").exists():
        samcl = SAMCL.open(store)
        if set(TARGET_DOMAINS) <= set(samcl.domains):
            return samcl
        raise SystemExit(f"{store}: holds {samcl.domains}, not the five target domains; give a new --store")
    torch.manual_seed(seed)
    suite = embedded_suite(FULL.train, 1, seed)
    train = TrainConfig(epochs=FULL.epochs, batch_size=FULL.batch_size, lr=FULL.lr, seed=seed, progress=False)
    samcl = SAMCL.create(load_backbone("builtin:tiny-sam"), store,
                         selector=SelectorConfig(samples_per_domain=FULL.buffer, epochs=FULL.selector_epochs,
                                                 max_steps=None))
    samcl.learn(suite.general.name, suite.general.train, train, without_module=True)
    for domain in suite.domains:
        print(f"learning {domain.name}", file=sys.stderr)
        samcl.learn(domain.name, domain.train, train)
    return samcl


def cases(samcl: SAMCL, domain: str, feedback: bool) -> list[tuple[str, str | None, str | None]]:
    """(run, force, strategy) per domain: the base (no module: no heat, strategy-free), the selector's pick and
    the domain's own module (oracle) under every strategy, and every other module forced under "first" (the
    default) only, to keep the run short; without feedback, the base and the selector's pick only."""
    modules = [d for d in samcl.domains if d in TARGET_DOMAINS]
    out: list[tuple[str, str | None, str | None]] = [("base", BASE_MODEL, None)]
    out += [("routed", None, strategy) for strategy in STRATEGIES]
    if not feedback:
        return out
    if domain in modules:
        out += [("oracle", domain, strategy) for strategy in STRATEGIES]
    out += [(f"module {m}", m, "first") for m in modules if m != domain]
    return out


def run(args) -> dict:
    torch.set_num_threads(1)
    start = time.perf_counter()
    samcl = learned_set(args.store, args.seed)
    learned_s = time.perf_counter() - start
    suite = embedded_suite(1, args.test, args.seed)  # the test split: images the store never learned from
    domains = {d.name: d.test for d in suite.domains}
    domains[GENERAL] = suite.general.test
    report = {"config": {"clicks": args.clicks, "test_images": args.test, "seed": args.seed,
                         "store": str(args.store), "base": "builtin:tiny-sam",
                         "cpu": cpu_name(), "torch": torch.__version__, "threads": 1,
                         "feedback": ["on", "off"] if args.no_feedback else ["on"]},
              "learned": samcl.domains, "learn_seconds": learned_s, "results": {}}
    for feedback in ([True, False] if args.no_feedback else [True]):
        key = "feedback" if feedback else "no feedback"
        table = report["results"][key] = {}
        for name, samples in domains.items():
            table[name] = {}
            for run_name, force, strategy in cases(samcl, name, feedback):
                label = run_name if strategy is None else f"{run_name} [{strategy}]"
                scores = evaluate_clicks(samcl, samples, force=force, max_clicks=args.clicks, feedback=feedback,
                                         refine=strategy or "all")
                table[name][label] = scores
                print(f"{key:>11} {name:<14} {label:<32} NoC@85 {scores['noc@85']:5.2f} NoC@90 "
                      f"{scores['noc@90']:5.2f} mIoU@1 {scores['miou@1']:.3f} @5 {scores.get('miou@5', float('nan')):.3f} "
                      f"suffix/click {scores['suffix_per_click']:.2f}",
                      file=sys.stderr, flush=True)
    report["seconds"] = time.perf_counter() - start
    return report


def markdown(report: dict, command: str, commit: str) -> str:
    c = report["config"]
    lines = ["# Interactive clicks on the embedded synthetic suite (tiny SAM)", "",
             f"Command: `{command}` at commit {commit}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
             f"CPU {c['cpu']}, 1 thread, torch {c['torch']}; {report['seconds'] / 60:.1f} min "
             f"(learning {report['learn_seconds'] / 60:.1f} min).",
             f"RITM's clicker, {c['clicks']} clicks, {c['test_images']} test images per domain "
             f"(`generate(domain, {c['test_images']}, {c['seed']}, 'test')`), one seed ({c['seed']}). "
             "`oracle` = the domain's own module forced; `routed` = the selector's pick; NoC = clicks to reach the "
             "IoU (20 when never reached). [strategy]: which clicks heat the encoder; suffix runs / click: the share of "
             "clicks that ran the adapted blocks again (the rest cost the decoder alone).", ""]
    for key, table in report["results"].items():
        lines += [f"## previous logits {'fed back as mask_input' if key == 'feedback' else 'not fed back'}", "",
                  "| domain | run | NoC@85 | NoC@90 | mIoU@1 | mIoU@3 | mIoU@5 | mIoU@10 | suffix runs / click |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, runs in table.items():
            for label, s in runs.items():
                shown = label
                at = [f"{s[f'miou@{k}']:.3f}" if f"miou@{k}" in s else "-" for k in (1, 3, 5, 10)]
                lines.append(f"| {name} | {shown} | {s['noc@85']:.2f} | {s['noc@90']:.2f} | {' | '.join(at)} | "
                             f"{s['suffix_per_click']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True, help="the learned store (learned here when absent)")
    parser.add_argument("--test", type=int, default=6, help="test images per domain")
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-feedback", action="store_true", help="also run every case without mask_input")
    parser.add_argument("--out", type=Path, default=None, help="folder for clicks.json and clicks.md")
    args = parser.parse_args(argv)
    report = run(args)
    if args.out is not None:
        command = "python benchmarks/clicks.py " + " ".join(argv if argv is not None else sys.argv[1:])
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
        report["provenance"] = {"command": command, "commit": commit,
                                "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out / "clicks.json", report)
        atomic_write_bytes(args.out / "clicks.md", markdown(report, command, commit).encode())
    print(json.dumps(report["results"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
