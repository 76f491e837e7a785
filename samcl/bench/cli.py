"""`samcl benchmark` on the command line: arguments to a BenchmarkConfig, exit codes (3: --max-steps reached,
130: interrupted; both resumable), the printed summary or --json, and the command line results.md records."""

from __future__ import annotations

import shlex
import sys

from .. import SamclError
from ..io import print_json
from .executor import BenchmarkStopped
from .methods import METHODS, check_methods
from .report import format_summary
from .runner import BenchmarkConfig, run_benchmark
from .suite import SuiteSpec


def parse_list(text: str, kind=str) -> list:
    try:
        return [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SamclError(f"cannot read {text!r} as a comma-separated list") from None


def main_benchmark(args) -> int:
    methods = check_methods(parse_list(args.methods)) if args.methods else list(METHODS)
    seeds = parse_list(args.seeds, int) if args.seeds else ([0] if args.quick else [0, 1, 2])
    if not seeds or len(set(seeds)) != len(seeds):
        raise SamclError(f"--seeds {args.seeds!r}: give distinct integers")
    if not args.domain and (args.extra or args.general):
        raise SamclError("--extra and --general go with --data (the embedded suite has its own)")
    suite = SuiteSpec()
    if args.domain:
        suite = SuiteSpec(False, tuple(args.domain), tuple(args.extra or ()), args.general)
    config = BenchmarkConfig(out=args.out, methods=methods, seeds=seeds, quick=args.quick, base=args.base,
                             suite=suite, jobs=args.jobs, state=args.state, max_steps=args.max_steps,
                             progress=not args.json, device=args.device, epochs=args.epochs, batch_size=args.batch_size,
                             command=canonical_command(args, methods, seeds))
    try:
        report = run_benchmark(config)
    except BenchmarkStopped:
        print(f"samcl: stopped after --max-steps {args.max_steps}; everything finished is saved in "
              f"{config.state_dir}; run the same command again to continue", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"samcl: interrupted; every finished step is saved in {config.state_dir}; run the same command "
              "again to continue", file=sys.stderr)
        return 130
    if args.json:
        print_json({"results": str(args.out / "results.json"), "metrics_sha256": report["metrics_sha256"],
                    "methods": {m: d["aggregate"]["continual"]["iou"] for m, d in report["methods"].items()}})
    else:
        print(format_summary(report))
        print(f"\nresults in {args.out}/: results.json, results.md, {', '.join(report['plots'])}")
    return 0


def canonical_command(args, methods: list[str], seeds: list[int]) -> str:
    """The command line that reproduces this run (what results.md records)."""
    parts = ["samcl", "benchmark", "--out", str(args.out)]
    if args.quick:
        parts.append("--quick")
    if methods != list(METHODS):
        parts += ["--methods", ",".join(methods)]
    parts += ["--seeds", ",".join(map(str, seeds))]
    if args.base:
        parts += ["--base", str(args.base)]
    for flag, items in (("--data", args.domain), ("--extra", args.extra)):
        for name, path in items or ():
            parts += [flag, f"{name}={path}"]
    if args.general:
        parts += ["--general", "=".join(args.general)]
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value is not None:
            parts += [flag, str(value)]
    if args.jobs != 1:
        parts += ["--jobs", str(args.jobs)]
    return " ".join(shlex.quote(p) for p in parts)
