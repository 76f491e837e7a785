"""`samcl track`: objects prompted on one frame, propagated through a video with the set's module (SAM 2).

Its flags (`add_track`, given the parser's --base and --precision adders), the checks made before the
model loads (`prepare_track`) and the output (`write_tracked`); `cmd_track` runs them in that order."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import SamclError
from . import flags as t
from .checks import check_device, precheck_store
from .shared_flags import add_base, add_precision, add_routing

MAX_FRAME = 2**31 - 1
#: Most objects one command tracks (each has its own memory in the session).
MAX_OBJECTS = 64
EXAMPLES = """\
examples:
  samcl track my-set clip.mp4 --point 320,240 --out masks/                # frame 0, object 1
  samcl track my-set frames/ --frame 12 --box 100,80,420,360 --out masks/ --object 2
  samcl track my-set clip.mp4 --point 320,240 --negative 10,10 --out masks/ --json
  samcl track my-set clip.mp4 --point 320,240 --box 400,50,600,200:2 --out masks/   # objects 1 and 2
  samcl track my-set clip.mp4 --frame 40 --point 320,240 --direction both --out masks/
writes <frame>_<object>.png per frame (00000_1.png, ...) and scores.json (each object's presence per frame) into --out;
points and boxes are 0-based pixels of the prompted frame; a trailing :ID gives the object they prompt
(default: --object). Only SAM 2 bases track."""


def _of_object(parse, what: str):
    """`parse` for VALUE or VALUE:ID (the object the prompt is for; None: --object's)."""

    def parse_with_object(text: str):
        value, colon, obj = text.rpartition(":")
        if not colon:
            return parse(text), None
        try:
            number = int(obj)
        except ValueError:
            number = 0
        if not 1 <= number <= MAX_FRAME:
            raise argparse.ArgumentTypeError(f"{what}:ID: the object id must be an integer from 1, got {obj!r}")
        return parse(value), number

    parse_with_object.__name__ = what
    return parse_with_object


def add_track(p) -> None:
    """The flags of `samcl track`; the prompt, routing, --base and --precision as every command's."""
    p.add_argument("store", type=Path, help="module-set directory (on a SAM 2 base)")
    p.add_argument("video", type=Path, help="a video file (read with PyAV) or a folder of frame images (name order)")
    p.add_argument("--point", type=_of_object(t.point, "X,Y"), action="append", default=[], metavar="X,Y[:ID]",
                   help="positive point on the prompted frame, 0-based pixels (repeatable); :ID names its object")
    p.add_argument("--negative", type=_of_object(t.point, "X,Y"), action="append", default=[],
                   metavar="X,Y[:ID]", help="negative point on the prompted frame (repeatable); :ID names its object")
    p.add_argument("--box", type=_of_object(t.box, "X0,Y0,X1,Y1"), action="append", default=[],
                   metavar="X0,Y0,X1,Y1[:ID]", help="box prompt, 0-based pixels; one per object (:ID names it)")
    p.add_argument("--frame", type=t.int_range(0, MAX_FRAME), default=0, metavar="N",
                   help="the prompted frame, 0-based (every object's)")
    p.add_argument("--object", type=t.int_range(1, MAX_FRAME), default=1, metavar="ID",
                   help="the object id of the prompts without :ID, in the file names and JSON")
    p.add_argument("--direction", choices=("forward", "reverse", "both"), default="forward",
                   help="forward: from --frame to the end (earlier frames get no mask); reverse: from --frame back "
                        "to frame 0 (later frames are not read); both: every frame (Meta's propagate_in_video, "
                        "forward then reverse=True)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for <frame>_<object>.png masks and scores.json (created; must not hold masks)")
    add_routing(p, force="run this domain's module instead of the selector's pick on the prompted frame ('base': none)",
                fallback="always run the nearest learned domain's module (default: a video that fits none runs on "
                         "the base; statistics selectors only)")
    add_base(p, "default: the one recorded in the store")
    add_precision(p)
    p.add_argument("--json", action="store_true",
                   help="print scores.json (each object's mask and presence per frame) as JSON")


def cmd_track(args) -> int:
    """The command (the device and store checks every command makes, `checks`)."""
    prompts, frames = prepare_track(args)  # every input problem before the model code loads
    check_device(args.device)
    manifest = precheck_store(args.store)
    from .. import SAMCL

    samcl = SAMCL.open(args.store, base=args.base, device=args.device, fallback=not args.no_fallback,
                       precision=args.precision, manifest=manifest)
    tracked = samcl.track(frames, {args.frame: prompts}, force=args.force, num_frames=frames.count,
                          direction=args.direction)
    return write_tracked(args, tracked, frames.count)


def prepare_track(args):
    """Every input problem before the model loads: the prompts, --out, the video and --frame.
    -> ({object id: prompt}, frames)."""
    from ..io import open_frames

    prompts = object_prompts(args)
    if args.out.exists() and (not args.out.is_dir() or any(p.suffix == ".png" for p in args.out.iterdir())):
        raise SamclError(f"{args.out}: exists and is not a folder without masks; give a new folder for --out")
    frames = open_frames(args.video)
    if frames.count is not None and args.frame >= frames.count:
        raise SamclError(f"--frame {args.frame}: {args.video} has {frames.count} frames (0..{frames.count - 1})")
    return prompts, frames


def object_prompts(args) -> dict:
    """{object id: Prompt} of --point/--negative/--box (each VALUE[:ID]; no :ID: --object), every one checked."""
    from .. import Prompt

    by_object: dict[int, dict] = {}
    for flag, label in (("point", 1), ("negative", 0)):
        for value, obj in getattr(args, flag):
            entry = by_object.setdefault(obj or args.object, {"points": [], "labels": [], "box": None})
            entry["points"].append(value)
            entry["labels"].append(label)
    for value, obj in args.box:
        entry = by_object.setdefault(obj or args.object, {"points": [], "labels": [], "box": None})
        if entry["box"] is not None:
            raise SamclError(f"--box: object {obj or args.object} has two boxes; give one box per object (:ID)")
        entry["box"] = value
    if len(by_object) > MAX_OBJECTS:
        raise SamclError(f"{len(by_object)} objects: at most {MAX_OBJECTS} per command")
    prompts = {}
    for obj, entry in sorted(by_object.items()):
        prompts[obj] = Prompt.of(entry["points"] or None, entry["labels"] or None, entry["box"])
        prompts[obj].check()
    if not prompts:
        Prompt.of(None).check()  # the one "no prompt" error
    return prompts


def write_tracked(args, tracked, count: int | None) -> int:
    """<frame>_<object>.png per frame and object as they come (progress per frame), then scores.json."""
    import numpy as np

    from ..io import atomic_write_json, atomic_write_png, bar, print_json

    args.out.mkdir(parents=True, exist_ok=True)
    rows, domain, objects = [], None, set()
    for frame in bar(tracked, total=count, desc="track", unit="frame"):
        row = {"frame": frame.index, "objects": {}}
        for obj, result in frame.objects.items():
            name = f"{frame.index:05d}_{obj}.png"
            atomic_write_png(args.out / name, result.mask.astype(np.uint8) * 255)
            row["objects"][str(obj)] = {"mask": name, "presence": result.presence, "foreground": float(result.mask.mean())}
        domain = frame.domain or domain
        objects |= set(frame.objects)
        rows.append(row)
    rows.sort(key=lambda row: row["frame"])  # "reverse" and "both" run frames backwards
    report = {"video": str(args.video), "store": str(args.store), "domain": domain, "prompted_frame": args.frame,
              "direction": args.direction, "objects": sorted(objects), "frames": rows}
    atomic_write_json(args.out / "scores.json", report)
    if args.json:
        print_json(report)
    else:
        masks = sum(len(r["objects"]) for r in rows)
        names = ", ".join(map(str, sorted(objects))) or "none"
        print(f"tracked object(s) {names} through {len(rows)} frames of {args.video} with module {domain}: "
              f"{masks} masks and scores.json in {args.out}", file=sys.stdout)
    return 0
