"""The `samcl` command: learn domains into a module set, inspect it, segment images, evaluate."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import replace
from pathlib import Path

EXAMPLES = """\
examples:
  samcl demo --quick                                   # the whole method on the shipped tiny SAM, on CPU
  samcl learn my-set --base sam_vit_b_01ec64.pth --domain polyps --data data/kvasir
  samcl learn my-set --domain shadows --data data/istd --epochs 20     # later domains: --base is remembered
  samcl info my-set
  samcl segment my-set photo.jpg --point 320,240 --point 300,260 --out mask.png
  samcl eval my-set --data polyps=data/kvasir --data shadows=data/istd --json
"""


def _point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y (two numbers), got {text!r}") from None
    return x, y


def _box(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or values[2] < values[0] or values[3] < values[1]:
        raise argparse.ArgumentTypeError(f"expected X0,Y0,X1,Y1 with X0<=X1 and Y0<=Y1, got {text!r}")
    return values  # type: ignore[return-value]


def _named_dir(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samcl", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Teach Segment Anything new image domains one after another without forgetting: one tiny "
                    "AugModule per domain, and a Module Selector that picks the right one per image.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    learn = sub.add_parser("learn", help="learn one domain into a store (created on first use)",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    learn.add_argument("store", type=Path, help="module-set directory")
    learn.add_argument("--base", help="base SAM or SAM 2: HF directory, Meta's SAM .pth or SAM 2.1 .pt "
                                      "(first call; default: shipped tiny SAM)")
    learn.add_argument("--domain", required=True, help="name of the new domain")
    learn.add_argument("--data", required=True, type=Path,
                       help="split folder (images/, masks/) or domain folder (train/ is used)")
    learn.add_argument("--epochs", type=int, default=20)
    learn.add_argument("--batch-size", type=int, default=2,
                       help="samples per step and process (under torchrun the global batch is this x processes)")
    learn.add_argument("--lr", type=float, default=0.005)
    learn.add_argument("--seed", type=int, default=0)
    learn.add_argument("--points", type=int, default=3, help="positive points sampled per training image")
    learn.add_argument("--amp", choices=["none", "bf16"], default="none",
                       help="mixed precision for training: bf16 autocast of the adapted encoder blocks and decoder "
                            "(meant for CUDA; on CPU only when asked)")
    learn.add_argument("--as-base", action="store_true",
                       help="learn this domain as the 'base' class: no module, SAM's own behaviour")
    new = learn.add_argument_group("new store only")
    new.add_argument("--rank", type=int, default=10, help="AugModule rank r")
    new.add_argument("--selector-block", type=int, default=None, help="encoder block for the selector embedding")
    new.add_argument("--samples-per-domain", type=int, default=300, help="N_e embeddings kept per domain")
    new.add_argument("--selector-epochs", type=int, default=25)
    new.add_argument("--selector-max-steps", type=int, default=None,
                     help="SGD steps per selector retrain once the epochs over the whole buffer would take more "
                          "(a long history; default 2000); 0 = the reference schedule always")
    new.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                     help="storage dtype of modules, selector and buffer")
    learn.add_argument("--json", action="store_true", help="print the report as JSON")

    info = sub.add_parser("info", help="show a store's domains, sizes and base model")
    info.add_argument("store", type=Path)
    info.add_argument("--json", action="store_true")

    seg = sub.add_parser("segment", help="segment images; the selector picks the module",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    seg.add_argument("store", type=Path)
    seg.add_argument("images", type=Path, nargs="+", help="one or more images (one batch, mixed domains allowed)")
    seg.add_argument("--point", type=_point, action="append", default=[], metavar="X,Y", help="positive point")
    seg.add_argument("--negative", type=_point, action="append", default=[], metavar="X,Y", help="negative point")
    seg.add_argument("--box", type=_box, default=None, metavar="X0,Y0,X1,Y1")
    seg.add_argument("--out", type=Path, required=True,
                     help="mask PNG (one image) or a directory (several images: <stem>.png each)")
    seg.add_argument("--domain", default=None, help="force this module instead of selecting")
    seg.add_argument("--base", help="base model (default: the one recorded in the store)")
    seg.add_argument("--json", action="store_true")

    ev = sub.add_parser("eval", help="evaluate a store on test folders",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    ev.add_argument("store", type=Path)
    ev.add_argument("--data", type=_named_dir, action="append", required=True, metavar="NAME=DIR",
                    help="true domain name and a split or domain folder (test/ is used)")
    ev.add_argument("--seed", type=int, default=0, help="seed for points where points.json has none")
    ev.add_argument("--base", help="base model (default: the one recorded in the store)")
    ev.add_argument("--json", action="store_true")
    demo = sub.add_parser("demo", help="SAMCL end to end on the shipped tiny SAM and synthetic domains (CPU)")
    demo.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for results.json and plots")
    demo.add_argument("--quick", action="store_true", help="a smaller run (under 2 minutes on 2 CPU cores)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--base", help="base SAM (default: the shipped tiny SAM)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")

    bench = sub.add_parser(
        "benchmark", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="the continual protocol for SAMCL and the baselines, several seeds: tables and plots",
        description="Learn the domains in order with every method (same epochs and batch; learning rates chosen per "
                    "method on a held-out part of the first domain), evaluate all domains after every step, and "
                    "write results.json, results.md and plots. Resumable: rerun the same command after an "
                    "interruption.",
        epilog="methods: zero-shot, sequential, sequential-lora, ewc, lwf, replay, replay-matched, o-lora, samcl, "
               "samcl-lora, samcl-noprompt, samcl-oracle, joint\n\nexamples:\n"
               "  samcl benchmark --quick --out bench-quick\n"
               "  samcl benchmark --out bench --jobs 2                         # embedded suite, seeds 0,1,2\n"
               "  samcl benchmark --base sam_vit_b_01ec64.pth --domain polyps=data/kvasir "
               "--domain camo=data/camo --out bench\n")
    bench.add_argument("--out", type=Path, default=Path("benchmark-out"), help="folder for results and plots")
    bench.add_argument("--methods", default=None, help="comma-separated methods (default: all)")
    bench.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0,1,2; --quick: 0)")
    bench.add_argument("--quick", action="store_true", help="small sizes: a few minutes on 2 CPU cores")
    bench.add_argument("--base", help="base SAM (default: the shipped tiny SAM)")
    bench.add_argument("--domain", type=_named_dir, action="append", metavar="NAME=DIR",
                       help="a domain folder (train/ and test/) to learn, in order (default: the embedded suite)")
    bench.add_argument("--extra", type=_named_dir, action="append", metavar="NAME=DIR",
                       help="a domain folder only evaluated (unseen), with --domain")
    bench.add_argument("--general", type=_named_dir, metavar="NAME=DIR",
                       help="the base model's own domain: SAMCL learns it as its 'base' class, all are evaluated on it")
    bench.add_argument("--epochs", type=int, default=None, help="epochs per domain for every method")
    bench.add_argument("--batch-size", type=int, default=None, help="batch size for every method")
    bench.add_argument("--jobs", type=int, default=1, help="parallel (method, seed) runs, one CPU thread each")
    bench.add_argument("--state", type=Path, default=None, help="state folder for resuming (default: OUT/state)")
    bench.add_argument("--max-steps", type=int, default=None,
                       help="stop after this many protocol steps (exit code 3); rerun to continue")
    bench.add_argument("--json", action="store_true", help="print a JSON summary")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .io import SamclError

    try:
        return COMMANDS[args.command](args)
    except (SamclError, ValueError, OSError) as exc:  # bad input or files: one line, exit 2 (--debug: traceback)
        if args.debug:
            raise
        print(f"samcl: error: {_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("samcl: interrupted; the store is unchanged unless a step finished", file=sys.stderr)
        return 130


def _error_line(exc: BaseException) -> str:
    """An error as one line; an OSError from below (permission denied, disk full...) as 'FILE: reason'."""
    from .io import SamclError

    if isinstance(exc, OSError) and not isinstance(exc, SamclError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _file_warning(message: str, data) -> str:
    """'<stem>: problem' (the trainer names samples by stem) -> '<mask file>: problem'."""
    stem, sep, rest = message.partition(": ")
    return f"{data.masks[stem]}: {rest}" if sep and stem in getattr(data, "masks", {}) else message


def _table(rows: list[list], header: list[str]) -> str:
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def cmd_learn(args) -> int:
    from . import distributed
    from .backbone import load_backbone, resolve_base
    from .data.folders import FolderDataset, resolve_split
    from .io import SamclError
    from .learner import SAMCL
    from .selector import SelectorConfig
    from .store import ModuleStore
    from .trainer import TrainConfig

    ctx = distributed.init(args.device)  # under torchrun: join the process group, one device per process
    device = ctx.device if ctx is not None else args.device
    data = FolderDataset(resolve_split(args.data, "train"), seed=args.seed, points_per_image=args.points)
    if ModuleStore(args.store).exists():
        samcl = SAMCL.open(args.store, base=args.base, device=device)
    else:
        selector = SelectorConfig(block=args.selector_block, samples_per_domain=args.samples_per_domain,
                                  epochs=args.selector_epochs)
        if args.selector_max_steps is not None:
            selector = replace(selector, max_steps=args.selector_max_steps or None)
        samcl = SAMCL.create(load_backbone(args.base), args.store, rank=args.rank, selector=selector,
                             dtype=args.dtype, base_hint=resolve_base(args.base), device=device)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         points_per_image=args.points, progress=not args.json and (ctx is None or ctx.is_main),
                         amp=args.amp)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            report = samcl.learn(args.domain, data, config, base=args.as_base)
        except ValueError as exc:  # found while reading the samples (e.g. no usable mask): name the folder
            raise SamclError(f"{data.root}: {_error_line(exc)}") from None
    distributed.shutdown()
    if ctx is not None and not ctx.is_main:
        return 0  # rank 0 reports (and wrote the store)
    report["warnings"] = [str(w.message) for w in caught if "samcl" in w.filename or "empty mask" in str(w.message)]
    report["warnings"] = [_file_warning(message, data) for message in report["warnings"]]
    for message in report["warnings"]:
        print(f"samcl: warning: {message}", file=sys.stderr)
    report["domains"] = samcl.domains
    report["storage"] = samcl.storage()
    if args.json:
        print(json.dumps(report, default=float))
    else:
        stats = report.get("stats", {})
        print(f"learned {args.domain!r} ({report['kind']}) from {len(data)} images in {args.data}")
        if stats:
            print(f"  loss {stats['loss_first']:.4f} -> {stats['loss_last']:.4f} over {stats['steps']} steps "
                  f"({stats['seconds']:.1f} s)")
        print(f"  module {report['bytes']:,} bytes; store now holds: {', '.join(samcl.domains)}")
    return 0


def cmd_info(args) -> int:
    from .store import ModuleStore

    store = ModuleStore(args.store)
    manifest = store.read_manifest()
    state = store.load()  # verifies every file's checksum
    domains = [{"name": d.name, "kind": d.kind, "bytes": d.bytes, "parameters": d.parameters,
                "file": d.file, "sha256": d.sha256} for d in state.domains]
    selector, buffer = manifest.get("selector", {}), manifest.get("buffer", {})
    module_bytes = sum(d["bytes"] for d in domains)
    info = {
        "store": str(args.store), "format_version": manifest["format_version"], "backbone": manifest["backbone"],
        "base": manifest.get("base_hint"), "dtype": manifest.get("dtype"), "augmodule": manifest.get("augmodule"),
        "selector": {"block": selector.get("block"), "config": selector.get("config"), "bytes": selector.get("bytes", 0)},
        "buffer": {"bytes": buffer.get("bytes", 0), "count": buffer.get("count", 0)},
        "domains": domains,
        "storage": {"modules": module_bytes, "selector": selector.get("bytes", 0), "buffer": buffer.get("bytes", 0),
                    "total": module_bytes + selector.get("bytes", 0) + buffer.get("bytes", 0)},
    }
    if args.json:
        print(json.dumps(info))
        return 0
    backbone = manifest["backbone"]
    print(f"store {args.store}  (format v{manifest['format_version']}, {manifest.get('dtype')})")
    print(f"base  {backbone['family']} / {backbone['architecture']}  weights {backbone['weights_sha256'][:12]}  "
          f"({manifest.get('base_hint')})")
    print(f"selector block {selector.get('block')}, {buffer.get('count', 0)} buffered embeddings\n")
    rows = [[i, d["name"], d["kind"], f"{d['parameters']:,}", f"{d['bytes']:,}"] for i, d in enumerate(domains)]
    print(_table(rows, ["#", "domain", "kind", "params", "bytes"]))
    s = info["storage"]
    print(f"\nmodules {s['modules']:,} B + selector {s['selector']:,} B + buffer {s['buffer']:,} B "
          f"= {s['total']:,} B ({s['total'] / 2**20:.3f} MiB)")
    return 0


def cmd_segment(args) -> int:
    import numpy as np

    from .io import SamclError, atomic_write_png, read_image
    from .learner import SAMCL, Prompt

    if not args.point and not args.negative and args.box is None:
        print("samcl: warning: no prompt given; segmenting with no points or box", file=sys.stderr)
    images = [read_image(path) for path in args.images]
    several = len(images) > 1
    if several and args.out.suffix.lower() == ".png":
        raise SamclError(f"{args.out}: several images need --out to be a directory")
    points = [*args.point, *args.negative]
    labels = [1] * len(args.point) + [0] * len(args.negative)
    for path, image in zip(args.images, images):
        height, width = image.shape[:2]
        for x, y in points:
            if not (0 <= x < width and 0 <= y < height):
                raise SamclError(f"{path}: point {x:g},{y:g} lies outside the {width}x{height} image")
    samcl = SAMCL.open(args.store, base=args.base, device=args.device)
    prompt = Prompt.of(points or None, labels or None, args.box)
    results = samcl.segment(images, [prompt] * len(images), domain=args.domain)
    out = []
    for path, result in zip(args.images, results):
        target = args.out / f"{path.stem}.png" if several else args.out
        atomic_write_png(target, (result.masks[0] * 255).astype(np.uint8))
        out.append({"image": str(path), "mask": str(target), "domain": result.domain,
                    "score": float(result.scores[0]), "foreground": float(result.masks[0].mean())})
    if args.json:
        print(json.dumps(out[0] if not several else {"results": out}))
    else:
        print(_table([[Path(r["image"]).name, r["domain"], f"{r['score']:.3f}", r["mask"]] for r in out],
                     ["image", "module", "score", "mask"]))
    return 0


def cmd_eval(args) -> int:
    from .data.folders import FolderDataset, resolve_split
    from .learner import SAMCL

    datasets = {name: FolderDataset(resolve_split(path, "test"), seed=args.seed) for name, path in args.data}
    samcl = SAMCL.open(args.store, base=args.base, device=args.device)
    results = {name: samcl.evaluate(data, domain=name, progress=not args.json) for name, data in datasets.items()}
    if args.json:
        print(json.dumps({"domains": results, "learned": samcl.domains}))
        return 0
    rows = [[name, r["images"], f"{r['iou']:.4f}", f"{r['f1']:.4f}", f"{r['mae']:.4f}",
             f"{r['selector_accuracy']:.3f}", ", ".join(f"{k}:{v}" for k, v in r["chosen"].items())]
            for name, r in results.items()]
    print(_table(rows, ["domain", "images", "IoU", "F1", "MAE", "selector acc", "chosen"]))
    return 0


def cmd_demo(args) -> int:
    from .demo import main_demo

    return main_demo(args.out, args.quick, args.seed, args.json, device=args.device, base=args.base)


def cmd_benchmark(args) -> int:
    from .bench import main_benchmark

    return main_benchmark(args)


COMMANDS = {"benchmark": cmd_benchmark, "demo": cmd_demo, "learn": cmd_learn, "info": cmd_info, "segment": cmd_segment,
            "eval": cmd_eval}

if __name__ == "__main__":
    sys.exit(main())
