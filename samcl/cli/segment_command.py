"""`samcl segment`: masks for prompted images (or automatic masks with --auto, `auto_command`)."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import SamclError
from ..io import print_json
from .auto_command import auto_flags_given, auto_plan, auto_run
from .checks import precheck_store, check_device
from .store_commands import table


def cmd_segment(args) -> int:
    from .. import Prompt, PromptError
    from ..io import read_image
    from . import output
    from .overlay import draw_overlay, plan_overlays

    auto = args.auto or auto_flags_given(args)
    if auto:  # automatic masks: no prompt; COCO results and label PNGs (`auto_command`)
        config, auto_targets = auto_plan(args)
    points = [*args.point, *args.negative]
    labels = [1] * len(args.point) + [0] * len(args.negative)
    prompt = Prompt.of(points or None, labels or None, args.box)
    if not auto:
        prompt.check()  # as the server's 400 no_prompt, before any work
        targets = output.plan(args.out, args.images, args.json)  # every --out problem before any work
        overlays = plan_overlays(args, targets)
        triples = output.multimask(targets) if args.multimask else None
    check_device(args.device)
    images = [read_image(path) for path in args.images]
    for path, image in zip(args.images, images if not auto else ()):
        try:
            prompt.check(image.shape[1], image.shape[0])
        except PromptError as exc:
            raise SamclError(f"{path}: {exc}") from None
    manifest = precheck_store(args.store)
    import numpy as np

    from .. import SAMCL

    samcl = SAMCL.open(args.store, base=args.base, device=args.device, fallback=not args.no_fallback,
                       precision=args.precision, runtime=args.runtime, manifest=manifest)
    if auto:
        return auto_run(args, samcl, images, config, auto_targets)
    results = samcl.segment(images, [prompt] * len(images), force=args.force, multimask_output=args.multimask)
    out = []
    for j, (path, target, result) in enumerate(zip(args.images, targets, results)):
        row = {"image": str(path), "domain": result.domain, "domain_score": result.domain_score}
        if triples is None:
            output.write(target, (result.masks[0] * 255).astype(np.uint8))
            row.update(mask=target.shown, score=float(result.scores[0]), foreground=float(result.masks[0].mean()))
        else:
            for each, mask in zip(triples[j], result.masks):
                output.write(each, (mask * 255).astype(np.uint8))
            row.update(masks=[t.shown for t in triples[j]], scores=[float(v) for v in result.scores],
                       foreground=[float(m.mean()) for m in result.masks])
        if overlays:  # the best of three with --multimask
            best = int(np.argmax(result.scores))
            output.write(overlays[j], draw_overlay(images[j], result.masks[best], prompt))
        out.append(row)
    if args.json:
        print_json({"results": out})  # one shape for one image or many
    else:  # with --out - stdout carries the mask: the table goes to stderr
        rows = [[Path(r["image"]).name, r["domain"], f"{r['score']:.3f}" if "score" in r else
                 " ".join(f"{v:.3f}" for v in r["scores"]), r.get("mask") or ", ".join(r["masks"])] for r in out]
        print(table(rows, ["image", "domain", "score", "mask"]), file=sys.stderr if args.out == "-" else sys.stdout)
    return 0
