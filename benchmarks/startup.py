"""Start-up time of the `samcl` command (wall seconds, best of N), as a user runs it: a fresh interpreter each.

    python benchmarks/startup.py            # --help, --version, info on a fresh store; segment on the tiny SAM
    python benchmarks/startup.py --runs 5

Goals (issue 13): `samcl --help` and `samcl info` under 1 s, `samcl segment` on the tiny SAM under 2 s.
Prints a table; asserts nothing (timings depend on the machine and its load).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def wall(argv: list[str], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "samcl.cli", *argv], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from samcl.data import synthetic

        samples = synthetic.generate("polyps", 4, 0, "train")
        images, masks = tmp / "data" / "images", tmp / "data" / "masks"
        images.mkdir(parents=True)
        masks.mkdir()
        for s in samples:
            Image.fromarray(s.image).save(images / f"{s.name}.png")
            Image.fromarray(s.mask.astype(np.uint8) * 255).save(masks / f"{s.name}.png")
        subprocess.run([sys.executable, "-m", "samcl.cli", "learn", str(tmp / "set"), "--domain", "polyps", "--data",
                        str(tmp / "data"), "--epochs", "1", "--json"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        photo = tmp / "photo.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(photo)
        cases = {
            "samcl --help": ["--help"],
            "samcl --version": ["--version"],
            "samcl info SET": ["info", str(tmp / "set")],
            "samcl segment (tiny SAM, 640x480)": ["segment", str(tmp / "set"), str(photo), "--point", "320,240",
                                                  "--out", str(tmp / "m.png")],
        }
        baseline = wall_python(runs)
        print(f"{'command':40} {'wall s (best of %d)' % runs:>20}")
        print(f"{'python -c pass (interpreter alone)':40} {baseline:20.2f}")
        for name, argv in cases.items():
            print(f"{name:40} {wall(argv, runs):20.2f}")


def wall_python(runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        best = min(best, time.perf_counter() - start)
    return best


if __name__ == "__main__":
    main()
