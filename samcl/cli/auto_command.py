"""`samcl segment --auto`: automatic masks (every object, no prompt) of each image on its routed module, written as
COCO results JSON and a label PNG per image (`samcl.inference.automatic`)."""

from __future__ import annotations

from pathlib import Path

from .. import SamclError
from ..io import print_json
from .store_commands import table


def auto_flags_given(args) -> bool:
    """Whether a generator flag was set (they need --auto); the flag's default counts as not set."""
    from ..inference import AutoMaskConfig
    from .parser import AUTO_FLAGS, defaults

    given = [name for name in AUTO_FLAGS if getattr(args, name) != defaults(AutoMaskConfig)[name]]
    if given and not args.auto:
        raise SamclError(f"--{given[0].replace('_', '-')} is an option of automatic masks: add --auto")
    return bool(given)


def auto_plan(args):
    """`samcl segment --auto`'s checks before any work: no prompt flags, where --out writes, the generator's
    options. Returns (AutoMaskConfig, output.AutoTargets)."""
    from ..inference import AutoMaskConfig
    from . import output
    from .parser import AUTO_FLAGS

    for flag, given in (("--point", args.point), ("--negative", args.negative), ("--box", args.box)):
        if given:
            raise SamclError(f"{flag}: --auto makes its own prompts (a grid of points); drop {flag} or --auto")
    if getattr(args, "overlay", None):
        raise SamclError("--overlay: draws one prompt's mask; --auto writes a label PNG of every mask instead")
    targets = output.plan_auto(args.out, args.images)
    return AutoMaskConfig(**{name: getattr(args, name) for name in AUTO_FLAGS}, output_mode="coco_rle"), targets


def auto_run(args, samcl, images: list, config, targets) -> int:
    """Automatic masks of each image on its routed module, as COCO results JSON (image_id = the image's position,
    from 1) and a label PNG per image; the table or --json on stdout."""
    from ..inference import coco_results, label_image
    from ..io import atomic_write_json
    from . import output

    results, rows = [], []
    for image_id, (path, image, label_target) in enumerate(zip(args.images, images, targets.labels), start=1):
        [generated] = samcl.generate([image], config=config, force=args.force)
        results.extend(coco_results(generated, image_id))
        output.write_label(label_target, label_image(generated))
        rows.append({"image": str(path), "image_id": image_id, "domain": generated.domain,
                     "domain_score": generated.domain_score, "masks": len(generated.records),
                     "labels": label_target.shown})
    atomic_write_json(targets.results, results)
    if args.json:
        print_json({"results": str(targets.results), "images": rows})
    else:
        print(table([[Path(r["image"]).name, r["image_id"], r["domain"], r["masks"], r["labels"]] for r in rows],
                    ["image", "image_id", "domain", "masks", "labels"]))
        print(f"COCO results: {targets.results}")
    return 0
