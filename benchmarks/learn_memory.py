"""Peak memory of `samcl learn` on many small images, against its prefix-cache budget (`--cache-mb`).

    python benchmarks/learn_memory.py                      # 10,000 images of 16 x 12 px, the default budget and 64 MiB
    python benchmarks/learn_memory.py --images 2000 --budgets 1024,0

Each run is a fresh `samcl learn` process on the shipped tiny SAM (--epochs 1 --batch-size 64); its peak resident
memory comes from the kernel (getrusage of the finished child). Printed: images, budget, peak RSS, the part above
an empty-store `samcl info`-sized baseline (the same interpreter importing torch and the model), and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def write_data(folder: Path, count: int, seed: int = 0) -> Path:
    """count images of 16 x 12 px with a small rectangle mask each (PNG), in the split layout."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(count):
        image = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        mask = np.zeros((12, 16), np.uint8)
        y, x = rng.integers(0, 6), rng.integers(0, 8)
        mask[y:y + 5, x:x + 7] = 255
        Image.fromarray(image).save(folder / "images" / f"{i:05d}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{i:05d}.png")
    return folder


def child_peak(argv: list[str]) -> tuple[float, float, int]:
    """(peak RSS MiB, wall s, exit code) of a child process (each run measured alone: one child at a time)."""
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        print(done.stderr[-2000:], file=sys.stderr)
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: measure each budget in its own wrapper process
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, wall, done.returncode


def measure(args_json: str) -> None:
    """Inner mode: run one command and print its peak RSS (so every measurement starts from a fresh maximum)."""
    argv = json.loads(args_json)
    peak, wall, code = child_peak(argv)
    print(json.dumps({"peak_mib": peak, "wall": wall, "code": code}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--budgets", default="default,64", help="MiB per run, comma-separated ('default': no flag)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return 0
    env_python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        data = write_data(tmp / "data", args.images)
        print(f"{args.images} images of 16 x 12 px written in {time.perf_counter() - started:.0f} s")
        baseline = [env_python, "-c", "import samcl.learning.learner, samcl.backbone as b; b.load_backbone(None)"]
        runs = {"baseline (import + tiny SAM)": baseline}
        for budget in args.budgets.split(","):
            argv = [env_python, "-m", "samcl.cli", "--device", "cpu", "learn", str(tmp / f"store-{budget}"),
                    "--domain", "many", "--data", str(data), "--epochs", "1", "--batch-size", "64", "--json"]
            if budget != "default":
                argv += ["--cache-mb", budget]
            runs[f"learn, --cache-mb {budget}"] = argv
        print(f"{'run':34s} {'peak RSS':>10s} {'above baseline':>15s} {'wall':>8s}")
        base_peak = None
        for label, argv in runs.items():
            out = subprocess.run([env_python, __file__, "--measure", json.dumps(argv)], capture_output=True,
                                 text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            result = json.loads(out.stdout.strip().splitlines()[-1])
            base_peak = result["peak_mib"] if base_peak is None else base_peak
            flag = "" if result["code"] == 0 else f"  (exit {result['code']})"
            print(f"{label:34s} {result['peak_mib']:8.0f} MiB {result['peak_mib'] - base_peak:11.0f} MiB "
                  f"{result['wall']:7.0f} s{flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
