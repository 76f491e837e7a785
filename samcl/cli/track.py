"""`samcl track`: objects prompted on one frame, propagated through a video with the set's module (SAM 2 and SAM 3 tracker bases).

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
  samcl track my-set clip.mp4 --point 320,240 --point 90,60:2@30 --out masks/   # object 2 from frame 30
  samcl track my-set clip.mp4 --point 320,240@40 --point 300,250@80 --direction both --out masks/
writes <frame>_<object>.png per frame (00000_1.png, ...) and scores.json (each object's presence per frame) into
--out; a run that fails or is interrupted removes the masks it wrote (scores.json is written last).
Each prompt is VALUE[:ID][@FRAME]: points and boxes are 0-based pixels of that frame; :ID is the object it
prompts (default: --object), @FRAME the frame it is on (default: --frame). An object may have prompts on several
frames (on one frame its points add up; one box per object and frame). Only SAM 2 and SAM 3 tracker bases track."""


class _Flag:
    """One --point/--negative/--box value: VALUE[:ID][@FRAME] (None: --object's / --frame's)."""

    def __init__(self, value, obj: int | None, frame: int | None, text: str):
        self.value, self.obj, self.frame, self.text = value, obj, frame, text


def _prompt_flag(parse, what: str):
    """`parse` for VALUE[:ID][@FRAME]."""
    form = f"{what}[:ID][@FRAME]"

    def number(text: str, low: int, name: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= MAX_FRAME:
            order = " (the :ID comes before the @FRAME)" if ":" in text else ""
            raise argparse.ArgumentTypeError(f"{form}: {name} must be an integer from {low}, got {text!r}{order}")
        return value

    def parse_flag(text: str) -> _Flag:
        rest, at, frame = text.partition("@")
        value, colon, obj = rest.rpartition(":")
        if not colon:
            value = rest
        return _Flag(parse(value), number(obj, 1, "the object id") if colon else None,
                     number(frame, 0, "the frame") if at else None, text)

    parse_flag.__name__ = what
    return parse_flag


def add_track(p) -> None:
    """The flags of `samcl track`; the prompt, routing, --base and --precision as every command's."""
    p.add_argument("store", type=Path, help="module-set directory (on a SAM 2 or SAM 3 tracker base)")
    p.add_argument("video", type=Path, help="a video file (read with PyAV) or a folder of frame images (name order)")
    p.add_argument("--point", type=_prompt_flag(t.point, "X,Y"), action="append", default=[],
                   metavar="X,Y[:ID][@FRAME]",
                   help="positive point, 0-based pixels (repeatable); :ID names its object, @FRAME its frame")
    p.add_argument("--negative", type=_prompt_flag(t.point, "X,Y"), action="append", default=[],
                   metavar="X,Y[:ID][@FRAME]", help="negative point (repeatable); :ID and @FRAME as --point's")
    p.add_argument("--box", type=_prompt_flag(t.box, "X0,Y0,X1,Y1"), action="append", default=[],
                   metavar="X0,Y0,X1,Y1[:ID][@FRAME]",
                   help="box prompt, 0-based pixels; one per object and frame (:ID and @FRAME as --point's)")
    p.add_argument("--frame", type=t.int_range(0, MAX_FRAME), default=0, metavar="N",
                   help="the frame of the prompts without @FRAME, 0-based")
    p.add_argument("--object", type=t.int_range(1, MAX_FRAME), default=1, metavar="ID",
                   help="the object id of the prompts without :ID, in the file names and JSON")
    p.add_argument("--direction", choices=("forward", "reverse", "both"), default="forward",
                   help="forward: from the first prompted frame to the end (earlier frames get no mask); reverse: "
                        "from the last prompted frame back to frame 0 (later frames are not read); both: forward, then "
                        "back from the first prompted frame, so every frame (Meta's propagate_in_video, then "
                        "reverse=True). Every prompted frame is in its objects' memory from the start, as in Meta's "
                        "offline predictor: an object first prompted later is tracked from where the run starts. "
                        "Memory: with prompts on several frames, the frames up to the last prompted one are read "
                        "ahead and held; later frames are read one at a time")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for <frame>_<object>.png masks and scores.json (created; must not hold masks)")
    add_routing(p, force="run this domain's module instead of the selector's pick on the prompted frame the run "
                         "starts from ('base': none)",
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
    counted = _Counted(frames)
    tracked = samcl.track(counted, prompts, force=args.force, num_frames=frames.count, direction=args.direction)
    return write_tracked(args, _past_the_end(tracked, counted, prompts, args.video), frames.count, prompts)


def prepare_track(args):
    """Every input problem before the model loads: the prompts, --out, the video and the prompted frames.
    -> ({frame: {object id: prompt}}, frames)."""
    from ..io import open_frames

    prompts = object_prompts(args)
    if args.out.exists() and (not args.out.is_dir() or any(p.suffix == ".png" for p in args.out.iterdir())):
        raise SamclError(f"{args.out}: exists and is not a folder without masks; give a new folder for --out")
    above = next(parent for parent in args.out.absolute().parents if parent.exists())
    if not above.is_dir():
        raise SamclError(f"{args.out}: {above} is a file, not a folder; give a new folder for --out")
    frames = open_frames(args.video)
    if frames.count is not None and max(prompts) >= frames.count:
        raise SamclError(f"{_where(args, max(prompts))}: frame {max(prompts)} is past the last frame of "
                         f"{args.video} ({frames.count} frames: 0..{frames.count - 1})")
    for frame, on_frame in prompts.items():  # inside their frame: the tracker says it too, once the frame is read
        size = frames.frame_size(frame)
        for obj, prompt in on_frame.items() if size else ():
            try:
                prompt.check(*size)
            except SamclError as exc:
                raise SamclError(f"frame {frame}, object {obj}: {exc}") from None
    return prompts, frames


def _where(args, frame: int) -> str:
    """The flag that put a prompt on `frame` (for an error)."""
    for flag in ("point", "negative", "box"):
        for given in getattr(args, flag):
            if given.frame == frame:
                return f"--{flag} {given.text}"
    return f"--frame {frame}"


def object_prompts(args) -> dict:
    """{frame: {object id: Prompt}} of --point/--negative/--box (each VALUE[:ID][@FRAME]; no :ID: --object, no
    @FRAME: --frame), every one checked."""
    from .. import Prompt

    entries: dict[tuple[int, int], dict] = {}  # (frame, object) -> its points, labels and box

    def key(given: _Flag) -> tuple[int, int]:
        return args.frame if given.frame is None else given.frame, given.obj or args.object

    for flag, label in (("point", 1), ("negative", 0)):
        for given in getattr(args, flag):
            entry = entries.setdefault(key(given), {"points": [], "labels": [], "box": None})
            entry["points"].append(given.value)
            entry["labels"].append(label)
    for given in args.box:
        entry = entries.setdefault(key(given), {"points": [], "labels": [], "box": None})
        if entry["box"] is not None:
            frame, obj = key(given)
            raise SamclError(f"--box {given.text}: object {obj} has two boxes on frame {frame}; give one box per "
                             f"object and frame (:ID, @FRAME)")
        entry["box"] = given.value
    objects = {obj for _, obj in entries}
    if len(objects) > MAX_OBJECTS:
        raise SamclError(f"{len(objects)} objects: at most {MAX_OBJECTS} per command")
    prompts: dict[int, dict] = {}
    for (frame, obj), given in sorted(entries.items()):
        prompt = Prompt.of(given["points"] or None, given["labels"] or None, given["box"])
        prompt.check()
        prompts.setdefault(frame, {})[obj] = prompt
    if not prompts:
        Prompt.of(None).check()  # the one "no prompt" error
    return prompts


class _Counted:
    """The frames, counted as they are read (a video whose container does not say its length)."""

    def __init__(self, frames):
        self.frames, self.read, self.ended = frames, 0, False

    def __iter__(self):
        for frame in self.frames:
            self.read += 1
            yield frame
        self.ended = True


def _past_the_end(tracked, counted: _Counted, prompts: dict, video: Path):
    """`tracked`, with its "past the last frame" error said as the CLI's: a video whose container does not say
    its length (or says it wrong) shows it only once read to the end."""
    try:
        yield from tracked
    except SamclError:
        if not counted.ended or counted.read > max(prompts):
            raise
        raise SamclError(f"frame {max(prompts)} (a prompt's @FRAME or --frame) is past the last frame of {video}: "
                         f"it has {counted.read} frames (0..{counted.read - 1}), known only once the video was "
                         f"read") from None


def write_tracked(args, tracked, count: int | None, prompts: dict) -> int:
    """<frame>_<object>.png per frame and object as they come (progress per frame), then scores.json; a run that
    fails or is interrupted removes the masks it wrote (and --out, if it made it), so --out is as it was."""
    import numpy as np

    from ..io import atomic_write_json, atomic_write_png, bar, print_json

    if args.direction == "reverse":  # from the last prompted frame down: the later frames are not read
        count = max(prompts) + 1
    made = not args.out.exists()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, domain, objects, written = [], None, set(), []
    try:
        for frame in bar(tracked, total=count, desc="track", unit="frame"):
            row = {"frame": frame.index, "objects": {}}
            for obj, result in frame.objects.items():
                name = f"{frame.index:05d}_{obj}.png"
                written.append(args.out / name)
                atomic_write_png(args.out / name, result.mask.astype(np.uint8) * 255)
                row["objects"][str(obj)] = {"mask": name, "presence": result.presence,
                                            "foreground": float(result.mask.mean())}
            domain = frame.domain or domain
            objects |= set(frame.objects)
            rows.append(row)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if made and not any(args.out.iterdir()):
            args.out.rmdir()
        raise
    rows.sort(key=lambda row: row["frame"])  # "reverse" and "both" run frames backwards
    report = {"video": str(args.video), "store": str(args.store), "domain": domain, "prompted_frame": min(prompts),
              "prompted_frames": {str(frame): sorted(on) for frame, on in sorted(prompts.items())},
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
