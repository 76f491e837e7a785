"""Exporting a store: the graphs (built once per base and export settings, cached on disk) and a folder that runs
without samcl.

    folder = cached_graphs(backbone, aug_config, selector_block)   # prefix/suffix/decoder.onnx, built on first use
    export_store(samcl, "my-set-onnx")                              # graphs + module rows + selector + samcl_export.json

The graphs depend only on the base's weights, the AugModule's shapes (config) and the selector block, never on
the learned modules (their rows are graph inputs), so one cached build serves every store on the same base and
every generation of a store; the key is a hash of the base's identity and those settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
import warnings
from pathlib import Path

import torch

from .._version import __version__
from ..errors import SamclError
from ..io import (NoSuchFile, atomic_write_bytes, atomic_write_json, current_umask, fsync_dir, open_regular,
                  quote, read_json_file)
from ..method.augmodule import AugModuleConfig, parameter_shapes
from ..store.files import tensors_to_bytes
from .graphs import OPSET, export_graphs, row_input

#: Bumped whenever what the graphs compute or their interface changes: older cache entries are then ignored.
GRAPH_FORMAT = 2
EXPORT_JSON = "samcl_export.json"
CACHE_ENV = "SAMCL_CACHE_DIR"


def cache_root() -> Path:
    """$SAMCL_CACHE_DIR, else $XDG_CACHE_HOME/samcl, else ~/.cache/samcl."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "samcl"


def refuse_unsupported(backbone, config: AugModuleConfig | None) -> None:
    """One line naming why a set cannot run as graphs: SAM 2 (Hiera) and the authors' imported modules."""
    if getattr(backbone, "family", "sam") != "sam":
        why = (f"graph export supports SAM (ViT) bases only; this store's base is {backbone.family} "
               f"({backbone.label}'s encoder is not exported yet)")
        raise SamclError(f"{why}: use runtime 'torch'", code="unsupported", field="runtime")
    if config is not None and config.heat_mode == "reference":
        why = ("this store holds modules imported from the authors' files (heat mode 'reference': their stretched "
               "input and their heat), which the graphs do not implement")
        raise SamclError(f"{why}: use runtime 'torch'", code="unsupported", field="runtime")


def graph_settings(backbone, config: AugModuleConfig, selector_block: int) -> dict:
    """Everything the graphs depend on: the cache key's content, recorded next to the graphs."""
    return {"graph_format": GRAPH_FORMAT, "opset": OPSET, "backbone": backbone.identity(),
            "augmodule": config.to_dict(), "selector_block": selector_block, "image_size": backbone.image_size}


def graph_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]


def cached_graphs(backbone, config: AugModuleConfig, selector_block: int, root: Path | None = None) -> Path:
    """The folder holding this base's graphs for these settings, exported now if no earlier run did, and checked
    like a store before use: the cache folders are the user's own and writable by no one else (else refused,
    naming why), each graph a regular file whose sha256 matches the one recorded in graphs.json when it was built
    (else the entry is rebuilt: a truncated, altered or swapped graph is never run). A build happens in a
    temporary sibling folder renamed into place, so a crash or a second process building at the same time never
    leaves a half-written entry; the leftovers of killed builds are removed."""
    refuse_unsupported(backbone, config)
    settings = graph_settings(backbone, config, selector_block)
    graphs = (root or cache_root()) / "graphs"
    folder = graphs / graph_key(settings)
    _private_folders(graphs)
    _remove_leftovers(graphs)
    problem = _entry_problem(folder, settings)
    if problem is None:
        return folder
    if folder.exists() or folder.is_symlink():
        warnings.warn(f"graph cache {folder}: {problem}; rebuilding it", stacklevel=2)
    building = Path(tempfile.mkdtemp(prefix=f".build-{os.getpid()}-", dir=graphs))
    try:
        with torch.no_grad():
            interface = export_graphs(backbone, config, selector_block, building)
        digests = {path.name: _sha256(path) for path in sorted(building.iterdir()) if path.suffix == ".onnx"}
        atomic_write_json(building / "graphs.json", {"settings": settings, "graphs": interface, "sha256": digests})
        os.chmod(building, 0o755 & ~current_umask())
        _put_in_place(building, folder, settings)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder


#: graphs.json holds names, shapes and digests: a few KB.
GRAPHS_JSON_LIMIT = 1 << 20
#: A `.build-PID-*` folder whose builder is gone (or older than this, for a builder on another machine) is a
#: killed build's leftover.
STALE_BUILD_SECONDS = 24 * 3600


def _private_folders(graphs: Path) -> None:
    """Create the cache's graphs folder (rwxr-xr-x at most) and refuse one that anyone could write to, or that
    another user owns: a graph there could be altered together with its recorded digest."""
    try:
        for folder in [*reversed(graphs.parents), graphs]:
            if not folder.is_dir():
                folder.mkdir(mode=0o755, exist_ok=True)  # (every folder made here: never writable by others)
    except OSError as exc:
        raise SamclError(f"graph cache {graphs}: cannot create it ({exc.strerror or exc}); set {CACHE_ENV} to a "
                         "folder of your own") from None
    for folder in (graphs.parent, graphs):
        info = folder.stat()
        why = None
        if info.st_uid not in (os.getuid(), 0):
            why = f"owned by another user (uid {info.st_uid})"
        elif info.st_mode & 0o002:  # (group-writable is the norm with per-user groups and umask 002)
            why = f"writable by others (mode {stat.S_IMODE(info.st_mode):04o})"
        if why:
            raise SamclError(f"graph cache {folder}: {why}, so its graphs cannot be trusted; make it private "
                             f"(chmod go-w {folder}) or set {CACHE_ENV} to a folder of your own")


def _entry_problem(folder: Path, settings: dict) -> str | None:
    """None if `folder` is a complete entry for `settings` whose graphs match their recorded digests, else what
    is wrong (nothing is read from a FIFO or device: `open_regular`)."""
    if not folder.exists() and not folder.is_symlink():
        return "missing"
    if folder.is_symlink() or not folder.is_dir():
        return "not a folder"
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o002:
        return f"writable by others or not yours (mode {stat.S_IMODE(info.st_mode):04o}, uid {info.st_uid})"
    try:
        record = read_json_file(folder / "graphs.json", GRAPHS_JSON_LIMIT, "graphs.json")
    except NoSuchFile:
        return "no graphs.json"
    except SamclError as exc:
        return str(exc).replace(f"{folder}/", "")
    digests = record.get("sha256") if isinstance(record, dict) else None
    if not isinstance(digests, dict) or not digests or record.get("settings") != settings:
        return "graphs.json records no digests for these settings (an older build)"
    for name, digest in digests.items():
        if "/" in str(name) or not str(name).endswith(".onnx"):
            return f"graphs.json names {quote(name)}"
        try:
            if _sha256(folder / name) != digest:
                return f"{name} does not match the sha256 recorded when it was built"
        except SamclError as exc:
            return str(exc).replace(f"{folder}/", "")
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path, "ONNX graph") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _put_in_place(building: Path, folder: Path, settings: dict) -> None:
    """Rename the finished build to `folder`, first moving a bad entry there aside (removed); when another
    process put a good entry there first, keep that one."""
    for _ in range(3):
        try:
            os.rename(building, folder)
            fsync_dir(folder.parent)
            return
        except OSError:
            if _entry_problem(folder, settings) is None:
                return  # another process finished the same build first: use its entry
            aside = Path(tempfile.mkdtemp(prefix=f".build-{os.getpid()}-old-", dir=folder.parent))
            try:
                os.rename(folder, aside / "entry")
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise SamclError(f"graph cache {folder}: cannot replace it ({exc.strerror or exc})") from None
            finally:
                shutil.rmtree(aside, ignore_errors=True)
    raise SamclError(f"graph cache {folder}: another process keeps replacing it; try again")


def _remove_leftovers(graphs: Path) -> None:
    """Remove `.build-PID-*` folders of builders that are gone (killed builds)."""
    for path in graphs.glob(".build-*"):
        pid = path.name.split("-")[1] if path.name.count("-") >= 2 else ""  # .build-PID-random
        try:
            old = time.time() - path.lstat().st_mtime > STALE_BUILD_SECONDS
        except OSError:
            continue
        if old or not pid.isdigit() or not _alive(int(pid)):
            if path.is_symlink() or not path.is_dir():
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def export_store(samcl, out: Path) -> dict:
    """The store's graphs, module rows, selector state and a JSON saying how to run them, as folder `out` (which
    must not exist, or be empty). Returns the JSON written."""
    shown = Path(out)
    out = export_target(shown)
    module_set, backbone = samcl.module_set, samcl.backbone
    config = samcl.aug_config
    refuse_unsupported(backbone, config)
    graphs = cached_graphs(backbone, config, module_set.selector_block)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name[:200]}-", dir=out.parent))
    except OSError as exc:
        raise SamclError(f"{shown}: cannot write the export ({exc.strerror or exc})") from None
    try:
        for name in ("prefix", "suffix", "decoder"):
            shutil.copyfile(graphs / f"{name}.onnx", staging / f"{name}.onnx")
        bank = samcl.engine.bank()
        atomic_write_bytes(staging / "modules.safetensors", tensors_to_bytes(bank.tensors))
        description = describe(samcl, json.loads((graphs / "graphs.json").read_text()), bank)
        if module_set.selector is not None:
            atomic_write_bytes(staging / "selector.safetensors", tensors_to_bytes(module_set.selector.to_tensors()))
        atomic_write_json(staging / EXPORT_JSON, description)
        os.chmod(staging, 0o777 & ~current_umask())
        if out.exists():
            out.rmdir()
        os.rename(staging, out)
    except OSError as exc:  # (disk full, or the folder filled meanwhile): the user's name, not the temporary's
        raise SamclError(f"{shown}: cannot write the export ({exc.strerror or exc}); nothing was left there") \
            from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return description


def export_target(out: Path) -> Path:
    """Where the export of `out` goes, checked before any work: a new or empty folder, through a symlink to one
    (an empty folder's or a dangling link's target: the link stays and names the export); else one SamclError."""
    target = Path(os.path.realpath(out)) if out.is_symlink() else out
    if out.is_symlink() and os.path.lexists(target) and not target.exists():
        raise SamclError(f"{out}: a symlink that loops; give a new folder for the export")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise SamclError(f"{out}: exists and is not an empty folder; give a new folder for the export")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise SamclError(f"{out}: cannot write the export ({parent} is not a writable folder)")
    return target


def describe(samcl, graphs: dict, bank) -> dict:
    """samcl_export.json: what each file holds and how to run them (the README's torch-free script reads it)."""
    module_set, backbone, config = samcl.module_set, samcl.backbone, samcl.aug_config
    from ..backbone.sam import PIXEL_MEAN, PIXEL_STD

    heat = backbone.heat_config
    domains = [{"name": d.name, "kind": d.kind, "row": bank.row(k)} for k, d in enumerate(module_set.domains)]
    selector = None
    if module_set.selector is not None:
        selector = {"file": "selector.safetensors", "kind": module_set.selector_config.kind,
                    "config": module_set.selector_config.to_dict(), "dim": module_set.selector.dim,
                    "classes": module_set.names}  # the domains (key kept: export format 2)
    return {
        "samcl_version": __version__, "format": "samcl-onnx-export", "format_version": GRAPH_FORMAT,
        "base": {"identity": backbone.identity(), "hint": module_set.base_hint},
        "graphs": graphs["graphs"],
        "preprocess": {"image_size": backbone.image_size, "resize": "longest side to image_size, bilinear, sides "
                       "rounded half up; zero padding bottom and right after normalizing", "pixel_mean": PIXEL_MEAN,
                       "pixel_std": PIXEL_STD, "layout": "RGB, B x 3 x S x S float32"},
        "heat": {"grid": list(backbone.grid), "stride": backbone.site.stride, "sigma": heat.sigma,
                 "kernel_size": heat.kernel_size, "rule": "max(positive bumps, box) - max(negative bumps); bump = "
                 "exp(-d^2 / 2 sigma^2) at token centres, |dx|, |dy| <= kernel_size // 2 + 0.5 cells"},
        "modules": {"file": "modules.safetensors", "rows": "row 0 = base (zeros), a domain's row in 'domains'",
                    "inputs": {name: row_input(name) for name in parameter_shapes(config)},
                    "config": config.to_dict()},
        "domains": domains, "selector": selector, "selector_block": module_set.selector_block,
        "fallback": "statistics selectors send an image no domain fits to base (row 0)",
    }
