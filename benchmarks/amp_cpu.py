"""`learn --amp bf16` on a CPU: step time and loss against float32, SAM ViT-B config (random weights), one thread.

    nice -n 10 python benchmarks/amp_cpu.py                   # 512 px, 6 steps each
    nice -n 10 python benchmarks/amp_cpu.py --size 1024 --steps 3

Both runs start from the same module, images, masks and points, and take the same Adam steps through the
trainer's own loss (`samcl.learning.trainer.module_loss`: adapted blocks, neck and decoder, autocast to bfloat16 for
"bf16"); the prefix is computed once, in float32, as the trainer caches it. Prints the CPU time per step of each,
their ratio, and both loss curves side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from latency import vit_b_backbone

from samcl import TrainConfig
from samcl.inference.precision import native_bf16
from samcl.learning import module_loss
from samcl.method import AugModule, config_for


def batch(backbone, count: int, seed: int):
    """Random images' prefix tokens (float32), square masks and three points inside each, model-input frame."""
    generator = torch.Generator().manual_seed(seed)
    size = backbone.image_size
    pixels = torch.randn(count, 3, size, size, generator=generator)
    masks = torch.zeros(count, size, size)
    points = torch.zeros(count, 3, 2)
    for j in range(count):
        x0, y0 = (torch.randint(0, size // 2, (2,), generator=generator)).tolist()
        masks[j, y0:y0 + size // 3, x0:x0 + size // 3] = 1
        points[j] = torch.tensor([x0, y0]) + torch.rand(3, 2, generator=generator) * (size // 3)
    return pixels, masks, points


def train(backbone, tokens, masks, points, amp: str, steps: int, selector_block: int) -> dict:
    aug = config_for(backbone.site)
    module = AugModule(aug, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.005)
    config = TrainConfig(amp=amp, progress=False)
    losses, cpu = [], []
    for _ in range(steps):
        start = time.process_time()
        loss = module_loss(backbone, module(), aug, tokens, masks, points, selector_block + 1, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        cpu.append(time.process_time() - start)
        losses.append(loss.item())
    return {"losses": losses, "cpu_seconds": cpu}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="input size in pixels (ViT-B config otherwise)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    backbone = vit_b_backbone(args.size)
    selector_block = backbone.default_selector_block
    pixels, masks, points = batch(backbone, args.batch, 0)
    with torch.no_grad():
        tokens = backbone.prefix(pixels, selector_block)
    load = os.getloadavg()[0]
    runs = {amp: train(backbone, tokens, masks, points, amp, args.steps, selector_block) for amp in ("none", "bf16")}
    step = {amp: statistics.median(r["cpu_seconds"][1:] or r["cpu_seconds"]) for amp, r in runs.items()}
    report = {"size": args.size, "batch": args.batch, "steps": args.steps, "native_bf16": native_bf16(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "load_before": load,
              "load_after": os.getloadavg()[0], "runs": runs, "step_cpu_seconds": step,
              "ratio_bf16_to_float32": step["bf16"] / step["none"]}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"SAM ViT-B config at {args.size} px, batch {args.batch}, {args.steps} steps, 1 thread, CPU capability "
          f"{report['cpu_capability']}, native bfloat16: {report['native_bf16']}; load {load:.2f} -> "
          f"{report['load_after']:.2f}")
    print(f"CPU s/step (median after the first): float32 {step['none']:.2f}, bf16 autocast {step['bf16']:.2f}; "
          f"bf16 / float32 = {report['ratio_bf16_to_float32']:.2f}")
    print(f"{'step':>4} {'loss float32':>13} {'loss bf16':>11} {'difference':>11}")
    for i, (a, b) in enumerate(zip(runs["none"]["losses"], runs["bf16"]["losses"]), start=1):
        print(f"{i:>4} {a:>13.5f} {b:>11.5f} {b - a:>+11.5f}")
    print(f"max |loss difference| {np.max(np.abs(np.subtract(runs['bf16']['losses'], runs['none']['losses']))):.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
