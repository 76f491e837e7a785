"""The subcommands. Each imports what it needs when it runs, so a command pays only for its own imports."""

from __future__ import annotations

import sys
import warnings

from .. import SamclError
from ..io import print_json
from .checks import check_amp, check_device, check_store_path, dataset, precheck_store, writable_folder
from .errors import error_line, in_flags
from .eval_command import cmd_eval
from .segment_command import cmd_segment
from .store_commands import cmd_forget, cmd_import_reference, cmd_merge, table
from .track import cmd_track


def cmd_learn(args) -> int:
    from .. import SelectorConfig
    from ..learning import distributed
    from ..selector import DEFAULT_KIND

    check_store_path(args.store)
    check_device(args.device)
    ctx = distributed.init(args.device)  # under torchrun: join the process group, one device per process
    device = ctx.device if ctx is not None else args.device
    check_amp(args.amp, device)
    data = dataset(args.data, "train", args.seed, args.points_frame, args.points_per_image, args.skip_unlabeled,
                   args.group_by)
    manifest = precheck_store(args.store)
    from .. import SAMCL, TrainConfig, load_backbone
    from ..backbone import resolve_base

    if manifest is not None:
        samcl = SAMCL.open(args.store, base=args.base, device=device, manifest=manifest)
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
            report = samcl.learn(args.domain, data, config, without_module=args.without_module, replace=args.replace)
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
    from ..store import ModuleStore

    manifest = ModuleStore(args.store).read_manifest()
    ModuleStore(args.store).load(manifest=manifest)  # everything open checks: structure, checksums, shapes, values
    from ..backbone import adaptable_blocks
    from ..store import check_recorded_base

    unchecked = check_recorded_base(manifest, args.store, adaptable_blocks(manifest.base_hint,
                                                                           manifest.backbone.family))
    manifest = manifest.to_dict()  # (as written)
    domains = [{"name": d["name"], "kind": d["kind"], "bytes": d["bytes"], "parameters": d["parameters"],
                "file": d["file"], "sha256": d["sha256"]} for d in manifest["domains"]]
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
        "runtime": runtime_info(args.device, manifest),
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
    kept = (f"{buffer.get('count', 0)} buffered pooled features" if kind == "mlp"
            else "per-domain statistics, no pooled features")
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


def runtime_info(device, manifest: dict | None = None) -> dict:
    """What --runtime auto picks here (for the store of `manifest`), and which runtimes are installed (no model code
    imported)."""
    from .. import runtime

    graphs = manifest is None or runtime.covered(manifest["backbone"]["family"],
                                                 (manifest.get("augmodule") or {}).get("heat_mode"))
    return {"auto": runtime.resolve("auto", device, graphs=graphs),
            "installed": [r for r in runtime.RUNTIMES if runtime.installed(r)],
            "rule": runtime.describe_auto()}


def cmd_export(args) -> int:
    from .. import SAMCL
    from ..runtime import export_store

    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise SamclError(f"{args.out}: exists and is not an empty folder; give a new folder for the export")
    samcl = SAMCL.open(args.store, base=args.base, device="cpu", precision="float32")
    try:
        description = export_store(samcl, args.out)
    except SamclError as exc:  # the library's "use runtime 'torch'" is for inference; export has no --runtime
        if exc.field != "runtime":
            raise
        raise SamclError(str(exc).removesuffix(": use runtime 'torch'"), code=exc.code) from None
    if args.json:
        print_json(description)
        return 0
    files = sorted(p.name for p in args.out.iterdir())
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"exported {args.store} to {args.out} ({size / 2**20:.1f} MiB): {', '.join(files)}")
    print(f"  domains: {', '.join(d['name'] + ' (row ' + str(d['row']) + ')' for d in description['domains']) or 'none'}"
          "; row 0 = base")
    return 0


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
    check_store_path(args.store)
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
                         threads=args.threads, precision=args.precision, fallback=args.fallback,
                         label_studio=label_studio, runtime=args.runtime, refine=args.refine,
                         tracker_max_sessions=args.tracker_max_sessions, tracker_max_objects=args.tracker_max_objects,
                         tracker_idle_seconds=args.tracker_idle_seconds)
    serve(config, workers=args.workers)
    return 0


COMMANDS = {"benchmark": cmd_benchmark, "demo": cmd_demo, "learn": cmd_learn, "info": cmd_info,
            "segment": cmd_segment, "eval": cmd_eval, "serve": cmd_serve, "forget": cmd_forget, "merge": cmd_merge,
            "import-reference": cmd_import_reference, "export": cmd_export,
            "track": cmd_track}
