"""Learn time of one domain: 1 process vs 2 processes (torch.distributed, gloo on CPU), same global batch.

    python benchmarks/distributed_timing.py [--images 32 --epochs 2 --batch-size 2 --repeats 2]

Runs `SAMCL.learn` (no store) on a small random SAM and synthetic images:
  baseline   1 process, 1 thread,  batch 2b
  threads    1 process, 2 threads, batch 2b      (the same cores as the 2-process run, used by intra-op threads)
  2 procs    2 processes x 1 thread, batch b each (DistributedDataParallel, gloo)
and prints seconds, images/s and the ratio to the baseline measured in the same run. Learn time is the
median over repeats of the wall time of `learn` (training, gathering, selector), without process start-up.
On a machine whose cores are busy with other work the 2-process figure is only as good as the cores it gets.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from samcl import SAMCL, SelectorConfig, TrainConfig
from samcl.backbone import SamBackbone
from samcl.data import Sample
from samcl.learning import distributed

#: A small SAM (grid 16 x 16, 6 blocks): big enough that a step is mostly compute, small enough for CPU.
SMALL_SAM = {
    "vision_config": {"image_size": 128, "patch_size": 8, "hidden_size": 64, "num_hidden_layers": 6,
                      "num_attention_heads": 2, "window_size": 4, "global_attn_indexes": [2, 5],
                      "output_channels": 32, "mlp_dim": 128, "num_pos_feats": 16, "initializer_range": 0.02},
    "prompt_encoder_config": {"image_size": 128, "patch_size": 8, "hidden_size": 32},
    "mask_decoder_config": {"hidden_size": 32, "mlp_dim": 64, "num_attention_heads": 2, "iou_head_hidden_dim": 32},
}


def synthetic(count: int, seed: int = 0) -> list[Sample]:
    """Noisy images with one bright rectangle each (the mask)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        image = rng.integers(0, 120, (96, 128, 3)).astype(np.uint8)
        mask = np.zeros((96, 128), bool)
        y, x = int(rng.integers(0, 60)), int(rng.integers(0, 80))
        mask[y:y + 30, x:x + 40] = True
        image[mask] = 230
        out.append(Sample(f"img{i:03d}", image, mask, None, None))
    return out


def learn_seconds(args, backbone: SamBackbone, samples: list[Sample], batch_size: int) -> list[float]:
    """Wall time of `learn` for each repeat (a fresh module set each time)."""
    times = []
    for _ in range(args.repeats):
        samcl = SAMCL.create(backbone, None, rank=args.rank, device="cpu",
                             selector=SelectorConfig(samples_per_domain=min(len(samples), 16), epochs=5))
        config = TrainConfig(epochs=args.epochs, batch_size=batch_size, progress=False)
        start = time.perf_counter()
        samcl.learn("domain", samples, config)
        times.append(time.perf_counter() - start)
    return times


def worker(rank: int, world: int, port: int, args, out: Path) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    distributed.init("cpu")
    backbone = SamBackbone.from_config(SMALL_SAM, seed=0)
    times = learn_seconds(args, backbone, synthetic(args.images), args.batch_size)
    if rank == 0:
        out.write_text(json.dumps(times))
    distributed.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2, help="per process in the 2-process run (b)")
    parser.add_argument("--rank", type=int, default=4, help="AugModule rank")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    world = 2
    global_batch = args.batch_size * world
    backbone = SamBackbone.from_config(SMALL_SAM, seed=0)
    samples = synthetic(args.images)
    rows = {}
    torch.set_num_threads(1)
    rows["1 process x 1 thread"] = learn_seconds(args, backbone, samples, global_batch)
    torch.set_num_threads(2)
    rows["1 process x 2 threads"] = learn_seconds(args, backbone, samples, global_batch)
    torch.set_num_threads(1)  # before forking: the workers must not inherit a busy OpenMP pool
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "times.json"
        method = "fork" if "fork" in torch.multiprocessing.get_all_start_methods() else "spawn"
        torch.multiprocessing.start_processes(worker, args=(world, free_port(), args, out), nprocs=world,
                                              start_method=method)
        rows[f"{world} processes x 1 thread (gloo)"] = json.loads(out.read_text())
    images = args.images // global_batch * global_batch * args.epochs  # images trained on per learn
    base = statistics.median(rows["1 process x 1 thread"])
    result = {name: {"seconds": statistics.median(t), "images_per_s": images / statistics.median(t),
                     "ratio_to_1_process": statistics.median(t) / base} for name, t in rows.items()}
    if args.json:
        print(json.dumps({"global_batch": global_batch, "images": args.images, "epochs": args.epochs,
                          "cpus": os.cpu_count(), "results": result}))
        return 0
    print(f"learn one domain: {args.images} images, {args.epochs} epochs, global batch {global_batch}, "
          f"{os.cpu_count()} CPUs visible (median of {args.repeats})")
    for name, r in result.items():
        print(f"  {name:32s} {r['seconds']:7.2f} s  {r['images_per_s']:7.1f} images/s  "
              f"time ratio {r['ratio_to_1_process']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
