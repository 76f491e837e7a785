"""The one check of a store's structure, before anything it names is used.

    check_manifest(manifest, store_path)        # names, uniqueness, keys, types, configs: one SamclError if not
    check_tensors(tensors, file)                 # every value finite
    check_site(aug, selector_dim, site, store_path)   # the configs fit the base's adaptation site
    check_recorded_base(manifest, store_path, blocks)  # what `samcl info` can check of the base without loading it

`ModuleStore.load` runs the first two on everything it reads (so `SAMCL.open`, `samcl info`, learn, forget, merge
and the server all refuse the same stores), `ModuleStore.save` runs them on what it is about to commit (so no
path writes a store that open would refuse), and `SAMCL.open` runs the third once the base is loaded.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import torch

from ..errors import SamclError
from ..io import quote
from ..method.augmodule import AugModuleConfig
from ..selector import KINDS, SelectorConfig
from .manifest import MANIFEST
from .moduleset import DomainEntry, name_problem

TOP_REQUIRED = ("format", "format_version", "backbone", "selector", "domains")
TOP_OPTIONAL = ("samcl_version", "generation", "base_hint", "base_source", "dtype", "augmodule", "buffer")
BACKBONE_KEYS = ("family", "architecture", "config_sha256", "weights_sha256")
SELECTOR_KEYS = ("kind", "config", "block", "file", "sha256", "bytes", "dim", "classes")
BUFFER_KEYS = ("file", "sha256", "bytes", "count")
ENTRY_KEYS = tuple(DomainEntry.__dataclass_fields__)
DTYPES = ("float32", "float16")
_AUG_INTS = ("dim", "rank", "neck_channels", "neck_dim")
_AUG_BOOLS = ("shared_down", "prompt_augmentation")

def _is_int(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


class _Checker:
    def __init__(self, store: Path):
        self.where = Path(store) / MANIFEST

    def fail(self, problem: str):
        raise SamclError(f"{self.where}: malformed manifest ({problem})")

    def keys(self, raw, what: str, allowed, required=()) -> dict:
        if not isinstance(raw, dict):
            self.fail(f"{what} is {type(raw).__name__}, not an object")
        missing = [k for k in required if k not in raw]
        if missing:
            self.fail(f"{what} lacks {missing[0]!r}")
        extra = sorted((k for k in raw if k not in allowed), key=str)
        if extra:
            self.fail(f"{what} has an unexpected key {quote(extra[0])}")
        return raw

    def file_entry(self, raw: dict, what: str) -> None:
        if not isinstance(raw.get("file"), str) or not isinstance(raw.get("sha256"), str):
            self.fail(f"{what} lacks its file name or sha256")
        if "bytes" in raw and not _is_int(raw["bytes"]):
            self.fail(f"{what}'s bytes is {quote(raw['bytes'])}, not a count")


def check_manifest(manifest, store: Path) -> None:
    """Every key and type of a manifest (see the module docstring); one SamclError naming the first problem."""
    check = _Checker(store)
    check.keys(manifest, "the manifest", (*TOP_REQUIRED, *TOP_OPTIONAL), TOP_REQUIRED)
    backbone = check.keys(manifest["backbone"], "backbone", BACKBONE_KEYS, BACKBONE_KEYS)
    if not all(isinstance(backbone[k], str) for k in BACKBONE_KEYS):
        check.fail("backbone's identity fields must be strings")
    if not _is_int(manifest["format_version"], 1):
        check.fail(f"format_version {quote(manifest['format_version'])} is not a version number")
    if not _is_int(manifest.get("generation", 0)):
        check.fail(f"generation {quote(manifest.get('generation'))} is not a count")
    if manifest.get("dtype", "float32") not in DTYPES:
        check.fail(f"dtype {quote(manifest.get('dtype'))}: expected {' or '.join(DTYPES)}")
    if not isinstance(manifest.get("base_hint"), (str, type(None))) or \
            not isinstance(manifest.get("base_source"), (dict, type(None))):
        check.fail("base_hint must be a string and base_source an object")
    aug = None if manifest.get("augmodule") is None else _aug_config(check, manifest["augmodule"], "augmodule")
    names = _check_domains(check, manifest["domains"], aug)
    _check_selector(check, manifest["selector"], names, aug)
    buffer = manifest.get("buffer") or {}
    check.keys(buffer, "buffer", BUFFER_KEYS)
    if buffer:
        check.file_entry(buffer, "buffer")
        if not _is_int(buffer.get("count")):
            check.fail(f"buffer count {quote(buffer.get('count'))} is not a count")


def _aug_config(check: _Checker, raw, what: str) -> AugModuleConfig:
    check.keys(raw, what, AugModuleConfig.__dataclass_fields__, ("dim", "adapted_blocks", "neck_channels"))
    wrong = [k for k in _AUG_INTS if k in raw and not _is_int(raw[k])]
    wrong += [k for k in _AUG_BOOLS if k in raw and not isinstance(raw[k], bool)]
    blocks = raw["adapted_blocks"]
    if not isinstance(blocks, list) or not all(_is_int(b) for b in blocks) or len(set(blocks)) != len(blocks):
        wrong.append("adapted_blocks")
    if wrong:
        check.fail(f"{what} {wrong[0]} is {quote(raw[wrong[0]])}")
    try:
        return AugModuleConfig.from_dict(raw)
    except (TypeError, ValueError) as exc:
        check.fail(f"{what}: {quote(str(exc))}")


def _check_domains(check: _Checker, domains, aug: AugModuleConfig | None) -> list[str]:
    if not isinstance(domains, list):
        check.fail(f"domains is {type(domains).__name__}, not a list")
    names, files = [], set()
    for index, raw in enumerate(domains):
        entry = check.keys(raw, f"domain entry {index}", ENTRY_KEYS, ("name", "kind"))
        name = entry["name"]
        problem = name_problem(name)
        if problem:
            check.fail(problem)
        if name in names:
            check.fail(f"domain {name!r} is listed twice")
        names.append(name)
        if entry["kind"] == "no_module":
            if entry.get("file") is not None:
                check.fail(f"domain {name!r} has no module but names a file")
            continue
        if entry["kind"] != "module":
            check.fail(f"domain {name!r} has kind {quote(entry['kind'])}: expected 'module' or 'no_module'")
        check.file_entry(entry, f"domain {name!r}")
        if entry["file"] in files:
            check.fail(f"domain {name!r} names the file of an earlier domain")
        files.add(entry["file"])
        config = _aug_config(check, entry.get("config"), f"domain {name!r}'s config")
        if aug is not None and config != aug:
            diff = next(k for k in AugModuleConfig.__dataclass_fields__ if getattr(config, k) != getattr(aug, k))
            check.fail(f"domain {name!r}'s module has {diff} {quote(getattr(config, diff))}, the store's modules "
                       f"{quote(getattr(aug, diff))}")
        if not _is_int(entry.get("parameters", 0)) or not isinstance(entry.get("info", {}), dict):
            check.fail(f"domain {name!r}'s parameters or info has the wrong type")
    if sum(1 for d in domains if d["kind"] == "no_module") > 1:
        check.fail("more than one domain without a module")
    return names


def _check_selector(check: _Checker, raw, names: list[str], aug: AugModuleConfig | None) -> None:
    selector = check.keys(raw, "selector", SELECTOR_KEYS, ("kind", "config", "block"))
    if not isinstance(selector["config"], dict):
        check.fail("the selector's config is not an object")
    kind = selector["kind"]
    if kind not in KINDS:
        check.fail(f"selector kind {quote(kind)}: expected one of {', '.join(KINDS)}")
    try:
        config = SelectorConfig.from_manifest(selector["config"])
    except (TypeError, ValueError) as exc:
        check.fail(f"selector config: {quote(str(exc))}")
    if config.kind != kind:
        check.fail(f"selector kind {kind!r} but its config says {config.kind!r}")
    block = selector["block"]
    if not _is_int(block) or (aug is not None and block >= min(aug.adapted_blocks)):
        check.fail(f"selector block {quote(block)} is not a block before the first adapted one")
    if "file" in selector or names:
        check.file_entry(selector, "selector")
        if not _is_int(selector.get("dim"), 1):
            check.fail(f"selector dim {quote(selector.get('dim'))} is not a width")
        if aug is not None and selector["dim"] != aug.dim:
            check.fail(f"selector dim {selector['dim']} but the modules are {aug.dim} wide")
        if selector.get("classes", names) != names:
            check.fail("the selector's classes (its domains' names) are not the domains, in order")


def check_tensors(tensors: dict[str, torch.Tensor], source) -> None:
    """Every value of every floating-point tensor is finite (NaN or inf weights would give empty masks)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise SamclError(f"{source}: tensor {quote(name)} holds NaN or infinite values")


def check_site(aug: AugModuleConfig | None, selector_dim, site, store: Path) -> None:
    """A store's AugModule config and selector width fit the base's adaptation site (`backbone.site`)."""
    if aug is None:
        return
    where = Path(store) / MANIFEST
    if aug.dim != site.dim or (selector_dim is not None and selector_dim != site.dim):
        raise SamclError(f"{where}: its modules are {aug.dim} wide, the base's blocks {site.dim}")
    outside = [b for b in aug.adapted_blocks if b not in site.blocks]
    if outside:
        raise SamclError(f"{where}: adapts blocks {outside}, which the base cannot adapt "
                         f"({site.blocks[0]}..{site.blocks[-1]})")
    if aug.neck_channels and aug.neck_channels != site.neck_channels:
        raise SamclError(f"{where}: its modules inject {aug.neck_channels} neck channels, the base has "
                         f"{site.neck_channels}")


def check_recorded_base(manifest: dict, store: Path, blocks: tuple[int, ...] | None) -> list[str]:
    """What can be checked of a store against its recorded base without loading it (`samcl info`): the base hint
    is not a device, FIFO or socket (a stat, never an open), and, where the base's blocks are known from its
    config (`blocks`, the adaptable ones; None: not known), the adapted blocks lie among them. Returns what was
    left unchecked, for the user to read; one SamclError for a problem."""
    where = Path(store) / MANIFEST
    hint = manifest.get("base_hint")
    if isinstance(hint, str) and not hint.startswith("builtin:"):
        try:
            mode = os.stat(hint).st_mode
        except (OSError, ValueError):
            mode = None
        if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            kind = next(name for test, name in ((stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "character device"),
                                                (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"),
                                                (lambda _: True, "special file")) if test(mode))
            raise SamclError(f"{where}: base_hint {quote(hint)} is a {kind}, not a model folder or checkpoint "
                             "file; give the model as base", field="base")
    unchecked = ["the base's weights against the recorded sha256 (checked when a command loads the base)"]
    aug = manifest.get("augmodule")
    if aug and blocks is not None:
        outside = [b for b in aug["adapted_blocks"] if b not in blocks]
        if outside:
            raise SamclError(f"{where}: adapts blocks {outside}, which the base cannot adapt "
                             f"({blocks[0]}..{blocks[-1]}, from its config)")
    elif aug:
        unchecked.append("the adapted blocks against the base's (its config is not a folder samcl can read "
                         "without loading the base)")
    return unchecked
