"""Video propagation with the domain's module: J, F and J&F (DAVIS) per domain for base SAM 2, samcl with the routed
module and with the oracle module, the per-frame cost against base propagation, and how often frames would route
differently from their video.

    python benchmarks/video.py                      # 12 train / 6 test clips of 10 frames per domain
    python benchmarks/video.py --quick              # 2 / 1 clips: the script end to end in about a minute
    python benchmarks/video.py --base random        # on a random-weight tiny SAM 2 instead (the path and its cost)

Domains (samcl.data.synthetic.video: the image domains' look and mask convention, the target moving and deforming,
a distractor crossing): learned polyps and cells (each from its training clips' frames as images), never learned
camouflage_sand. Each seed (`--seeds`, default 0 1 2) draws its own clips and trains its own modules; the table is
the seeds' mean. Every clip is prompted on frame 0 with its 3 fixed points and scored without its first and last
frames (as DAVIS).

The base is `builtin:tiny-sam2` (samcl/assets/tiny-sam2: Hiera [1, 2, 5, 1] at 128 px with its video memory,
pretrained by scripts/pretrain_tiny_sam2.py on the synthetic general domain only; no pretrained SAM 2 can be
downloaded here). It segments and tracks its own general domain (test IoU 0.848, J&F 0.691: its MODEL_CARD.md)
and the target domains less well: the J&F numbers say what SAMCL's modules add to *it* on synthetic video, not
what they add to Meta's SAM 2. `--base random` runs the same on a random-weight tiny SAM 2 of the same
architecture (transformers' own initialisation, seeded), which segments nothing: then only the path, the routing
agreement and the cost per frame mean something. The run measures
  J&F            base (no module), routed (the selector picks the video's module) and oracle (the domain's module)
  routed / base   samcl with the routed module against samcl's base propagation (no module), same frames, same run
                  (the routed run is the base wherever the selector's open-set fallback sent the video to base)
  oracle / base   samcl with the domain's module forced (the module always runs) against the same base
  base / hf       samcl's base propagation against transformers' own Sam2VideoModel propagation of the same frames
Timings: one thread; per clip, each propagation runs `--repeats` times interleaved (base, routed, oracle,
transformers) and its fastest run counts (the least disturbed by other work on a shared machine); the ratios are
medians over the clips.

Raw output: benchmarks/results/video.json and video.md (with the command, machine and date).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from transformers import Sam2VideoConfig, Sam2VideoModel
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from samcl import SAMCL, Prompt, TrainConfig
from samcl.backbone import BUILTIN_TINY_SAM2, TINY_SAM2_DIR, Sam2VideoBackbone, load_backbone
from samcl.bench.davis import sequence_scores
from samcl.data.synthetic.video import clip_samples, generate_clips
from samcl.inference.precision import cpu_name
from samcl.io import atomic_write_bytes, atomic_write_json

LEARNED = ("polyps", "cells")
UNSEEN = ("camouflage_sand",)
RESULTS = Path(__file__).resolve().parent / "results"


BASES = {"tiny-sam2": "pretrained builtin:tiny-sam2 (synthetic general domain only)",
         "random": "random-weight tiny SAM 2 (no pretrained SAM 2 available): absolute J&F is meaningless"}


def base_backbone(kind: str, seed: int) -> Sam2VideoBackbone:
    """The video base: the shipped pretrained tiny SAM 2, or a random-weight one of the same architecture."""
    if kind == "random":
        return tiny_sam2_video(seed)
    return load_backbone(BUILTIN_TINY_SAM2, video=True)


def tiny_sam2_video(seed: int) -> Sam2VideoBackbone:
    """A random-weight tiny SAM 2 with its memory: the shipped builtin:tiny-sam2's architecture (its config.json, made
    by scripts/pretrain_tiny_sam2.py's `build_config`; see the module doc), transformers' initialisation, seeded."""
    config = Sam2VideoConfig.from_pretrained(TINY_SAM2_DIR)
    torch.manual_seed(seed)
    return Sam2VideoBackbone(Sam2VideoModel(config))


def hf_propagation(backbone: Sam2VideoBackbone, clip) -> float:
    """transformers' own offline propagation of the clip (its session holding the preprocessed frames), masks brought
    to the frame's size as samcl's are: seconds."""
    start = time.perf_counter()
    pixels = torch.stack([backbone.preprocess(frame)[0] for frame in clip.frames])
    height, width = clip.frames[0].shape[:2]
    session = Sam2VideoInferenceSession(video=pixels, video_height=height, video_width=width, dtype=torch.float32)
    scale = torch.tensor([backbone.image_size / width, backbone.image_size / height])
    session.add_point_inputs(session.obj_id_to_idx(1), 0, {
        "point_coords": (torch.as_tensor(clip.points, dtype=torch.float32) * scale)[None, None],
        "point_labels": torch.ones(1, 1, len(clip.points), dtype=torch.int32)})
    session.obj_with_new_inputs = [1]
    for output in backbone.video.propagate_in_video_iterator(session, start_frame_idx=0):
        masks = torch.nn.functional.interpolate(output.pred_masks.float(), (height, width), mode="bilinear",
                                                align_corners=False) > 0  # as its processor's post_process_masks
        masks.numpy()
    return time.perf_counter() - start


def run_clip(samcl: SAMCL, clip, force: str | None, route_frames: bool = False) -> tuple[list, float, list]:
    """(masks, seconds, per-frame (video's module, frame's own pick)) of one propagation."""
    prompts = {0: {1: Prompt.of(points=clip.points)}}
    start = time.perf_counter()
    frames = list(samcl.track(iter(clip.frames), prompts, force=force, num_frames=len(clip.frames),
                              route_frames=route_frames))
    seconds = time.perf_counter() - start
    return [f.objects[1].mask for f in frames], seconds, [(f.domain, f.frame_domain) for f in frames]


def measure(samcl: SAMCL, backbone, clips: dict, repeats: int) -> dict:
    rows, cost = {}, {"routed/base": [], "oracle/base": [], "base/hf": []}
    disagreements, routed_frames, video_picks, closed_set = 0, 0, {}, {}
    for domain, test in clips.items():
        scores = {"base": [], "routed": [], "oracle": []}
        for clip in test:
            per_frame = len(clip.frames)
            times = {"hf": [], "base": [], "routed": [], "oracle": []}
            for _ in range(repeats):
                times["hf"].append(hf_propagation(backbone, clip))
                base, seconds, _ = run_clip(samcl, clip, "base")
                times["base"].append(seconds)
                routed, seconds, _ = run_clip(samcl, clip, None)
                times["routed"].append(seconds)
                oracle, seconds, _ = run_clip(samcl, clip, domain if domain in LEARNED else "base")
                times["oracle"].append(seconds)
            hf_seconds, base_seconds, routed_seconds, oracle_seconds = (min(times[k]) for k in times)
            picks = run_clip(samcl, clip, None, route_frames=True)[2]  # the per-frame routing, measured untimed
            for name, masks in (("base", base), ("routed", routed), ("oracle", oracle)):
                scores[name].append(sequence_scores(masks, clip.masks))
            cost["routed/base"].append((routed_seconds / per_frame) / (base_seconds / per_frame))
            if domain in LEARNED:
                cost["oracle/base"].append((oracle_seconds / per_frame) / (base_seconds / per_frame))
            cost["base/hf"].append((base_seconds / per_frame) / (hf_seconds / per_frame))
            video_domain = picks[0][0]
            video_picks.setdefault(domain, []).append(video_domain)
            disagreements += sum(frame_domain != video_domain for _, frame_domain in picks)
            routed_frames += len(picks)
            closed = samcl.engine.route(torch.stack([p.pooled for p in samcl.engine.prepare(clip.frames, keep=False)]),
                                        None, False)[0]
            closed_set.setdefault(domain, []).extend(samcl.module_set.domain_name(k) for k in closed)
        rows[domain] = {name: {k: statistics.mean(s[k] for s in runs) for k in ("J", "F", "J&F")}
                        for name, runs in scores.items()}
        rows[domain]["clips"] = len(test)
        rows[domain]["video_routed_to"] = video_picks[domain]
        rows[domain]["frames_closed_set_to_own_domain"] = statistics.mean(
            pick == domain for pick in closed_set[domain]) if domain in LEARNED else None
    return {"domains": rows, "cost": {k: statistics.median(v) for k, v in cost.items()},
            "cost_per_clip": cost, "frames_routed_differently": disagreements / max(routed_frames, 1),
            "frames_routed": routed_frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 train / 1 test clips per domain")
    parser.add_argument("--train-clips", type=int, default=12, help="training clips per learned domain (10 frames each)")
    parser.add_argument("--test-clips", type=int, default=6, help="test clips per domain")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="one run per seed (its clips, its modules' training); the table averages them")
    parser.add_argument("--epochs", type=int, default=4, help="module training epochs per learned domain")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per propagation (the fastest counts)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--base", choices=sorted(BASES), default="tiny-sam2",
                        help="the pretrained builtin:tiny-sam2 (default) or a random-weight tiny SAM 2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n_train, n_test = (2, 1) if args.quick else (args.train_clips, args.test_clips)
    result = combine({seed: run_seed(args, seed, n_train, n_test) for seed in args.seeds})
    command = " ".join(["python benchmarks/video.py", *sys.argv[1:]])
    result["provenance"] = provenance(command, args)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "video.json", result)
    atomic_write_bytes(args.out / "video.md", table(result).encode())
    print(table(result))


def run_seed(args, seed: int, n_train: int, n_test: int) -> dict:
    """One seed: the base, both learned domains' modules from their training clips (frames as images, each clip
    the group of its frames), the test clips of every domain measured."""
    backbone = base_backbone(args.base, seed)
    samcl = SAMCL.create(backbone, device="cpu")
    for domain in LEARNED:
        samples = clip_samples(generate_clips(domain, n_train, seed, "train"))
        samcl.learn(domain, samples, TrainConfig(epochs=args.epochs, batch_size=4, seed=seed, progress=False))
    clips = {d: generate_clips(d, n_test, seed, "test") for d in (*LEARNED, *UNSEEN)}
    return measure(samcl, backbone, clips, args.repeats)


def combine(runs: dict[int, dict]) -> dict:
    """The seeds' results as one: J, F and J&F averaged over the seeds, the routed gain per seed, the cost ratios'
    median over every clip of every seed; each seed's own result under "per_seed"."""
    first = next(iter(runs.values()))
    domains = {}
    for domain in first["domains"]:
        rows = [run["domains"][domain] for run in runs.values()]
        closed = [row["frames_closed_set_to_own_domain"] for row in rows]
        domains[domain] = {
            **{name: {k: statistics.mean(row[name][k] for row in rows) for k in ("J", "F", "J&F")}
               for name in ("base", "routed", "oracle")},
            "clips": sum(row["clips"] for row in rows),
            "video_routed_to": [pick for row in rows for pick in row["video_routed_to"]],
            "frames_closed_set_to_own_domain": None if closed[0] is None else statistics.mean(closed),
            "routed_gain_per_seed": {str(seed): 100 * (run["domains"][domain]["routed"]["J&F"]
                                                      - run["domains"][domain]["base"]["J&F"])
                                     for seed, run in runs.items()}}
    per_clip = {k: [v for run in runs.values() for v in run["cost_per_clip"][k]] for k in first["cost_per_clip"]}
    frames = sum(run["frames_routed"] for run in runs.values())
    return {"domains": domains, "cost": {k: statistics.median(v) for k, v in per_clip.items()}, "cost_per_clip": per_clip,
            "frames_routed_differently": sum(run["frames_routed_differently"] * run["frames_routed"]
                                             for run in runs.values()) / max(frames, 1),
            "frames_routed": frames, "per_seed": {str(seed): run for seed, run in runs.items()}}


def provenance(command: str, args) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    return {"command": command, "seeds": args.seeds, "epochs": args.epochs, "repeats": args.repeats, "commit": commit,
            "train_clips": 2 if args.quick else args.train_clips, "test_clips": 1 if args.quick else args.test_clips,
            "cpu": cpu_name(),
            "threads": 1, "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "base": BASES[args.base], "base_kind": args.base}


def table(result: dict) -> str:
    p = result["provenance"]
    lines = [f"Mean over seeds {', '.join(map(str, p['seeds']))} ({p['test_clips']} test clips each):", "",
             "| domain | clips | base J&F | routed J&F | oracle J&F | routed J / F | videos routed to |",
             "|---|---|---|---|---|---|---|"]
    for domain, row in result["domains"].items():
        learned = "" if domain in LEARNED else " (never learned)"
        picks = ", ".join(f"{name} {count}" for name, count in Counter(row["video_routed_to"]).most_common())
        lines.append(f"| {domain}{learned} | {row['clips']} | {row['base']['J&F']:.3f} | {row['routed']['J&F']:.3f} | "
                     f"{row['oracle']['J&F']:.3f} | {row['routed']['J']:.3f} / {row['routed']['F']:.3f} | {picks} |")
    gains = {d: 100 * (r["routed"]["J&F"] - r["base"]["J&F"]) for d, r in result["domains"].items()}
    lines += ["", "J&F goal, routed - base (mean; per seed): " + ", ".join(
        f"{d} {g:+.1f} points ({'; '.join(f'{v:+.1f}' for v in result['domains'][d]['routed_gain_per_seed'].values())}"
        f"; {'learned: goal >= +10' if d in LEARNED else 'never learned: goal within 1'}, "
        f"{'met' if (g >= 10 if d in LEARNED else abs(g) <= 1) else 'not met'})" for d, g in gains.items())]
    cost = result["cost"]
    closed = {d: r["frames_closed_set_to_own_domain"] for d, r in result["domains"].items() if d in LEARNED}
    lines += ["", f"per-frame cost: routed / base propagation {cost['routed/base']:.3f}, oracle (module always on) / "
                  f"base {cost['oracle/base']:.3f} (goal <= 1.05); samcl base / transformers' propagation "
                  f"{cost['base/hf']:.3f}",
              "frames routed to their own domain with the open-set fallback off: "
              + ", ".join(f"{d} {v:.0%}" for d, v in closed.items()),
              f"frames whose own routing differs from their video's: {result['frames_routed_differently']:.1%} of "
              f"{result['frames_routed']}",
              "", f"{p['base']}.", f"`{p['command']}` at {p['commit']}, {p['date']}, {p['cpu']}, 1 thread, torch "
                                   f"{p['torch']}, {p['train_clips']} training clips per learned domain, "
                                   f"{p['epochs']} epochs."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
