"""Compare two `samcl benchmark` results.json files: did a rerun reproduce the committed table?

    python benchmarks/compare.py benchmarks/results/results.json /tmp/rerun/results.json

Prints whether the metrics digests match, then, for every (method, seed) both files hold, the largest absolute
difference over every score of the continual matrix (IoU, in points), and per method the difference of the
table's headline numbers (AA, FM, FT, selector accuracy; means over the seeds both files share). Exit status 0
when the two agree within --tolerance IoU points everywhere (default 0: bit-for-bit after 6-decimal rounding),
1 otherwise, 2 for unreadable input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def load(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"{path}: not a readable results.json ({exc})")
    if not isinstance(report, dict) or "methods" not in report or "metrics_sha256" not in report:
        fail(f"{path}: not a samcl benchmark results.json (no methods / metrics_sha256)")
    return report


def fail(message: str) -> None:
    print(f"compare: {message}", file=sys.stderr)
    raise SystemExit(2)


def max_matrix_diff(a: list[list], b: list[list]) -> float:
    """Largest |a - b| over the matrix, in IoU points; inf when the shapes or missing values differ."""
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b)):
        return math.inf
    worst = 0.0
    for row_a, row_b in zip(a, b):
        for x, y in zip(row_a, row_b):
            if (x is None) != (y is None):
                return math.inf
            if x is not None:
                worst = max(worst, abs(x - y) * 100)
    return worst


def headline(data: dict, seeds: list[str]) -> dict[str, float | None]:
    """Means over `seeds` of AA, FM (both), FT and selector accuracy, in points."""
    out = {}
    for key in ("AA", "FM_reference", "FM_best", "FT"):
        values = [data["seeds"][s]["continual"]["iou"][key] for s in seeds]
        out[key] = 100 * sum(values) / len(values)
    selector = [data["seeds"][s].get("selector_accuracy") for s in seeds]
    out["selector"] = None if any(v is None for v in selector) else 100 * sum(selector) / len(selector)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.0, help="IoU points allowed per score (default 0)")
    args = parser.parse_args(argv)
    a, b = load(args.first), load(args.second)

    same_digest = a["metrics_sha256"] == b["metrics_sha256"]
    print(f"metrics digest: {a['metrics_sha256'][:16]} vs {b['metrics_sha256'][:16]} -> "
          f"{'identical' if same_digest else 'different'}")
    code_a, code_b = a["config"].get("code_sha256"), b["config"].get("code_sha256")
    if code_a != code_b:
        print(f"note: made by different samcl code ({str(code_a)[:12]} vs {str(code_b)[:12]})")

    worst_overall = 0.0
    rows = []
    for method, data_a in a["methods"].items():
        data_b = b["methods"].get(method)
        if data_b is None:
            continue
        seeds = [s for s in data_a["seeds"] if s in data_b["seeds"]]
        if not seeds:
            continue
        worst = max(max_matrix_diff(data_a["seeds"][s]["matrix_iou"], data_b["seeds"][s]["matrix_iou"])
                    for s in seeds)
        worst_overall = max(worst_overall, worst)
        ha, hb = headline(data_a, seeds), headline(data_b, seeds)
        deltas = {k: (None if ha[k] is None or hb[k] is None else hb[k] - ha[k]) for k in ha}
        rows.append((method, len(seeds), worst, deltas))
    if not rows:
        print("no (method, seed) in common")
        return 1

    print(f"\n{'method':<16}{'seeds':>6}{'max |Δ| score':>15}{'ΔAA':>8}{'ΔFM ref':>9}{'ΔFM best':>10}"
          f"{'ΔFT':>8}{'Δselector':>11}   (IoU / accuracy points, second - first)")
    for method, count, worst, d in rows:
        cells = [f"{d[k]:+.2f}" if d[k] is not None else "–" for k in ("AA", "FM_reference", "FM_best", "FT",
                                                                             "selector")]
        print(f"{method:<16}{count:>6}{worst:>15.3f}{cells[0]:>8}{cells[1]:>9}{cells[2]:>10}{cells[3]:>8}"
              f"{cells[4]:>11}")
    agree = worst_overall <= args.tolerance
    print(f"\nlargest score difference: {worst_overall:.4f} IoU points -> "
          f"{'agree' if agree else 'differ'} (tolerance {args.tolerance:g})")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
