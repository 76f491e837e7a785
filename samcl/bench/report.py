"""The benchmark's report: results.json's content (per method and seed, then mean and sample std over seeds),
the digest of every reproducible number (`metrics_digest`), and the summary table the command prints."""

from __future__ import annotations

import hashlib
import json
import math
import platform
from dataclasses import asdict

import numpy as np
import torch

from .. import __version__
from .config import BenchmarkConfig
from .methods import METHODS, BenchmarkSize, strengths


def mean_std(values: list[float]) -> dict:
    clean = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not clean:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(clean)), "std": float(np.std(clean, ddof=1)) if len(clean) > 1 else 0.0,
            "n": len(clean)}


def clean(value):
    """NaN -> None, recursively (results.json is strict JSON)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def build_report(config: BenchmarkConfig, size: BenchmarkSize, rates: dict, results: dict, matched: int,
                 base: str) -> dict:
    methods: dict[str, dict] = {}
    first = next(iter(results.values()))
    learned, extra = first.order, first.extra
    for method in config.methods:
        runs = {job.seed: r for job, r in results.items() if job.method == method}
        seeds = {}
        for seed, result in runs.items():
            summary = result.summary()
            final = summary["final"]
            seeds[str(seed)] = {
                "continual": {metric: summary[metric] for metric in ("iou", "f1", "mae")},
                "final": {name: {k: final[name][k] for k in ("iou", "f1", "mae", "selector_accuracy", "to_base")
                                 if k in final[name]}
                          for name in learned + extra},
                "selector_accuracy": summary.get("selector_accuracy"),
                "matrix_iou": [[row[name]["iou"] for name in learned + extra] for row in result.rows],
                "storage": result.storage,
                "seconds": result.seconds,
                "learn": result.learn_stats,
            }
        agg = {
            "continual": {metric: {key: mean_std([s["continual"][metric][key] for s in seeds.values()])
                                   for key in ("AA", "FM_reference", "FM_best", "FT")} for metric in ("iou", "f1", "mae")},
            "final": {name: {k: mean_std([s["final"][name].get(k) for s in seeds.values()])
                             for k in ("iou", "f1", "mae", "selector_accuracy", "to_base")} for name in learned + extra},
            "final_mean": {k: mean_std([float(np.mean([s["final"][n][k] for n in learned])) for s in seeds.values()])
                           for k in ("iou", "f1", "mae")},
            "selector_accuracy": mean_std([s["selector_accuracy"] for s in seeds.values()]),
            "storage": {k: mean_std([s["storage"].get(k, 0) for s in seeds.values()])
                        for k in ("module_total", "selector", "buffer", "replay", "fisher", "total")},
            "seconds": {k: mean_std([s["seconds"].get(k) for s in seeds.values()])
                        for k in ("learn", "eval", "learn_cpu", "eval_cpu")},
        }
        family = METHODS[method].family
        methods[method] = {"description": METHODS[method].description, "family": family,
                           "lr": rates[family]["lr"] if family else None, "seeds": seeds, "aggregate": agg}
    report = {
        "command": config.command,
        "config": {
            "suite": config.suite.describe(), "base": base, "size": asdict(size), "methods": config.methods,
            "seeds": config.seeds, "order": learned, "extra": extra,
            "replay_bytes": {"replay": size.replay_bytes, "replay-matched": matched},
            "strengths": strengths(),
            "resize": "longest side + pad (SAM's convention), scored at the original size",
            "fm_definitions": {"FM_reference": "sum_{i<t} (a[i][i] - a[t][i]) / (t + 1) (the reference code)",
                               "FM_best": "mean_{i<t} (max_{i<=s<t} a[s][i] - a[t][i]) (best score since learned, / t)"},
            "std": "sample standard deviation over seeds (ddof = 1)",
            "threads": "1 per run", "torch": torch.__version__, "samcl": __version__,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        },
        "learning_rates": rates,
        "methods": methods,
    }
    report["metrics_sha256"] = metrics_digest(report)
    return clean(report)


def metrics_digest(report: dict) -> str:
    """sha256 over every reproducible number (scores of every step, storage), rounded to 6 decimals: the same
    seeds on the same machine type give the same digest (timings are left out)."""
    def rounded(value):
        if isinstance(value, float):
            return None if math.isnan(value) else round(value, 6)
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in sorted(value.items())}
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return value

    body = {m: {s: {"matrix_iou": d["matrix_iou"], "final": d["final"], "storage": d["storage"]}
                for s, d in data["seeds"].items()} for m, data in report["methods"].items()}
    return hashlib.sha256(json.dumps(rounded(body), sort_keys=True).encode()).hexdigest()


def pm(stat: dict, scale: float = 100.0, digits: int = 1) -> str:
    """"mean ± std"; the mean alone from a single run (a spread over one seed would read as zero)."""
    if stat is None or stat.get("mean") is None:
        return "–"
    if stat.get("n", 2) < 2:
        return f"{stat['mean'] * scale:.{digits}f}"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


def human_bytes(value: float | None) -> str:
    if not value:
        return "0"
    for unit, factor in (("MiB", 2**20), ("KiB", 2**10)):
        if value >= factor:
            return f"{value / factor:.2f} {unit}"
    return f"{value:.0f} B"


def format_summary(report: dict) -> str:
    rows = []
    for name, data in report["methods"].items():
        agg = data["aggregate"]
        iou = agg["continual"]["iou"]
        rows.append([name, pm(iou["AA"]), pm(iou["FM_best"]), pm(iou["FT"]), pm(agg["selector_accuracy"]),
                     human_bytes(agg["storage"]["total"]["mean"]), f"{data['lr']:g}" if data["lr"] else "–"])
    header = ["method", "AA (IoU %)", "FM best", "FT", "selector", "storage", "lr"]
    cells = [header, *rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"digest {report['metrics_sha256'][:16]}  ({report['seconds']:.0f} s)")
    return "\n".join(lines)
