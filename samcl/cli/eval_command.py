"""`samcl eval`: a store's scores on test folders, or the simulated clicker's (--clicks)."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import SamclError
from ..io import print_json
from .checks import dataset, check_device
from .store_commands import table


def cmd_eval(args) -> int:
    from .. import SAMCL
    from ..store import BASE_MODEL

    folders: dict[str, str] = {}
    for name, path in args.data:
        if name in folders:
            raise SamclError(f"--data {name}: given twice ({folders[name]} and {path}); one folder per domain")
        folders[name] = path
    check_device(args.device)
    datasets = {name: dataset(Path(path), "test", args.seed, args.points_frame) for name, path in folders.items()}
    samcl = SAMCL.open(args.store, base=args.base, device=args.device, precision=args.precision,
                       runtime=args.runtime)
    base_name = next((d.name for d in samcl.module_set.domains if d.kind == "no_module"), None)
    known = {*samcl.domains, BASE_MODEL}
    for name in folders:
        if name not in known:
            print(f"samcl: warning: --data {name}: not a domain of this store (learned: "
                  f"{', '.join(samcl.domains) or 'none'}); its masks are scored, selector accuracy is not",
                  file=sys.stderr)
    if args.clicks is not None:
        return _eval_clicks(args, samcl, datasets, base_name)
    results = {}
    for name, data in datasets.items():
        truth = BASE_MODEL if name == base_name else (name if name in known else None)
        result = samcl.evaluate(data, truth=truth, progress=not args.json)
        if base_name is not None:  # results name the domain without a module 'base'; the user named it
            result["chosen"] = {(base_name if k == BASE_MODEL else k): v for k, v in result["chosen"].items()}
        result.setdefault("selector_accuracy", None)
        results[name] = result
    if args.json:
        print_json({"domains": results, "learned": samcl.domains, "precision": samcl.precision})
        return 0
    rows = [[name, r["images"], f"{r['iou']:.4f}", f"{r['f1']:.4f}", f"{r['mae']:.4f}",
             "-" if r["selector_accuracy"] is None else f"{r['selector_accuracy']:.3f}",
             ", ".join(f"{k}:{v}" for k, v in r["chosen"].items())] for name, r in results.items()]
    print(table(rows, ["domain", "images", "IoU", "F1", "MAE", "selector acc", "chosen"]))
    print(f"precision {samcl.precision}")
    return 0


def _eval_clicks(args, samcl, datasets: dict, base_name: str | None) -> int:
    """`samcl eval --clicks N`: the simulated clicker (`samcl.bench.clicks`) per domain, for the selector's pick
    (routed), the base, and the domain's own module (oracle) where the domain is learned."""
    from ..bench import evaluate_clicks
    from ..store import BASE_MODEL

    results: dict[str, dict] = {}
    for name, data in datasets.items():
        runs = {"routed": None, "base": BASE_MODEL}
        if name in samcl.domains and name != base_name:
            runs["oracle"] = name
        results[name] = {run: evaluate_clicks(samcl, data, force=force, max_clicks=args.clicks,
                                              progress=not args.json, desc=f"{name} {run}")
                         for run, force in runs.items()}
    if args.json:
        print_json({"clicks": args.clicks, "domains": results, "learned": samcl.domains,
                    "precision": samcl.precision})
        return 0
    keys = [k for k in next(iter(next(iter(results.values())).values())) if k.startswith(("miou", "noc"))]
    rows = [[name, run, r["images"], *(f"{r[k]:.3f}" if k.startswith("miou") else f"{r[k]:.2f}" for k in keys)]
            for name, runs in results.items() for run, r in runs.items()]
    print(table(rows, ["domain", "run", "images", *(k.replace("miou", "mIoU").replace("noc", "NoC") for k in keys)]))
    print(f"clicks {args.clicks} (NoC: clicks to reach the IoU, {args.clicks} when never reached); "
          f"precision {samcl.precision}")
    return 0
