"""Several videos tracked together vs one after another: the per-frame cost of `SAMCL.track_videos` (frame t of
every video through the encoder as one batch, each video's own module rows, each video's memory in its own
session) against `SAMCL.track` of each video in turn, in one run, one thread.

    python benchmarks/track_batch.py                 # 2, 4 and 8 videos of 10 frames, mixed domains
    python benchmarks/track_batch.py --videos 4 --repeats 2

Videos: synthetic clips (samcl.data.synthetic.video) of the learned domains polyps and cells and the never-learned
camouflage_sand, in turn, each prompted on frame 0 with its fixed points, each run with its own domain's module
(the base for the never-learned one), so a batch of 3 or more mixes two modules and the base. The base is a
random-weight tiny SAM 2 (Hiera [1, 2, 5, 1] at 128 px; benchmarks/video.py's `tiny_sam2_video`, builtin:tiny-sam2's
architecture): the cost does not depend on the weights. Each way runs `--repeats` times interleaved and its fastest
run counts; the masks of the two ways are checked equal (batching changes the cost, not the result).

Raw output: benchmarks/results/track_batch.json and track_batch.md (with the command, machine and date).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from samcl import SAMCL, Prompt, TrainConfig
from samcl.data.synthetic.video import clip_samples, generate_clips
from samcl.io import atomic_write_bytes, atomic_write_json
from video import tiny_sam2_video  # benchmarks/video.py's random-weight tiny SAM 2

DOMAINS = ("polyps", "cells", "camouflage_sand")
LEARNED = DOMAINS[:2]
RESULTS = Path(__file__).resolve().parent / "results"


def module_of(clip) -> str:
    return next((domain for domain in LEARNED if clip.name.startswith(f"{domain}_")), "base")


def one_after_another(samcl: SAMCL, clips: list) -> tuple[float, list]:
    start = time.perf_counter()
    masks = [[f.objects[1].mask for f in samcl.track(iter(c.frames), {0: {1: Prompt.of(points=c.points)}},
                                                      force=module_of(c), num_frames=len(c.frames))] for c in clips]
    return time.perf_counter() - start, masks


def together(samcl: SAMCL, clips: list) -> tuple[float, list]:
    start = time.perf_counter()
    masks: list[list] = [[] for _ in clips]
    for number, frame in samcl.track_videos([iter(c.frames) for c in clips],
                                            [{0: {1: Prompt.of(points=c.points)}} for c in clips],
                                            force=[module_of(c) for c in clips],
                                            num_frames=[len(c.frames) for c in clips]):
        masks[number].append(frame.objects[1].mask)
    return time.perf_counter() - start, masks


def measure(samcl: SAMCL, clips: list, counts: list[int], repeats: int) -> dict:
    rows = []
    for count in counts:
        videos = clips[:count]
        frames = sum(len(c.frames) for c in videos)
        alone, batched = [], []
        for _ in range(repeats):
            seconds, expected = one_after_another(samcl, videos)
            alone.append(seconds)
            seconds, masks = together(samcl, videos)
            batched.append(seconds)
        differing = sum(int((a != b).sum()) for ours, theirs in zip(masks, expected) for a, b in zip(ours, theirs))
        domains = sorted({module_of(c) for c in videos})
        rows.append({"videos": count, "frames": frames, "domains": domains,
                     "one_after_another_ms_per_frame": 1e3 * min(alone) / frames,
                     "together_ms_per_frame": 1e3 * min(batched) / frames,
                     "together/one_after_another": min(batched) / min(alone),
                     "mask_pixels_differing": differing})
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each way (the fastest counts)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    samcl = SAMCL.create(tiny_sam2_video(args.seed), device="cpu")
    for domain in LEARNED:
        samples = clip_samples(generate_clips(domain, 2, args.seed, "train"))
        samcl.learn(domain, samples, TrainConfig(epochs=1, batch_size=4, seed=args.seed, progress=False))
    per_domain = {d: generate_clips(d, max(args.videos), args.seed, "test") for d in DOMAINS}
    clips = [per_domain[DOMAINS[i % len(DOMAINS)]][i // len(DOMAINS)] for i in range(max(args.videos))]
    result = measure(samcl, clips, sorted(args.videos), args.repeats)
    result["provenance"] = provenance(args)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "track_batch.json", result)
    atomic_write_bytes(args.out / "track_batch.md", table(result).encode())
    print(table(result))


def provenance(args) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else \
        platform.processor()
    command = "python benchmarks/track_batch.py" + (f" --videos {' '.join(map(str, args.videos))}"
                                                    if args.videos != [2, 4, 8] else "") + \
        (f" --repeats {args.repeats}" if args.repeats != 3 else "")
    return {"command": command, "seed": args.seed, "repeats": args.repeats, "commit": commit, "cpu": cpu,
            "threads": 1, "torch": torch.__version__, "numpy": np.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "base": "random-weight tiny SAM 2 at 128 px (the cost does not depend on the weights)"}


def table(result: dict) -> str:
    p = result["provenance"]
    lines = ["| videos | frames | modules in the batch | one after another (ms/frame) | together (ms/frame) | "
             "together / one after another | mask pixels differing |", "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['videos']} | {row['frames']} | {', '.join(row['domains'])} | "
                     f"{row['one_after_another_ms_per_frame']:.1f} | {row['together_ms_per_frame']:.1f} | "
                     f"{row['together/one_after_another']:.3f} | {row['mask_pixels_differing']} |")
    lines += ["", f"`{p['command']}` on {p['cpu']}, {p['threads']} thread, torch {p['torch']}, commit {p['commit']}, "
                  f"{p['date']}; fastest of {p['repeats']} interleaved runs of each way; {p['base']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
