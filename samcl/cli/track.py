"""`samcl track`: one object's prompt on one frame, propagated through a video with the set's module (SAM 2).

Its flags (`add_track`, given the parser's --base and --precision adders), the checks made before the
model loads (`prepare_track`) and the output (`write_tracked`); `cmd_track` runs them in that order."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import SamclError
from . import flags as t
from .checks import check_device, precheck_store
from .shared_flags import add_base, add_precision, add_prompt, add_routing

MAX_FRAME = 2**31 - 1
EXAMPLES = """\
examples:
  samcl track my-set clip.mp4 --point 320,240 --out masks/                # frame 0, object 1
  samcl track my-set frames/ --frame 12 --box 100,80,420,360 --out masks/ --object 2
  samcl track my-set clip.mp4 --point 320,240 --negative 10,10 --out masks/ --json
writes <frame>_<object>.png per frame (00000_1.png, ...) and scores.json (per-frame scores) into --out;
points and boxes are 0-based pixels of the prompted frame. Only SAM 2 bases track."""


def add_track(p) -> None:
    """The flags of `samcl track`; the prompt, routing, --base and --precision as every command's."""
    p.add_argument("store", type=Path, help="module-set directory (on a SAM 2 base)")
    p.add_argument("video", type=Path, help="a video file (read with PyAV) or a folder of frame images (name order)")
    add_prompt(p, " on the prompted frame")
    p.add_argument("--frame", type=t.int_range(0, MAX_FRAME), default=0, metavar="N",
                   help="the prompted frame, 0-based; frames before it get no mask")
    p.add_argument("--object", type=t.int_range(1, MAX_FRAME), default=1, metavar="ID",
                   help="the object's id in the file names and JSON")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for <frame>_<object>.png masks and scores.json (created; must not hold masks)")
    add_routing(p, force="run this domain's module instead of the selector's pick on the prompted frame ('base': none)",
                fallback="always run the nearest learned domain's module (default: a video that fits none runs on "
                         "the base; statistics selectors only)")
    add_base(p, "default: the one recorded in the store")
    add_precision(p)
    p.add_argument("--json", action="store_true", help="print the per-frame scores as JSON")


def cmd_track(args) -> int:
    """The command (the device and store checks every command makes, `checks`)."""
    prompt, frames = prepare_track(args)  # every input problem before the model code loads
    check_device(args.device)
    precheck_store(args.store)
    from .. import SAMCL

    samcl = SAMCL.open(args.store, base=args.base, device=args.device, fallback=not args.no_fallback,
                       precision=args.precision)
    tracked = samcl.track(frames, {args.frame: {args.object: prompt}}, force=args.force, num_frames=frames.count)
    return write_tracked(args, tracked, frames.count)


def prepare_track(args):
    """Every input problem before the model loads: the prompt, --out, the video and --frame. -> (prompt, frames)."""
    from .. import Prompt
    from ..io import open_frames

    points = [*args.point, *args.negative]
    labels = [1] * len(args.point) + [0] * len(args.negative)
    prompt = Prompt.of(points or None, labels or None, args.box)
    prompt.check()
    if args.out.exists() and (not args.out.is_dir() or any(p.suffix == ".png" for p in args.out.iterdir())):
        raise SamclError(f"{args.out}: exists and is not a folder without masks; give a new folder for --out")
    frames = open_frames(args.video)
    if frames.count is not None and args.frame >= frames.count:
        raise SamclError(f"--frame {args.frame}: {args.video} has {frames.count} frames (0..{frames.count - 1})")
    return prompt, frames


def write_tracked(args, tracked, count: int | None) -> int:
    """<frame>_<object>.png per frame and object as they come (progress per frame), then scores.json."""
    import numpy as np

    from ..io import atomic_write_json, atomic_write_png, bar, print_json

    args.out.mkdir(parents=True, exist_ok=True)
    rows, domain = [], None
    for frame in bar(tracked, total=count, desc="track", unit="frame"):
        row = {"frame": frame.index, "objects": {}}
        for obj, result in frame.objects.items():
            name = f"{frame.index:05d}_{obj}.png"
            atomic_write_png(args.out / name, result.mask.astype(np.uint8) * 255)
            row["objects"][str(obj)] = {"mask": name, "score": result.score, "foreground": float(result.mask.mean())}
        domain = frame.domain or domain
        rows.append(row)
    report = {"video": str(args.video), "store": str(args.store), "domain": domain, "prompted_frame": args.frame,
              "object": args.object, "frames": rows}
    atomic_write_json(args.out / "scores.json", report)
    if args.json:
        print_json(report)
    else:
        masks = sum(len(r["objects"]) for r in rows)
        print(f"tracked object {args.object} through {len(rows)} frames of {args.video} with module {domain}: "
              f"{masks} masks and scores.json in {args.out}", file=sys.stdout)
    return 0
