"""What reading the authors' files through the restricted unpickler costs, against torch.load (which would run
their pickles) on the same files in the same run; and the reference heat's rendering and placement cost against
samcl's own heat, at ViT-B's 64 x 64 grid.

    nice -n 10 python benchmarks/reference_import.py

Files are written here with the authors' pickle structure (tests/reference_files.py): a ViT-B module file
(61,524 values) and a 768-wide selector with 6 classes (their Module_Selector.pth's size).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference_files import fake_authors_package, selector_state, write_module_file  # noqa: E402

from samcl.method import AugModule, AugModuleConfig, HeatConfig, Injection, render_heat  # noqa: E402
from samcl.method.prompts import render_reference_heat  # noqa: E402
from samcl.reference import load_reference_file  # noqa: E402


def best(fn, repeats: int = 20) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        module, selector = Path(folder) / "Kvasir.pth", Path(folder) / "Module_Selector.pth"
        write_module_file(module, 768, [7, 8, 9, 10, 11], neck=256)
        torch.save(selector_state(768, 6), selector)
        for path in (module, selector):
            ours = best(lambda: load_reference_file(path))
            with fake_authors_package("module.SAMCL"):  # torch.load needs their classes importable
                theirs = best(lambda: torch.load(path, weights_only=False))
            print(f"{path.name:22s} {path.stat().st_size:>9,} B  restricted {ours * 1e3:7.2f} ms  "
                  f"torch.load {theirs * 1e3:7.2f} ms  ratio {ours / theirs:5.2f}")
    points = torch.rand(8, 3, 2) * 1024
    labels = torch.ones(8, 3)
    ref = best(lambda: render_reference_heat(points, labels, (64, 64), 16.0))
    own = best(lambda: render_heat(points, labels, None, (64, 64), 16.0, HeatConfig()))
    print(f"heat, batch 8, 64 x 64    reference {ref * 1e3:7.2f} ms  samcl {own * 1e3:7.2f} ms  ratio {ref / own:5.2f}")
    x = torch.randn(8, 64 * 64, 768)
    placed = {}
    for mode in ("samcl", "reference"):
        config = AugModuleConfig(dim=768, adapted_blocks=(7, 8, 9, 10, 11), neck_channels=256, heat_mode=mode)
        params = AugModule(config).params()
        heat = render_reference_heat(points, labels, (64, 64), 16.0)

        def step(config=config, params=params, heat=heat):
            inj = Injection(config, params, heat)
            for block, window in zip(config.adapted_blocks, (14, 0, 14, 14, 0)):  # ViT-B: 8 and 11 global
                inj.block_delta(block, x, window)
            inj.neck_deltas()

        placed[mode] = best(step, repeats=3)
    print(f"module deltas, batch 8    reference {placed['reference'] * 1e3:7.1f} ms  samcl {placed['samcl'] * 1e3:7.1f} ms"
          f"  ratio {placed['reference'] / placed['samcl']:5.2f}")


if __name__ == "__main__":
    main()
