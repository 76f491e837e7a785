"""The subcommands. Each imports what it needs when it runs, so a command pays only for its own imports."""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

from .. import SamclError
from ..io import print_json
from .errors import error_line, in_flags
from .auto_command import auto_flags_given, auto_plan, auto_run
from .store_commands import cmd_forget, cmd_import_reference, cmd_merge, table
from .track import cmd_track


def check_device(name: str | None) -> None:
    """--device names a device this PyTorch has, or one line says why not (before any model is loaded)."""
    if name is None:
        return
    import torch

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            why = "this PyTorch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise SamclError(f"--device {name}: {why}; use --device cpu")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise SamclError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s), cuda:0 and up")
    if name == "mps" and not torch.backends.mps.is_available():
        raise SamclError("--device mps: Apple's MPS is not available here; use --device cpu")


def check_amp(amp: str, device) -> None:
    """--amp bf16 on a CPU without native bfloat16 is refused: emulated, a training step took 34x float32's CPU
    time at ViT-B size for the same losses (benchmarks/amp_cpu.py), so float32 is the right choice there."""
    if amp != "bf16":
        return
    import torch

    from ..inference import precision

    on_cpu = (str(device) == "cpu") if device is not None else not torch.cuda.is_available()
    if on_cpu and not precision.native_bf16():
        raise SamclError("--amp bf16: this CPU has no native bfloat16 (no avx512_bf16/amx_bf16 flag), where a "
                         "bf16 training step takes about 34x the float32 time; use --amp none")


def note(message: str) -> None:
    print(f"samcl: {in_flags(message, None)}", file=sys.stderr)


def _dataset(path: Path, split: str, seed: int, frame: str, points: int = 3, skip_unlabeled: bool = False):
    from .. import FolderDataset
    from ..data import resolve_split

    data = FolderDataset(resolve_split(path, split), seed=seed, points_per_image=points, points_frame=frame,
                         skip_unlabeled=True)  # counted here, so the error can name the flag that skips them
    if data.unlabeled and not skip_unlabeled:
        more = f" (and {len(data.unlabeled) - 1} more)" if len(data.unlabeled) > 1 else ""
        hint = "; --skip-unlabeled learns from the others" if split == "train" else ""
        raise SamclError(f"{data.unlabeled[0]}: no mask with the same name in {data.root / 'masks'}{more}{hint}")
    if data.unlabeled:
        print(f"samcl: warning: {data.root / 'images'}: left out {len(data.unlabeled)} of "
              f"{len(data) + len(data.unlabeled)} images that have no mask (first: {data.unlabeled[0].name})",
              file=sys.stderr)
    if data.points_note:
        note(data.points_note)
    return data


def _check_store_path(store: Path) -> None:
    if store.is_symlink() and not store.exists():
        raise SamclError(f"{store}: a symlink to {os.readlink(store)}, which does not exist; create the folder it "
                         "points to, or remove the link")


def _precheck_store(store: Path) -> None:
    """A store's manifest and the files it names, looked at before the base model (and transformers) loads: a bad
    manifest or a FIFO in the store is named in a second, not after the model is built."""
    from ..store import ModuleStore

    if ModuleStore(store).exists():
        ModuleStore(store).check_files(ModuleStore(store).read_manifest())


def cmd_learn(args) -> int:
    from .. import SelectorConfig
    from ..learning import distributed
    from ..selector import DEFAULT_KIND
    from ..store import ModuleStore

    _check_store_path(args.store)
    check_device(args.device)
    ctx = distributed.init(args.device)  # under torchrun: join the process group, one device per process
    device = ctx.device if ctx is not None else args.device
    check_amp(args.amp, device)
    data = _dataset(args.data, "train", args.seed, args.points_frame, args.points_per_image, args.skip_unlabeled)
    _precheck_store(args.store)
    from .. import SAMCL, TrainConfig, load_backbone
    from ..backbone import resolve_base

    if ModuleStore(args.store).exists():
        samcl = SAMCL.open(args.store, base=args.base, device=device)
        kind = samcl.module_set.selector_config.kind
        if args.selector is not None and args.selector != kind:
            raise SamclError(f"--selector {args.selector}: {args.store} already uses the {kind} selector "
                             "(the kind is chosen when a store is created)")
        features = samcl.module_set.selector_config.features
        if args.selector_features is not None and args.selector_features != features:
            raise SamclError(f"--selector-features {args.selector_features}: {args.store}'s selector reads "
                             f"{features} (chosen when a store is created)")
    else:
        selector = SelectorConfig(kind=args.selector or DEFAULT_KIND, features=args.selector_features,
                                  block=args.selector_block, samples_per_domain=args.samples_per_domain,
                                  epochs=args.selector_epochs, max_steps=args.selector_max_steps or None)
        samcl = SAMCL.create(load_backbone(args.base), args.store, rank=args.rank, selector=selector,
                             dtype=args.dtype, base_hint=resolve_base(args.base), device=device)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         points_per_image=args.points_per_image, prompts=args.prompts, amp=args.amp, cache_bytes=int(args.cache_mb * 2**20),
                         progress=not args.json and (ctx is None or ctx.is_main))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            report = samcl.learn(args.domain, data, config, as_base=args.as_base, replace=args.replace)
        except ValueError as exc:  # found while reading the samples (e.g. no usable mask): name the folder
            raise SamclError(f"{data.root}: {error_line(exc)}") from None
    distributed.shutdown()
    if ctx is not None and not ctx.is_main:
        return 0  # rank 0 reports (and wrote the store)
    report["warnings"] = [in_flags(_file_warning(str(w.message), data), None) for w in caught
                          if "samcl" in w.filename or "empty mask" in str(w.message)]
    for message in report["warnings"]:
        print(f"samcl: warning: {message}", file=sys.stderr)
    report["domains"] = samcl.domains
    report["storage"] = samcl.storage()
    report["skipped_unlabeled"] = [str(path) for path in data.unlabeled]
    if args.json:
        print_json(report)
        return 0
    stats = report.get("stats", {})
    verb = "relearned" if args.replace else "learned"
    print(f"{verb} {args.domain!r} ({report['kind']}) from {len(data)} images in {args.data}")
    if stats:
        print(f"  loss {stats['loss_first']:.4f} -> {stats['loss_last']:.4f} over {stats['steps']} steps "
              f"({stats['seconds']:.1f} s)")
    print(f"  module {report['bytes']:,} bytes; store now holds: {', '.join(samcl.domains)}")
    return 0


def _file_warning(message: str, data) -> str:
    """'<stem>: problem' (the trainer names samples by stem) -> '<mask file>: problem'."""
    stem, sep, rest = message.partition(": ")
    return f"{data.masks[stem]}: {rest}" if sep and stem in getattr(data, "masks", {}) else message


def cmd_info(args) -> int:
    from ..inference import precision
    from ..store import ModuleStore, read_manifest

    manifest = read_manifest(args.store)
    ModuleStore(args.store).load(manifest=manifest)  # everything open checks: structure, checksums, shapes, values
    from ..backbone import adaptable_blocks
    from ..store import check_recorded_base

    unchecked = check_recorded_base(manifest, args.store, adaptable_blocks(manifest.get("base_hint"),
                                                                           manifest["backbone"]["family"]))
    try:
        domains = [{"name": d["name"], "kind": d["kind"], "bytes": d.get("bytes", 0),
                    "parameters": d.get("parameters", 0), "file": d.get("file"), "sha256": d.get("sha256")}
                   for d in manifest["domains"]]
    except (KeyError, TypeError) as exc:
        raise SamclError(f"{args.store}/manifest.json: malformed manifest ({type(exc).__name__}: {exc})") from None
    selector, buffer = manifest.get("selector", {}), manifest.get("buffer", {})
    module_bytes = sum(d["bytes"] for d in domains)
    total = module_bytes + selector.get("bytes", 0) + buffer.get("bytes", 0)
    info = {
        "store": str(args.store), "format_version": manifest["format_version"], "backbone": manifest["backbone"],
        "base": manifest.get("base_hint"), "dtype": manifest.get("dtype"), "augmodule": manifest.get("augmodule"),
        "selector": {"kind": selector.get("kind", "mlp"), "block": selector.get("block"),
                     "config": selector.get("config"), "bytes": selector.get("bytes", 0)},
        "buffer": {"bytes": buffer.get("bytes", 0), "count": buffer.get("count", 0)},
        "domains": domains,
        "storage": {"modules": module_bytes, "selector": selector.get("bytes", 0), "buffer": buffer.get("bytes", 0),
                    "total": total},
        "inference_precision": {"auto": precision.resolve("auto", args.device), "native_bf16": precision.native_bf16()},
        "runtime": runtime_info(args.device),
        "unchecked": unchecked,
    }
    if args.json:
        print_json(info)
        return 0
    backbone = manifest["backbone"]
    print(f"store {args.store}  (format v{manifest['format_version']}, {manifest.get('dtype')})")
    print(f"base  {backbone['family']} / {backbone['architecture']}  weights {backbone['weights_sha256'][:12]}  "
          f"({manifest.get('base_hint')})")
    kind = info["selector"]["kind"]
    kept = f"{buffer.get('count', 0)} buffered embeddings" if kind == "mlp" else "per-domain statistics, no embeddings"
    features = selector["config"]["features"]
    print(f"selector {kind} on the {features} of block {selector.get('block')}, {kept}")
    if (manifest.get("augmodule") or {}).get("heat_mode") == "reference":
        print("imported from the authors' files: their forward (stretched input, their heat); learn refuses it")
    print()
    rows = [[i, d["name"], d["kind"], f"{d['parameters']:,}", f"{d['bytes']:,}"] for i, d in enumerate(domains)]
    print(table(rows, ["#", "domain", "kind", "params", "bytes"]))
    s = info["storage"]
    print(f"\nmodules {s['modules']:,} B + selector {s['selector']:,} B + buffer {s['buffer']:,} B "
          f"= {s['total']:,} B ({s['total'] / 2**20:.3f} MiB)")
    print(f"runtime (--runtime auto): {info['runtime']['auto']} here; {info['runtime']['rule']}")
    print(f"inference precision (--precision auto): {info['inference_precision']['auto']} here; "
          f"{precision.describe_auto()}")
    print(f"not checked without loading the base: {'; '.join(unchecked)}")
    return 0


def runtime_info(device) -> dict:
    """What --runtime auto picks here, and which runtimes are installed (no model code imported)."""
    from .. import runtime

    return {"auto": runtime.resolve("auto", device), "installed": [r for r in runtime.RUNTIMES if runtime.installed(r)],
            "rule": runtime.describe_auto()}


def cmd_export(args) -> int:
    from .. import SAMCL
    from ..runtime import export_store

    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise SamclError(f"{args.out}: exists and is not an empty folder; give a new folder for the export")
    samcl = SAMCL.open(args.store, base=args.base, device="cpu", precision="float32")
    description = export_store(samcl, args.out)
    if args.json:
        print_json(description)
        return 0
    files = sorted(p.name for p in args.out.iterdir())
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"exported {args.store} to {args.out} ({size / 2**20:.1f} MiB): {', '.join(files)}")
    print(f"  domains: {', '.join(d['name'] + ' (row ' + str(d['row']) + ')' for d in description['domains']) or 'none'}"
          "; row 0 = base")
    return 0


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
    _precheck_store(args.store)
    import numpy as np

    from .. import SAMCL

    samcl = SAMCL.open(args.store, base=args.base, device=args.device, fallback=not args.no_fallback,
                       precision=args.precision, runtime=args.runtime)
    if auto:
        return auto_run(args, samcl, images, config, auto_targets)
    results = samcl.segment(images, [prompt] * len(images), force=args.force, multimask_output=args.multimask)
    out = []
    for j, (path, target, result) in enumerate(zip(args.images, targets, results)):
        row = {"image": str(path), "domain": result.domain, "selector_score": result.selector_score}
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
        print(table(rows, ["image", "module", "score", "mask"]), file=sys.stderr if args.out == "-" else sys.stdout)
    return 0


def cmd_eval(args) -> int:
    from .. import SAMCL
    from ..store import BASE_CLASS

    folders: dict[str, str] = {}
    for name, path in args.data:
        if name in folders:
            raise SamclError(f"--data {name}: given twice ({folders[name]} and {path}); one folder per domain")
        folders[name] = path
    check_device(args.device)
    datasets = {name: _dataset(Path(path), "test", args.seed, args.points_frame) for name, path in folders.items()}
    samcl = SAMCL.open(args.store, base=args.base, device=args.device, precision=args.precision,
                       runtime=args.runtime)
    base_name = next((d.name for d in samcl.module_set.domains if d.kind == "base"), None)
    known = {*samcl.domains, BASE_CLASS}
    for name in folders:
        if name not in known:
            print(f"samcl: warning: --data {name}: not a domain of this store (learned: "
                  f"{', '.join(samcl.domains) or 'none'}); its masks are scored, selector accuracy is not",
                  file=sys.stderr)
    if args.clicks is not None:
        return _eval_clicks(args, samcl, datasets, base_name)
    results = {}
    for name, data in datasets.items():
        truth = BASE_CLASS if name == base_name else (name if name in known else None)
        result = samcl.evaluate(data, truth=truth, progress=not args.json)
        if base_name is not None:  # results name the base class 'base'; the user named it
            result["chosen"] = {(base_name if k == BASE_CLASS else k): v for k, v in result["chosen"].items()}
        result.setdefault("selector_accuracy", None)
        results[name] = result
    if args.json:
        print_json({"domains": results, "learned": samcl.domains, "precision": samcl.precision})
        return 0
    rows = [[name, r["images"], f"{r['iou']:.4f}", f"{r['f1']:.4f}", f"{r['mae']:.4f}",
             "-" if r["selector_accuracy"] is None else f"{r['selector_accuracy']:.3f}",
             ", ".join(f"{k}:{v}" for k, v in r["chosen"].items())] for name, r in results.items()]
    print(table(rows, ["domain", "images", "IoU", "F1", "MAE", "selector acc", "chosen"]))
    print(f"precision {samcl.precision}")
    return 0


def _eval_clicks(args, samcl, datasets: dict, base_name: str | None) -> int:
    """`samcl eval --clicks N`: the simulated clicker (`samcl.bench.clicks`) per domain, for the selector's pick
    (routed), the base, and the domain's own module (oracle) where the domain is learned."""
    from ..bench import evaluate_clicks
    from ..store import BASE_CLASS

    results: dict[str, dict] = {}
    for name, data in datasets.items():
        runs = {"routed": None, "base": BASE_CLASS}
        if name in samcl.domains and name != base_name:
            runs["oracle"] = name
        results[name] = {run: evaluate_clicks(samcl, data, force=force, max_clicks=args.clicks,
                                              progress=not args.json, desc=f"{name} {run}")
                         for run, force in runs.items()}
    if args.json:
        print_json({"clicks": args.clicks, "domains": results, "learned": samcl.domains,
                    "precision": samcl.precision})
        return 0
    keys = [k for k in next(iter(next(iter(results.values())).values())) if k.startswith(("miou", "noc"))]
    rows = [[name, run, r["images"], *(f"{r[k]:.3f}" if k.startswith("miou") else f"{r[k]:.2f}" for k in keys)]
            for name, runs in results.items() for run, r in runs.items()]
    print(table(rows, ["domain", "run", "images", *(k.replace("miou", "mIoU").replace("noc", "NoC") for k in keys)]))
    print(f"clicks {args.clicks} (NoC: clicks to reach the IoU, {args.clicks} when never reached); "
          f"precision {samcl.precision}")
    return 0


def writable_folder(folder: Path) -> None:
    """Create `folder` and write a file in it now, so a long run cannot fail at its end for want of a place."""
    if folder.exists() and not folder.is_dir():
        raise SamclError(f"{folder}: is a file; --out names a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise SamclError(f"{folder}: cannot write there ({exc.strerror or exc})") from None


def cmd_demo(args) -> int:
    writable_folder(args.out)
    check_device(args.device)
    from ..bench import main_demo

    return main_demo(args.out, args.quick, args.seed, args.json, device=args.device, base=args.base)


def cmd_benchmark(args) -> int:
    writable_folder(args.out)
    check_device(args.device)
    from ..bench import main_benchmark

    return main_benchmark(args)


def cmd_serve(args) -> int:
    _check_store_path(args.store)
    check_device(args.device)
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise SamclError(f"samcl serve needs {exc.name}: pip install 'samcl[serve]'") from None
    from ..serve import LabelStudioSettings, ServeConfig, serve

    label_studio = {"url": args.label_studio_url, "api_key": args.label_studio_api_key,
                    "allowed_urls": args.allow_image_url, "basic_auth": args.label_studio_basic_auth,
                    "train_every": args.train_every, "epochs": args.train_epochs,
                    "max_learn_tasks": args.learn_max_tasks, "max_learn_megapixels": args.learn_max_megapixels,
                    "preannotate": args.label_studio_preannotate == "on", "max_masks": args.label_studio_max_masks}
    LabelStudioSettings(**label_studio)  # a bad setting is one line now, before the model loads
    config = ServeConfig(store=args.store, host=args.host, port=args.port, token=args.token, device=args.device,
                         base=args.base, batch_window_ms=args.batch_window_ms, max_batch=args.max_batch,
                         cache_bytes=int(args.cache_mb * 2**20), max_upload_bytes=int(args.max_upload_mb * 2**20),
                         max_megapixels=args.max_megapixels, max_inflight_bytes=int(args.max_inflight_mb * 2**20),
                         body_timeout_seconds=args.body_timeout_seconds,
                         reload_seconds=args.reload_seconds, reload_timeout_seconds=args.reload_timeout_seconds,
                         threads=args.threads, precision=args.precision, fallback=not args.no_fallback,
                         label_studio=label_studio, runtime=args.runtime, refine=args.refine)
    serve(config, workers=args.workers)
    return 0


COMMANDS = {"benchmark": cmd_benchmark, "demo": cmd_demo, "learn": cmd_learn, "info": cmd_info,
            "segment": cmd_segment, "eval": cmd_eval, "serve": cmd_serve, "forget": cmd_forget, "merge": cmd_merge,
            "import-reference": cmd_import_reference, "export": cmd_export,
            "track": lambda args: cmd_track(args, check_device, _precheck_store)}
