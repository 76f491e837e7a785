"""OpenVINO's compiled shapes under prompts of every size: `segment` on the shipped tiny SAM with 1, 2, ..., N
points (each count a new decoder input shape), in a fresh process per mode, reporting the peak RSS (VmHWM) over
the warm process and the compiled models each graph holds.

    python benchmarks/openvino_shapes.py                  # 1..64 points, then 1..64 again
    python benchmarks/openvino_shapes.py --max-points 112 --json

Two modes in this run: `bounded` (the session's `ShapeCache`: at most MAX_STATIC_SHAPES static models per graph
and one dynamic one) and `unbounded`, a baseline with no limit on static models (what a session did before: a
compiled model per shape, kept forever). The second pass over the same counts shows the bounded process no longer
grows (the dynamic model has its kernels for those shapes), and the ratio of the two peaks is the point.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 2**20


def child(mode: str, store: str, max_points: int) -> dict:
    os.environ["OMP_NUM_THREADS"] = "1"
    import numpy as np
    import torch

    torch.set_num_threads(1)
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's samcl, not another
    from serve_helpers import make_store

    from samcl import SAMCL, Prompt
    from samcl.runtime import sessions

    make_store(Path(store), ["polyps"])

    if mode == "unbounded":
        sessions.MAX_STATIC_SHAPES = sessions.MAX_STATIC_BYTES = 10**18
    samcl = SAMCL.open(store, device="cpu", runtime="openvino", precision="float32")
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), np.uint8)
    rng = np.random.default_rng(1)

    def prompt(count):
        return Prompt.of(rng.uniform(0, 90, (count, 2)), rng.integers(0, 2, count))

    samcl.segment([image], [prompt(1)])  # warm: every graph compiled once
    warm = vm("VmRSS")
    clear_peak()
    peaks = []
    for _ in range(2):
        for count in range(1, max_points + 1):
            samcl.segment([image], [prompt(count)])
        peaks.append(vm("VmHWM") - warm)
    compiled = samcl.engine.backbone.compiled()
    return {"mode": mode, "warm_mib": warm / MiB, "peak_over_warm_mib": [p / MiB for p in peaks],
            "shapes": compiled["shapes"], "compiled_mib": compiled["bytes"] / MiB}


def vm(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def clear_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-points", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.max_points)))
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        env["SAMCL_CACHE_DIR"] = str(Path(tmp) / "cache")
        rows = [json.loads(subprocess.run([sys.executable, __file__, "--child", mode, str(Path(tmp) / mode),
                                           "--max-points",
                                           str(args.max_points)], env=env, check=True, stdout=subprocess.PIPE,
                                          text=True).stdout.splitlines()[-1]) for mode in ("unbounded", "bounded")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"segment with 1..{args.max_points} points, twice, on OpenVINO (tiny SAM, one thread)")
    for row in rows:
        first, second = row["peak_over_warm_mib"]
        print(f"  {row['mode']:>9}: peak over warm {first:7.1f} MiB after one pass, {second:7.1f} after two; "
              f"compiled models {row['shapes']}, {row['compiled_mib']:.1f} MiB counted")
    ratio = rows[1]["peak_over_warm_mib"][1] / max(rows[0]["peak_over_warm_mib"][1], 1e-9)
    print(f"  bounded / unbounded peak growth: {ratio:.3f}")


if __name__ == "__main__":
    main()
